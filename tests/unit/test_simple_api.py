"""Reading an index as pip does: PEP 691 JSON when offered, PEP 503 HTML otherwise."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from wheelflow.index.simple_api import JSON_V1, list_project_files, parse_html_page, project_url

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
    assert served.yanked


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
