"""A real HTTP server on loopback that takes a request and then stalls: it never answers ("silent"), or
answers one byte every ``interval`` seconds, forever ("drip"). Per-read socket timeouts never trip on
the drip; only a total deadline ends a client's wait.

``requests`` counts the requests that arrived (their bodies read whole), so a test waits for one to
arrive (a marker) instead of sleeping.
"""

from __future__ import annotations

import socketserver
import threading

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000000\r\n\r\n" + b"." * 1000000


class StallingServer:
    def __init__(self, mode: str = "silent", interval: float = 0.5) -> None:
        assert mode in ("silent", "drip")
        self.mode, self.interval = mode, interval
        self.arrived = threading.Condition()
        self.requests = 0
        self._closing = threading.Event()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(60)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = self.request.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = next(
                        (
                            int(line.split(b":", 1)[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        0,
                    )
                    while len(body) < length:
                        chunk = self.request.recv(65536)
                        if not chunk:
                            return
                        body += chunk
                except OSError:
                    return
                with server.arrived:
                    server.requests += 1
                    server.arrived.notify_all()
                if server.mode == "silent":
                    server._closing.wait()
                    return
                for byte in _ANSWER:
                    if server._closing.wait(server.interval):
                        return
                    try:
                        self.request.sendall(bytes([byte]))
                    except OSError:
                        return

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> StallingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def wait_for_request(self, count: int = 1, timeout: float = 120) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: self.requests >= count, timeout), "no request arrived"
