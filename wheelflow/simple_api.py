"""Read an index the way pip does: the Simple API, PEP 691 JSON when offered, PEP 503 HTML otherwise."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx
from packaging.utils import canonicalize_name

from .errors import IndexReadError
from .spec import redact_url

JSON_V1 = "application/vnd.pypi.simple.v1+json"
#: How long a read of an index may take: slower answers count as no answer (retried by the caller).
READ_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# pip's own preference order (PEP 691): JSON, then the versioned HTML, then legacy HTML.
ACCEPT = f"{JSON_V1}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


@dataclass(frozen=True)
class ServedFile:
    filename: str
    url: str
    sha256: str | None
    upload_time: str | None = None  # PEP 700, where the index provides it
    yanked: bool = False


def project_url(simple_url: str, name: str) -> str:
    """The project page: ``{simple_url}/{normalised name}/`` (PEP 503)."""
    return simple_url.rstrip("/") + "/" + canonicalize_name(name) + "/"


def parse_json_page(payload: dict[str, Any], page_url: str) -> list[ServedFile]:
    files = []
    for entry in payload.get("files", []):
        hashes = entry.get("hashes") or {}
        files.append(
            ServedFile(
                filename=entry["filename"],
                url=urljoin(page_url, entry["url"]),
                sha256=hashes.get("sha256"),
                upload_time=entry.get("upload-time"),
                yanked=bool(entry.get("yanked", False)),
            )
        )
    return files


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def parse_html_page(text: str, page_url: str) -> list[ServedFile]:
    parser = _AnchorParser()
    parser.feed(text)
    files = []
    for attrs, label in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url = urljoin(page_url, href)
        parts = urlsplit(url)
        filename = unquote(parts.path.rsplit("/", 1)[-1]) or label
        sha256 = None
        if parts.fragment.startswith("sha256="):
            sha256 = parts.fragment[len("sha256="):]
        files.append(
            ServedFile(
                filename=filename,
                url=urlunsplit(parts._replace(fragment="")),
                sha256=sha256,
                yanked="data-yanked" in attrs,
            )
        )
    return files


def list_project_files(client: httpx.Client, simple_url: str, name: str) -> list[ServedFile]:
    """Every file the index lists for ``name``; an unknown project lists nothing.

    Raises IndexReadError (transient) when the index does not answer or answers 5xx.
    """
    url = project_url(simple_url, name)
    try:
        response = client.get(url, headers={"Accept": ACCEPT}, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise IndexReadError(f"cannot read {redact_url(url)}: {type(exc).__name__}; fix: check that the index is up") from None
    if response.status_code == 404:
        return []
    if response.status_code >= 400:
        raise IndexReadError(f"{redact_url(url)} answered HTTP {response.status_code}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    if content_type == JSON_V1:
        return parse_json_page(response.json(), str(response.url))
    return parse_html_page(response.text, str(response.url))


def files_for_version(files: list[ServedFile], name: str, version: str) -> list[ServedFile]:
    """The listed files of this project and version; a version without a local label also selects
    its variant wheels (1.0 selects 1.0+cu130), as ``pip install name==1.0`` would."""
    from packaging.version import Version

    from .distributions import parse_filename  # local import: distributions imports this module's types

    wanted_name, wanted = canonicalize_name(name), Version(version)
    selected = []
    for served in files:
        parsed = parse_filename(served.filename)
        if parsed is None or parsed[0] != wanted_name:
            continue
        if parsed[1] == wanted or (not wanted.local and parsed[1].public == wanted.public):
            selected.append(served)
    return selected


def download_sha256(client: httpx.Client, url: str) -> str:
    """sha256 of the bytes the index serves at ``url`` (for listings that carry no hash)."""
    digest = hashlib.sha256()
    try:
        with client.stream("GET", url, follow_redirects=True) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                digest.update(chunk)
    except httpx.HTTPError as exc:
        raise IndexReadError(f"cannot download {redact_url(url)}: {type(exc).__name__}") from None
    return digest.hexdigest()
