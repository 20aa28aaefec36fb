"""The flat --find-links page: what pip and uv read when users install from GitHub release assets."""

from __future__ import annotations

import hashlib

import pytest

from wheelflow.core.errors import StaticIndexError
from wheelflow.index.findlinks import Link, find_links_page
from wheelflow.index.simple_api import parse_html_page

BASE = "https://github.com/octo/flash/releases/download/v2.8.3/"
NAME = "flash_attn-2.8.3+cu12torch2.7cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"


def test_the_page_links_every_asset_with_its_sha256_and_reads_back_as_pip_reads_it() -> None:
    digest = hashlib.sha256(b"wheel").hexdigest()
    other = "flash_attn-2.8.3+cu12torch2.6cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"
    page = find_links_page(
        "flash-attn 2.8.3",
        [Link(NAME, BASE + NAME.replace("+", "%2B"), digest.upper()), Link(other, BASE + other, "a" * 64)],
    )
    assert f'<a href="{BASE}{NAME.replace("+", "%2B")}#sha256={digest}">{NAME}</a>' in page.decode()
    served = parse_html_page(page.decode(), BASE + "index.html")
    assert [(s.filename, s.sha256) for s in served] == [(other, "a" * 64), (NAME, digest)]  # sorted by name


@pytest.mark.case(
    "bad input",
    "a find-links page link whose URL does not end in the file's name",
    "refused: pip names a file after its URL; one line with the fix",
)
def test_a_link_whose_url_names_another_file_is_refused() -> None:
    with pytest.raises(StaticIndexError) as refused:
        find_links_page("p", [Link(NAME, BASE + "renamed.whl", "a" * 64)])
    message = str(refused.value)
    assert "does not end in" in message and "; fix: link each file at a URL that ends in its own name" in message


@pytest.mark.case(
    "bad input",
    "a find-links page entry with a digest that is not sha256 hex, or a non-http URL",
    "refused with one line naming the file and the fix",
)
def test_a_bad_digest_or_url_is_refused() -> None:
    with pytest.raises(StaticIndexError, match="is not 64 hex digits; fix: give the sha256"):
        find_links_page("p", [Link(NAME, BASE + NAME, "md5:abc")])
    with pytest.raises(StaticIndexError, match="is not a plain http"):
        find_links_page("p", [Link(NAME, "file:///etc/" + NAME, "a" * 64)])
    with pytest.raises(StaticIndexError, match="twice with different sha256"):
        find_links_page("p", [Link(NAME, BASE + NAME, "a" * 64), Link(NAME, BASE + NAME, "b" * 64)])
