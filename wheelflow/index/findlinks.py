"""A flat page of links in the form pip and uv read with ``--find-links URL``.

Users of projects that publish wheels as GitHub release assets install with
``pip install NAME --find-links PAGE_URL``: the installer reads every ``<a href>`` on the page,
takes the file name from the link's path and checks the download against its ``#sha256=`` fragment.
The page is written with the static index's own page writer (:func:`render_page`), so its escaping
and shape are the ones already proven with pip.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from wheelflow.config.assetnames import FIND_LINKS_PAGE
from wheelflow.core.errors import StaticIndexError
from wheelflow.core.redaction import redact_url
from wheelflow.index.staticindex import render_page

#: The conventional name of the page when it is published as an asset beside the wheels.
PAGE_NAME = FIND_LINKS_PAGE
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Link:
    """One file on the page: its name, where it downloads, and its sha256 (hex)."""

    filename: str
    url: str
    sha256: str


def find_links_page(title: str, links: Iterable[Link]) -> bytes:
    """The page: one ``<a href="URL#sha256=HEX">FILENAME</a>`` per file, sorted by name.

    pip takes a file's name from the last segment of the link's path, not from the link text: a URL
    whose last segment is not the file's name would install under another name, so it is refused,
    as are non-http(s) URLs, digests that are not sha256 hex, and one name listed with two digests.
    """
    anchors: dict[str, dict[str, str]] = {}
    for link in links:
        parts = urlsplit(link.url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise StaticIndexError(
                f"find-links page {title!r}: {link.filename}: {redact_url(link.url)!r} is not a plain http(s) URL; "
                "fix: link the asset's download URL (browser_download_url)"
            )
        if unquote(parts.path.rsplit("/", 1)[-1]) != link.filename:
            raise StaticIndexError(
                f"find-links page {title!r}: {redact_url(link.url)} does not end in {link.filename}, and pip names "
                "a file after its URL; fix: link each file at a URL that ends in its own name"
            )
        sha256 = link.sha256.lower()
        if not _SHA256.fullmatch(sha256):
            raise StaticIndexError(
                f"find-links page {title!r}: {link.filename}: sha256 {link.sha256[:80]!r} is not 64 hex digits; "
                "fix: give the sha256 of the file's bytes"
            )
        seen = anchors.get(link.filename)
        if seen is not None and not seen["href"].endswith(sha256):
            raise StaticIndexError(
                f"find-links page {title!r} would list {link.filename} twice with different sha256; "
                "fix: publish each file name once"
            )
        anchors[link.filename] = {"href": f"{link.url}#sha256={sha256}", "": link.filename}
    return render_page(title, anchors.values())
