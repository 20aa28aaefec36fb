"""Limits on what the spec and the command line may hold, checked when they are read.

A template's field is a plain name, replaced by its value and nothing else: a format spec or a
conversion (``{arch:>50000000}``, ``{arch!r}``) would let one line of spec render a 100 MB string,
or a MemoryError. Commands and environment values are bounded well below what the kernel takes
as one argument or variable (``MAX_ARG_STRLEN``, 128 KiB): refused when the spec is read, never
as ``Argument list too long`` after an upload.
"""

from __future__ import annotations

import string

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
