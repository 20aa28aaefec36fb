"""A fault-injecting HTTP proxy on loopback, in front of a real index server.

Real sockets both ways: requests are forwarded to the upstream server unless a rule says to fail
them. Rules are consumed in order, so "fail the first upload with 503" is exactly that.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


@dataclass
class Rule:
    method: str  # "POST" for uploads, "GET" for listings
    status: int
    body: str = ""
    times: int = 1
    forward_first: bool = False  # forward to upstream (so the file lands), then answer with the fault
    reset: bool = False  # close the connection without an answer (after forwarding, with forward_first)
    truncate: bool = False  # forward, then answer upstream's status with the first half of its body
    path_prefix: str = ""  # only requests whose path starts with this
    delay: float = 0.0  # forward, but answer only after this many seconds (a slow index)
    body_contains: bytes = b""  # only requests whose body holds these bytes (e.g. one upload's file name)
    retry_after: str = ""  # the fault's Retry-After header (clients that honour it wait this long)


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status answered)
        # Cache lag: a file stays out of listings for this many seconds after its upload passed through.
        self.lag: dict[str, float] = {}
        self._uploaded_at: dict[str, float] = {}
        self._forwarded: list[str] = []
        self._lock = threading.Lock()
        # Concurrency: uploads (POSTs) in flight at once, at most. With ``gather`` set, the POSTs after
        # the first ``gather_skip`` wait (up to 30 s) until ``gather`` are in flight together, once: a
        # client that uploads one at a time never gets there, one that overlaps them always does.
        self.max_in_flight = 0
        self.gather, self.gather_skip = 0, 0
        self._in_flight = self._posts = 0
        self._gathered = False
        self._flight = threading.Condition()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                if self.command != "POST":
                    return self._answer()
                proxy._take_off()
                try:
                    self._answer()
                finally:
                    with proxy._flight:
                        proxy._in_flight -= 1

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                rule = proxy._take(self.command, self.path, body)
                if rule is not None and rule.delay:
                    time.sleep(rule.delay)  # the fault itself: an answer later than the client waits
                    rule = None
                if rule is None or rule.forward_first or rule.truncate:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                    upstream = httpx.request(
                        self.command, proxy.upstream + self.path, content=body, headers=headers, timeout=30
                    )
                    if self.command == "POST":
                        found = re.search(rb'filename="([^"]+)"', body)
                        with proxy._lock:
                            proxy._forwarded.append(found.group(1).decode() if found else "?")
                if rule is not None and rule.reset:
                    with proxy._lock:
                        proxy.seen.append((self.command, self.path, 0))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)  # the peer sees a reset, not an answer
                    return
                if rule is not None and rule.truncate:
                    status, payload = upstream.status_code, upstream.content[: len(upstream.content) // 2]
                    ctype = upstream.headers.get("content-type", "application/octet-stream")
                    rule = None
                elif rule is not None:
                    status, payload, ctype = rule.status, rule.body.encode(), "text/plain"
                else:
                    status, payload = upstream.status_code, upstream.content
                    ctype = upstream.headers.get("content-type", "text/plain")
                    if self.command == "POST":
                        for filename in proxy.lag:
                            if filename.encode() in body:
                                proxy._uploaded_at.setdefault(filename, time.monotonic())
                    elif "/simple/" in self.path:
                        payload = proxy._hide_lagging(payload)
                with proxy._lock:
                    proxy.seen.append((self.command, self.path, status))
                self.send_response(status, rule.body if rule and rule.body else None)
                self.send_header("content-type", ctype)
                if rule is not None and rule.retry_after:
                    self.send_header("retry-after", rule.retry_after)
                if rule is None:  # what installers' caches revalidate with
                    for name in ("etag", "last-modified"):
                        if name in upstream.headers:
                            self.send_header(name, upstream.headers[name])
                if self.command == "HEAD":
                    self.send_header("content-length", upstream.headers.get("content-length", "0"))
                    self.end_headers()
                    return
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_HEAD = do_PATCH = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def forwarded_uploads(self) -> list[str]:
        """The file name of each upload that reached the index, in order."""
        with self._lock:
            return list(self._forwarded)

    def _take_off(self) -> None:
        with self._flight:
            self._posts += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._flight.notify_all()
            if self.gather and self._posts > self.gather_skip and not self._gathered:
                self._gathered = self._flight.wait_for(lambda: self._in_flight >= self.gather or self._gathered, 30)

    def statuses(self, method: str) -> list[int]:
        """What the proxy answered to each request of ``method`` (0: connection reset), in order."""
        with self._lock:
            return [status for seen_method, _path, status in self.seen if seen_method == method]

    def _hide_lagging(self, payload: bytes) -> bytes:
        text = payload.decode()
        for filename, seconds in self.lag.items():
            uploaded = self._uploaded_at.get(filename)
            if uploaded is not None and time.monotonic() < uploaded + seconds:
                text = re.sub(r"<a [^>]*>" + re.escape(filename) + r"</a>(<br\s*/?>)?", "", text)
        return text.encode()

    def _take(self, method: str, path: str, body: bytes = b"") -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if (
                    rule.method == method
                    and rule.times > 0
                    and path.startswith(rule.path_prefix)
                    and rule.body_contains in body
                ):
                    rule.times -= 1
                    return rule
        return None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class UnixSocketRelay:
    """A unix socket that relays to another (e.g. dockerd's) until ``cut()``: then every connection
    drops and nothing answers, as when the daemon behind it stops in the middle of a release."""

    def __init__(self, path: str, upstream: str) -> None:
        self.path, self.upstream = path, upstream
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(64)
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # cut
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.upstream)
            with self._lock:
                self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self._listener.close()
        with self._lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
