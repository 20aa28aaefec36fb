"""A private git remote on loopback: real `git http-backend` (CGI) behind a Basic-auth front.

The front answers 401 with WWW-Authenticate to a request without the right credentials, as a
forge does for a private repository, and hands authorised requests to git http-backend with the
CGI environment. ``on_authorised`` runs (in the server thread, before the answer) for each
authorised request, while the client's git processes are waiting for it.
"""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def git_http_backend() -> str:
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
    return str(Path(exec_path) / "git-http-backend")


class AuthGitServer:
    def __init__(self, root: Path, username: str, password: str) -> None:
        self.root = root  # GIT_PROJECT_ROOT: bare repositories live under it
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.refused = 0  # requests answered 401
        self.authorised = 0
        self.on_authorised: Callable[[], None] = lambda: None
        server = self
        backend = git_http_backend()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                if self.headers.get("Authorization") != server.expected:
                    server.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="private"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                server.authorised += 1
                server.on_authorised()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path, _, query = self.path.partition("?")
                env = {
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": "releaser",
                    "REMOTE_ADDR": "127.0.0.1",
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "PATH": "/usr/bin:/bin",
                }
                proc = subprocess.run([backend], input=body, env=env, capture_output=True, check=True)
                head, _, payload = proc.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode().split("\r\n"):
                    name, _, value = line.partition(": ")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> AuthGitServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
