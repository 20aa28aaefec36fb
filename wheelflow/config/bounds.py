"""Limits on what the spec and the command line may hold, checked when they are read.

A template's field is a plain name, replaced by its value and nothing else: a format spec or a
conversion (``{arch:>50000000}``, ``{arch!r}``) would let one line of spec render a 100 MB string,
or a MemoryError. Commands and environment values are bounded well below what the kernel takes
as one argument or variable (``MAX_ARG_STRLEN``, 128 KiB): refused when the spec is read, never
as ``Argument list too long`` after an upload.
"""

from __future__ import annotations

import os
import string

from wheelflow.core.errors import SpecError

#: The longest command the spec may give (a smoke command, an install command), in bytes.
MAX_COMMAND = 32 * 1024
#: The longest value of one environment variable the spec may set (as written or rendered), in bytes.
MAX_ENV_VALUE = 32 * 1024
#: How much of an over-long or refused value an error line quotes.
QUOTED = 60


def quoted(value: str, limit: int = QUOTED) -> str:
    """``value`` as an error line quotes it: whole when short, else its start and its length."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def too_long(value: str, limit: int) -> str | None:
    """Why ``value`` is over ``limit`` bytes (UTF-8), or None when it fits."""
    size = len(value.encode("utf-8", errors="surrogatepass"))
    if size <= limit:
        return None
    return f"{quoted(value)} is {size:,} bytes, over the limit of {limit:,}"


class TemplateRefused(ValueError):
    """A template that is not text with plain ``{name}`` fields; ``str()`` says why, briefly."""


def template_fields(template: str) -> list[str]:
    """The fields ``template`` names, in order; each must be a plain name (``{arch}``). A format spec,
    a conversion, an attribute or index (``{arch.x}``, ``{arch[0]}``) or a positional field is
    refused with :class:`TemplateRefused`, naming the field; so is a stray brace."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateRefused(f"{quoted(template)} is not a template ({exc})") from None
    names: list[str] = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if conversion or spec:
            what = "a conversion" if conversion else "a format spec"
            raise TemplateRefused(f"{quoted(template)}: field {quoted(field)} has {what}; fields are plain names")
        if not name.isidentifier():
            raise TemplateRefused(f"{quoted(template)}: field {quoted(field)} is not a plain name")
        names.append(name)
    return names


#: The longest file name (one path component) and path Linux takes, in bytes (NAME_MAX, PATH_MAX).
MAX_NAME = 255
MAX_PATH = 4096
#: The longest URL read or given (an index, a repository); httpx itself stops at 64 KiB with a traceback.
MAX_URL = 8192
#: The longest NAME==VERSION pin (the name goes into an index's URL).
MAX_PIN = 512
#: How deep tables and lists may nest in a spec (the real ones nest 4 deep).
MAX_NESTING = 32


def path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot name a file on Linux (a component over 255 bytes, or over 4,096 in all),
    or None: refused up front in one line instead of ``OSError: File name too long`` from deep inside."""
    text = os.fsencode(path)
    if len(text) > MAX_PATH:
        return f"the path {quoted(os.fsdecode(text))} is {len(text):,} bytes, over the limit of {MAX_PATH:,}"
    longest = max(text.split(b"/"), key=len)
    if len(longest) > MAX_NAME:
        return (
            f"{quoted(os.fsdecode(longest))} in the path is a name of {len(longest):,} bytes, "
            f"over the limit of {MAX_NAME} for one file name"
        )
    return None


def check_path(path: str | os.PathLike[str], key: str) -> None:
    """Refuse a path no file can have, naming ``key`` (the option or spec key that gave it)."""
    if problem := path_problem(path):
        raise SpecError(key, problem, "give an existing path")


def url_problem(url: str) -> str | None:
    """Why ``url`` (or an index name) is too long to be one, or None: over :data:`MAX_URL` characters."""
    if len(url) <= MAX_URL:
        return None
    return f"{quoted(url)} is over the limit of {MAX_URL:,} characters"


def check_url(url: str, key: str) -> None:
    """Refuse a URL (or an index name) over :data:`MAX_URL` characters, naming ``key``."""
    if problem := url_problem(url):
        raise SpecError(key, problem, "give the URL itself, without data appended")


def nesting_problem(value: object) -> str | None:
    """Why ``value`` (a parsed TOML table) nests too deep for the spec, or None. Iterative: a deep
    value must not exhaust the stack that is checking it."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            return f"tables and lists nest more than {MAX_NESTING} deep"
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None
