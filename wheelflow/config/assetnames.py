"""The names and URLs users' installers guess for a wheel published as a GitHub release asset.

The flash-attention family's ``setup.py`` does not ask an index: it computes one asset URL from the
user's torch, CUDA, Python and C++ ABI, and builds from source (an hour or more) when that URL
answers 404. Two templates describe that guess, rendered over one matrix cell's values:

``asset-url``
    where an asset is downloaded, e.g. ``https://github.com/{repository}/releases/download/v{version}/{wheel}``
``guessed-name``
    the file name the project's ``setup.py`` computes, e.g. flash-attention's
    ``{name}-{version}+cu{cuda_major}torch{torch_minor}cxx11abi{cxx11abi}-{py}-{py}-linux_x86_64.whl``

Placeholders (each a plain ``{name}``; anything else is refused when the spec is read):

- ``{repository}`` ``OWNER/REPO``; ``{version}`` the release version; ``{name}`` the project's name as
  wheel file names spell it (``flash_attn``); ``{wheel}`` the file name (the asset's name);
- every matrix axis as ``{axis}`` and ``{axis_nodot}``, as in the matrix's own templates;
- from the ``python`` axis: ``{py}`` (``cp311``); from ``cuda``: ``{cuda_major}``, ``{cuda_minor}``;
  from ``torch``: ``{torch_minor}`` (``2.6`` of ``2.6.0``); ``{cxx11abi}``: ``TRUE``/``FALSE`` from a
  ``cxx11abi`` axis (torch wheels were built with either ABI: which one a cell targets is the spec's to say).

No Prefect, no HTTP: the publisher renders, the index layer proves what the URL serves.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

from packaging.utils import canonicalize_name

from wheelflow.config.bounds import TemplateRefused, quoted, template_fields
from wheelflow.core.errors import SpecError

ASSET_URL_KEY = "asset-url"
#: GitHub's REST API (GitHub Enterprise: https://HOST/api/v3).
DEFAULT_API_URL = "https://api.github.com"
#: The find-links page's asset name when the spec says only find-links-page = true.
FIND_LINKS_PAGE = "index.html"
GUESSED_NAME_KEY = "guessed-name"
#: Where github.com serves a release's assets (GitHub Enterprise: https://HOST/OWNER/REPO/releases/download/...).
DEFAULT_ASSET_URL = "https://github.com/{repository}/releases/download/v{version}/{wheel}"
#: The name flash-attention's setup.py guesses (ExLlamaV2, causal-conv1d, mamba use the same shape).
FLASH_ATTENTION_GUESSED_NAME = (
    "{name}-{version}+cu{cuda_major}torch{torch_minor}cxx11abi{cxx11abi}-{py}-{py}-linux_x86_64.whl"
)

#: Placeholders every render knows, whatever the matrix.
RELEASE_PLACEHOLDERS = ("repository", "version", "name", "wheel")
#: Placeholder -> the axis it is derived from.
DERIVED_PLACEHOLDERS = {
    "py": "python",
    "cuda_major": "cuda",
    "cuda_minor": "cuda",
    "torch_minor": "torch",
    "cxx11abi": "cxx11abi",
}
#: GitHub's own rules: an owner is 1-39 letters, digits or inner hyphens; a repository 1-100 letters, digits, ., - or _.
_REPOSITORY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?/[A-Za-z0-9._-]{1,100}")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def known_placeholders(axes: Iterable[str]) -> list[str]:
    """Every placeholder a template may name for a matrix with these axes."""
    axes = list(axes)
    derived = [name for name, axis in DERIVED_PLACEHOLDERS.items() if axis in axes and name != axis]
    return [*RELEASE_PLACEHOLDERS, *axes, *(f"{a}_nodot" for a in axes), *derived]


def check_template(template: str, key: str, axes: Iterable[str]) -> list[str]:
    """The placeholders ``template`` names, each checked against the matrix's ``axes``: an unknown one
    (a typo, or a derived one whose axis the matrix lacks) is a SpecError naming ``key`` and the fix."""
    known = known_placeholders(axes)
    try:
        names = template_fields(template)
    except TemplateRefused as exc:
        raise SpecError(key, str(exc), "use plain {placeholder} fields, e.g. {version} or {cuda_major}") from None
    for name in names:
        if name in known:
            continue
        axis = DERIVED_PLACEHOLDERS.get(name)
        if axis is not None:
            raise SpecError(
                key,
                f"template {quoted(template)} names {{{name}}}, which comes from the {axis!r} axis, and the matrix has none",
                f"add a {axis} axis to [tool.wheelflow.matrix] axes, or write the value into the template",
            )
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {{{close[0]}}}? " if close else ""
        raise SpecError(
            key,
            f"template {quoted(template)} names unknown placeholder {{{name}}}",
            f"{hint}known placeholders: {', '.join('{' + k + '}' for k in known)}",
        )
    return names


def check_repository(value: object, key: str) -> str:
    """``value`` if it is a GitHub ``OWNER/REPO``, else a SpecError naming ``key`` (it goes into API
    paths and the asset URL: ``..`` or a third segment would name another resource)."""
    text = value if isinstance(value, str) else ""
    if not _REPOSITORY.fullmatch(text) or text.split("/")[1] in (".", ".."):
        raise SpecError(
            key,
            f"{quoted(str(value))} is not a GitHub OWNER/REPO",
            'write e.g. repository = "Dao-AILab/flash-attention"',
        )
    return text


def wheel_name(project: str) -> str:
    """A project's name as wheel file names spell it: ``flash-attn`` -> ``flash_attn``."""
    return canonicalize_name(project).replace("-", "_")


def _cxx11abi(value: str, key: str) -> str:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return "TRUE"
    if lowered in _FALSE:
        return "FALSE"
    raise SpecError(
        f"{key} (axis cxx11abi)",
        f"value {quoted(value)} is neither true nor false",
        'give the cxx11abi axis values such as ["TRUE", "FALSE"]',
    )


def placeholder_values(
    cell_values: Mapping[str, str], *, repository: str, version: str, project: str, wheel: str = "", key: str = ""
) -> dict[str, str]:
    """Every placeholder's value for one cell (see the module docstring)."""
    scope = {"repository": repository, "version": version, "name": wheel_name(project), "wheel": wheel}
    scope |= dict(cell_values) | {f"{a}_nodot": v.replace(".", "") for a, v in cell_values.items()}
    if (python := cell_values.get("python")) is not None:
        scope["py"] = "cp" + "".join(python.split(".")[:2])
    if (cuda := cell_values.get("cuda")) is not None:
        parts = cuda.split(".")
        scope["cuda_major"], scope["cuda_minor"] = parts[0], (parts[1] if len(parts) > 1 else "0")
    if (torch := cell_values.get("torch")) is not None:
        scope["torch_minor"] = ".".join(torch.split(".")[:2])
    if (abi := cell_values.get("cxx11abi")) is not None:
        scope["cxx11abi"] = _cxx11abi(abi, key or "cxx11abi")
    return scope


def render(
    template: str,
    key: str,
    cell_values: Mapping[str, str],
    *,
    repository: str,
    version: str,
    project: str,
    wheel: str = "",
) -> str:
    """``template`` rendered for one cell; checked first, so a bad template fails as bad input (exit 2)."""
    check_template(template, key, cell_values)
    scope = placeholder_values(
        cell_values, repository=repository, version=version, project=project, wheel=wheel, key=key
    )
    return template.format_map(scope)


def guessed_url(
    asset_url: str,
    guessed_name: str,
    cell_values: Mapping[str, str],
    *,
    repository: str,
    version: str,
    project: str,
) -> str:
    """The URL a user's ``setup.py`` downloads for this cell: ``asset-url`` with ``{wheel}`` the guessed name."""
    common = {"repository": repository, "version": version, "project": project}
    name = render(guessed_name, GUESSED_NAME_KEY, cell_values, **common)
    return render(asset_url, ASSET_URL_KEY, cell_values, wheel=name, **common)
