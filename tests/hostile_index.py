"""A Simple API on loopback whose every answer a test scripts: listings, file bytes, and faults.

Real sockets, real HTTP (http.server): what wheelflow reads is exactly what a hostile or broken
index would send. A path can be answered normally, dripped one byte every few seconds (body or
headers), or declared and streamed larger than any listing should be.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

JSON_V1 = "application/vnd.pypi.simple.v1+json"
DRIP_EVERY = 2.0  # seconds between two dripped bytes: well under the 30 s a socket read may wait


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class HostileIndex:
    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, bytes]] = {}  # path → (content type, body)
        self.files: dict[str, bytes] = {}  # path → bytes served
        self.drip_body: set[str] = set()
        self.drip_headers: set[str] = set()
        self.endless: set[str] = set()  # answered with no content-length and more bytes than any listing may have
        self.declared_size: dict[str, int] = {}  # path → a content-length far beyond the body
        self.redirects: dict[str, str] = {}  # path → the Location it is redirected to (302)
        self.gets: list[str] = []
        self.on_file_get: Any = None  # called in the handler's thread before a file is answered
        self._stop = threading.Event()
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                index.gets.append(self.path)
                try:
                    index._answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on us: that is what the faults are for

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def simple_url(self) -> str:
        return self.url + "simple/"

    def serve_file(
        self, filename: str, data: bytes, *, listed_sha256: str | None = None, path: str | None = None
    ) -> dict[str, Any]:
        """Serve ``data`` and return its PEP 691 entry, listing ``listed_sha256`` (default: the true one)."""
        path = path or f"/files/{filename}"
        self.files[path] = data
        return {"filename": filename, "url": path, "hashes": {"sha256": listed_sha256 or sha256(data)}}

    def list_json(self, project: str, payload: Any) -> str:
        """The project page answers ``payload`` (any JSON, or raw bytes) as PEP 691 JSON; returns its path."""
        path = f"/simple/{project}/"
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.pages[path] = (JSON_V1, body)
        return path

    def list_files(self, project: str, entries: list[dict[str, Any]]) -> str:
        return self.list_json(project, {"meta": {"api-version": "1.1"}, "name": project, "files": entries})

    def list_html(self, project: str, html: str) -> str:
        path = f"/simple/{project}/"
        self.pages[path] = ("text/html", html.encode())
        return path

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        if path in self.redirects:
            handler.send_response(302)
            handler.send_header("Location", self.redirects[path])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if path in self.drip_headers:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self._drip(handler, b"Content-Type: text/html\r\nX-Slow: " + b"x" * 10_000)
            return
        content_type, body = self.pages.get(path) or ("application/octet-stream", self.files.get(path))
        if body is None:
            handler.send_error(404)
            return
        if path in self.files and self.on_file_get is not None:
            self.on_file_get(path)
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        if path in self.endless:
            handler.send_header("Connection", "close")
            handler.end_headers()
            chunk = b" " * 2**20
            while not self._stop.is_set():
                handler.wfile.write(chunk)
            return
        handler.send_header("Content-Length", str(self.declared_size.get(path, len(body))))
        handler.end_headers()
        if path in self.drip_body:
            self._drip(handler, body)
        else:
            handler.wfile.write(body)

    def _drip(self, handler: BaseHTTPRequestHandler, data: bytes) -> None:
        for i in range(len(data)):
            handler.wfile.write(data[i : i + 1])
            handler.wfile.flush()
            if self._stop.wait(DRIP_EVERY):  # the fault's own pace; close() ends it at once
                return

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostileIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
