"""Reading an index as pip does: PEP 691 JSON when offered, PEP 503 HTML otherwise."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from wheelflow.core.errors import DeadlineExceeded, MalformedListingError
from wheelflow.index.simple_api import (
    JSON_V1,
    ServedFile,
    files_for_version,
    list_project_files,
    parse_html_page,
    parse_listing,
    project_url,
)

WHEEL = "hello_cuda-0.1.0-cp311-cp311-linux_x86_64.whl"
SHA = "f00d" * 16  # listings are validated: a sha256 is 64 hex digits


def test_project_names_are_normalised_per_pep503() -> None:
    assert project_url("http://i/simple/", "Hello_CUDA") == "http://i/simple/hello-cuda/"
    assert project_url("http://i/simple", "zope.interface") == "http://i/simple/zope-interface/"


def test_html_links_resolve_relative_to_the_page_and_carry_sha256() -> None:
    html = f'<html><body><a href="../../packages/{WHEEL}#sha256={SHA}" data-yanked="">{WHEEL}</a></body></html>'
    (served,) = parse_html_page(html, "http://127.0.0.1:9/simple/hello-cuda/")
    assert served.filename == WHEEL
    assert served.url == f"http://127.0.0.1:9/packages/{WHEEL}"
    assert served.sha256 == SHA
    assert served.yanked and served.yanked_reason == ""
    (reasoned,) = parse_html_page(html.replace('data-yanked=""', 'data-yanked="wrong  ABI"'), "http://h/simple/x/")
    assert reasoned.yanked_reason == "wrong ABI"


class _NegotiatingIndex(BaseHTTPRequestHandler):
    """Offers PEP 691 JSON only to clients that ask for it, like the public index."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if JSON_V1 in self.headers.get("accept", ""):
            body = json.dumps(
                {
                    "meta": {"api-version": "1.1"},
                    "name": "hello-cuda",
                    "files": [
                        {
                            "filename": WHEEL,
                            "url": f"/files/{WHEEL}",
                            "hashes": {"sha256": SHA},
                            "upload-time": "2026-01-02T03:04:05.000000Z",
                        }
                    ],
                }
            ).encode()
            ctype = JSON_V1
        else:
            body = f'<a href="/files/{WHEEL}#sha256={SHA}">{WHEEL}</a>'.encode()
            ctype = "text/html"
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_json_is_used_when_the_index_offers_it() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NegotiatingIndex)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with httpx.Client() as client:
            (served,) = list_project_files(client, f"http://127.0.0.1:{server.server_address[1]}/simple/", "Hello_Cuda")
    finally:
        server.shutdown()
    # upload-time exists only in the JSON form: this proves JSON was negotiated and parsed.
    assert served.upload_time == "2026-01-02T03:04:05.000000Z"
    assert served.sha256 == SHA


def test_unknown_project_lists_nothing(index) -> None:
    with httpx.Client() as client:
        assert list_project_files(client, index.simple_url, "no-such-project") == []


# -- the deadline holds through parsing and filtering (issue 27, item 4) ------------------------------

LISTING_URL = "http://127.0.0.1:9/simple/big/"


def _ticking_deadline(seconds: float):
    """A deadline on a clock that advances one second each time it is read: the work between two
    looks at the deadline is what ends it, with no real time spent."""
    from wheelflow.core.deadline import Deadline

    now = [0.0]

    def clock() -> float:
        now[0] += 1
        return now[0]

    return Deadline.after(seconds, clock=clock)


def _big_listing(form: str, entries: int = 200_000) -> tuple[bytes, str]:
    names = [f"big-1.0.{i}.tar.gz" for i in range(entries)]
    if form == "json":
        files = [{"filename": n, "url": f"/f/{n}", "hashes": {}} for n in names]
        return json.dumps({"meta": {"api-version": "1.1"}, "name": "big", "files": files}).encode(), JSON_V1
    return "".join(f'<a href="/f/{n}">{n}</a>\n' for n in names).encode(), "text/html"


@pytest.mark.case(
    "fault",
    "the index answers a 200,000-entry listing (JSON or HTML) near the deadline",
    "parsing and filtering look at the deadline: DeadlineExceeded naming the listing URL",
)
@pytest.mark.parametrize("form", ["json", "html"])
def test_parsing_a_huge_listing_stops_at_the_deadline(form: str) -> None:
    body, content_type = _big_listing(form)
    with pytest.raises(DeadlineExceeded) as err:
        parse_listing(body, content_type, LISTING_URL, _ticking_deadline(20))
    assert str(err.value).startswith(f"cannot read {LISTING_URL}: no complete answer after ")


def test_filtering_a_huge_listing_stops_at_the_deadline() -> None:
    served = [ServedFile(f"big-1.0.{i}.tar.gz", f"http://127.0.0.1:9/f/{i}", None) for i in range(200_000)]
    with pytest.raises(DeadlineExceeded, match=f"^cannot read {LISTING_URL}: "):
        files_for_version(served, "big", "1.0.5", _ticking_deadline(20), LISTING_URL)
    assert [f.filename for f in files_for_version(served[:10], "big", "1.0.5")] == ["big-1.0.5.tar.gz"]


def test_a_deeply_nested_listing_is_malformed_not_a_recursion_error() -> None:
    body = b'{"files": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(MalformedListingError, match=f"^{LISTING_URL} is not a valid PEP 691 JSON listing: nested"):
        parse_listing(body, JSON_V1, LISTING_URL)
