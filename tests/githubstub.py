"""A stand-in GitHub on loopback: GitHub cannot exist on these machines (it is not reachable from them).

It implements the documented endpoints of GitHub's REST API, version 2022-11-28, that the GitHub
Releases client (wheelflow/index/githubreleases.py) uses, over real HTTP on four loopback ports, as
github.com splits them over four hosts:

API host (``api_url``)
    GET    /repos/{owner}/{repo}/releases/tags/{tag}        published releases only (drafts: 404)
    GET    /repos/{owner}/{repo}/releases                   paginated (``per_page``, ``page``, ``Link``);
                                                            drafts listed only to a token
    POST   /repos/{owner}/{repo}/releases                   create (``draft: true``); 422 already_exists
    PATCH  /repos/{owner}/{repo}/releases/{id}              update (``draft: false`` publishes)
    DELETE /repos/{owner}/{repo}/releases/{id}
    GET    /repos/{owner}/{repo}/releases/{id}/assets       paginated
    GET    /repos/{owner}/{repo}/releases/assets/{id}       JSON; with ``Accept: application/octet-stream``
                                                            a 302 to the storage host
    DELETE /repos/{owner}/{repo}/releases/assets/{id}
uploads host (``uploads_url``; a release's ``upload_url`` points there)
    POST   /repos/{owner}/{repo}/releases/{id}/assets?name=  201; 422 already_exists for a taken name
download host (``download_url``: the ``browser_download_url``s, as github.com)
    GET    /{owner}/{repo}/releases/download/{tag}/{name}   302 to the storage host; 404 while a draft
storage host (``storage_url``): the bytes (GET, and HEAD as uv sends before downloading).

Every answer carries the ``X-RateLimit-*`` headers; assets carry ``digest: "sha256:..."`` and a
``state`` ("starter" until an upload completes). Writes and drafts need ``Authorization: Bearer TOKEN``.

Faults a test switches on: ``fail_uploads`` (the next N uploads read the body, leave a "starter" asset
and answer 502), ``redirect_loop`` (downloads redirect in a loop), ``slow_download`` (storage drips one
byte per that many seconds), ``rate_limit(...)`` (primary: 403/429 with ``X-RateLimit-Remaining: 0`` and
``X-RateLimit-Reset``; secondary: 403 with ``Retry-After``), ``corrupt`` (asset names whose bytes
differ from their digest), ``digests = False`` (no ``digest`` field, as older servers). ``seen`` records every request: host, method, path and query, and its
``Authorization`` header, so a test can show where the token went.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

API_VERSION = "2022-11-28"
TOKEN = "ghp_stubTokenNeverInAnyUrl0123456789abcd"


@dataclass
class StubAsset:
    id: int
    release_id: int
    name: str
    content_type: str
    data: bytes = b""
    state: str = "starter"


@dataclass
class StubRelease:
    id: int
    tag_name: str
    name: str
    draft: bool
    assets: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Seen:
    host: str  # "api", "uploads", "download", "storage"
    method: str
    target: str  # path and query, as sent
    authorization: str | None


class GitHubStub:
    def __init__(self, repository: str = "octo/flash", token: str = TOKEN, per_page_max: int = 100) -> None:
        self.repository, self.token, self.per_page_max = repository, token, per_page_max
        self.releases: dict[int, StubRelease] = {}
        self.assets: dict[int, StubAsset] = {}
        self.seen: list[Seen] = []
        self.fail_uploads = 0
        self.redirect_loop = False
        self.slow_download: float | None = None
        self.corrupt: set[str] = set()
        self.digests = True  # False: assets without ``digest``, as GitHub before 2025 and older Enterprise servers
        self._limits: list[tuple[str, int, int]] = []  # (kind, status, seconds) for the next API requests
        self._ids = iter(range(1000, 10**9))
        self._lock = threading.Lock()
        self._servers = {role: self._serve(role) for role in ("api", "uploads", "download", "storage")}

    # --- addresses ------------------------------------------------------------------------

    def _url(self, role: str) -> str:
        return f"http://127.0.0.1:{self._servers[role][0].server_address[1]}"

    @property
    def api_url(self) -> str:
        return self._url("api")

    @property
    def uploads_url(self) -> str:
        return self._url("uploads")

    @property
    def download_url(self) -> str:
        return self._url("download")

    @property
    def storage_url(self) -> str:
        return self._url("storage")

    # --- faults and fixtures ----------------------------------------------------------------

    def rate_limit(self, kind: str = "primary", *, status: int = 403, seconds: int = 1, times: int = 1) -> None:
        """The next ``times`` API or upload requests answer a rate limit of ``kind``: "primary",
        "secondary" (with Retry-After) or "secondary-bare" (403 and the message only)."""
        with self._lock:
            self._limits += [(kind, status, seconds)] * times

    def add_release(self, tag: str, *, draft: bool) -> StubRelease:
        with self._lock:
            release = StubRelease(next(self._ids), tag, tag, draft)
            self.releases[release.id] = release
            return release

    def add_asset(self, release: StubRelease, name: str, data: bytes, state: str = "uploaded") -> StubAsset:
        with self._lock:
            asset = StubAsset(next(self._ids), release.id, name, "application/octet-stream", data, state)
            self.assets[asset.id] = asset
            release.assets.append(asset.id)
            return asset

    def release(self, tag: str) -> StubRelease | None:
        return next((r for r in self.releases.values() if r.tag_name == tag), None)

    def asset_names(self, tag: str) -> list[str]:
        release = self.release(tag)
        return [] if release is None else sorted(self.assets[a].name for a in release.assets)

    # --- JSON shapes ------------------------------------------------------------------------

    def _release_json(self, release: StubRelease) -> dict[str, Any]:
        base = f"/repos/{self.repository}/releases/{release.id}"
        return {
            "id": release.id,
            "tag_name": release.tag_name,
            "name": release.name,
            "draft": release.draft,
            "prerelease": False,
            "url": self.api_url + base,
            "html_url": f"{self.download_url}/{self.repository}/releases/tag/{quote(release.tag_name)}",
            "assets_url": self.api_url + base + "/assets",
            "upload_url": self.uploads_url + base + "/assets{?name,label}",
            "assets": [self._asset_json(self.assets[a]) for a in release.assets],
        }

    def _asset_json(self, asset: StubAsset) -> dict[str, Any]:
        release = self.releases[asset.release_id]
        uploaded = asset.state == "uploaded"
        return {
            "id": asset.id,
            "name": asset.name,
            "label": None,
            "state": asset.state,
            "content_type": asset.content_type,
            "size": len(asset.data),
            "digest": f"sha256:{hashlib.sha256(asset.data).hexdigest()}" if uploaded and self.digests else None,
            "url": f"{self.api_url}/repos/{self.repository}/releases/assets/{asset.id}",
            "browser_download_url": (
                f"{self.download_url}/{self.repository}/releases/download/{quote(release.tag_name)}/{quote(asset.name)}"
            ),
        }

    # --- the servers ------------------------------------------------------------------------

    def _serve(self, role: str) -> tuple[ThreadingHTTPServer, threading.Thread]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                stub.seen.append(Seen(role, self.command, self.path, self.headers.get("Authorization")))
                try:
                    getattr(stub, f"_{role}")(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a deadline, a fault): nothing to answer

            do_GET = do_HEAD = do_POST = do_PATCH = do_DELETE = _handle

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        # A short poll: close() waits for four servers to notice their shutdown.
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"github-stub-{role}", daemon=True
        )
        thread.start()
        return server, thread

    def close(self) -> None:
        for server, thread in self._servers.values():
            server.shutdown()
            server.server_close()
            thread.join(10)

    def __enter__(self) -> GitHubStub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- answering --------------------------------------------------------------------------

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        payload: Any = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        if body is None:
            body = b"" if payload is None else json.dumps(payload).encode()
        handler.send_response(status)
        if payload is not None:
            handler.send_header("Content-Type", "application/json; charset=utf-8")
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def _rate_headers(self, remaining: int = 4999, reset_in: int = 3600) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(time.time()) + reset_in),
            "X-RateLimit-Used": str(5000 - remaining),
            "X-RateLimit-Resource": "core",
            "X-GitHub-Api-Version-Selected": API_VERSION,
        }

    def _limited(self, handler: BaseHTTPRequestHandler) -> bool:
        with self._lock:
            if not self._limits:
                return False
            kind, status, seconds = self._limits.pop(0)
        self._drain(handler)
        if kind == "primary":
            headers = self._rate_headers(remaining=0, reset_in=seconds)
            message = "API rate limit exceeded for user ID 1."
        else:  # "secondary", with a Retry-After; "secondary-bare": the message alone, as GitHub also answers
            headers = self._rate_headers() | ({"Retry-After": str(seconds)} if kind == "secondary" else {})
            message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
        self._send(handler, status, {"message": message, "documentation_url": "https://docs.github.com/rest"}, headers)
        return True

    @staticmethod
    def _drain(handler: BaseHTTPRequestHandler) -> bytes:
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        return handler.headers.get("Authorization") in (f"Bearer {self.token}", f"token {self.token}")

    def _refuse(self, handler: BaseHTTPRequestHandler) -> None:
        self._drain(handler)
        self._send(handler, 401, {"message": "Bad credentials"}, self._rate_headers())

    def _page(self, handler: BaseHTTPRequestHandler, items: list[Any]) -> None:
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query)
        per_page = min(int(query.get("per_page", ["30"])[0]), self.per_page_max)
        page = int(query.get("page", ["1"])[0])
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = self._rate_headers()
        if page * per_page < len(items):
            headers["Link"] = f'<{self.api_url}{parts.path}?per_page={per_page}&page={page + 1}>; rel="next"'
        self._send(handler, 200, chunk, headers)

    def _api(self, handler: BaseHTTPRequestHandler) -> None:
        if self._limited(handler):
            return
        path = urlsplit(handler.path).path
        prefix = f"/repos/{self.repository}/releases"
        method = handler.command
        if not path.startswith(prefix):
            return self._send(handler, 404, {"message": "Not Found"}, self._rate_headers())
        rest = [unquote(p) for p in path[len(prefix) :].split("/") if p]
        if method != "GET" and not self._authorized(handler):
            return self._refuse(handler)
        with self._lock:
            if rest[:1] == ["tags"] and len(rest) == 2 and method == "GET":
                found = self.release(rest[1])
                if found is None or found.draft:
                    return self._send(handler, 404, {"message": "Not Found"}, self._rate_headers())
                return self._send(handler, 200, self._release_json(found), self._rate_headers())
            if not rest and method == "GET":
                visible = [r for r in self.releases.values() if not r.draft or self._authorized(handler)]
                return self._page(handler, [self._release_json(r) for r in sorted(visible, key=lambda r: -r.id)])
            if not rest and method == "POST":
                body = json.loads(self._drain(handler) or b"{}")
                if self.release(body["tag_name"]) is not None:
                    return self._send(
                        handler,
                        422,
                        {
                            "message": "Validation Failed",
                            "errors": [{"resource": "Release", "code": "already_exists", "field": "tag_name"}],
                        },
                        self._rate_headers(),
                    )
                release = StubRelease(
                    next(self._ids), body["tag_name"], body.get("name") or body["tag_name"], bool(body.get("draft"))
                )
                self.releases[release.id] = release
                return self._send(handler, 201, self._release_json(release), self._rate_headers())
            if rest[:1] == ["assets"] and len(rest) == 2:
                asset = self.assets.get(int(rest[1])) if rest[1].isdigit() else None
                if asset is None:
                    return self._send(handler, 404, {"message": "Not Found"}, self._rate_headers())
                if self.releases[asset.release_id].draft and not self._authorized(handler):
                    return self._send(handler, 404, {"message": "Not Found"}, self._rate_headers())
                if method == "DELETE":
                    del self.assets[asset.id]
                    self.releases[asset.release_id].assets.remove(asset.id)
                    return self._send(handler, 204, None, self._rate_headers())
                if handler.headers.get("Accept") == "application/octet-stream":
                    headers = {**self._rate_headers(), "Location": f"{self.storage_url}/blobs/{asset.id}"}
                    return self._send(handler, 302, None, headers)
                return self._send(handler, 200, self._asset_json(asset), self._rate_headers())
            release = self.releases.get(int(rest[0])) if rest and rest[0].isdigit() else None
            if release is None or (release.draft and not self._authorized(handler)):
                return self._send(handler, 404, {"message": "Not Found"}, self._rate_headers())
            if len(rest) == 2 and rest[1] == "assets" and method == "GET":
                return self._page(handler, [self._asset_json(self.assets[a]) for a in release.assets])
            if len(rest) == 1 and method == "PATCH":
                body = json.loads(self._drain(handler) or b"{}")
                release.draft = bool(body.get("draft", release.draft))
                return self._send(handler, 200, self._release_json(release), self._rate_headers())
            if len(rest) == 1 and method == "DELETE":
                for asset_id in release.assets:
                    del self.assets[asset_id]
                del self.releases[release.id]
                return self._send(handler, 204, None, self._rate_headers())
            if len(rest) == 1 and method == "GET":
                return self._send(handler, 200, self._release_json(release), self._rate_headers())
        return self._send(handler, 404, {"message": "Not Found"}, self._rate_headers())

    def _uploads(self, handler: BaseHTTPRequestHandler) -> None:
        if self._limited(handler):
            return
        parts = urlsplit(handler.path)
        rest = parts.path.removeprefix(f"/repos/{self.repository}/releases/").split("/")
        if handler.command != "POST" or len(rest) != 2 or rest[1] != "assets" or not rest[0].isdigit():
            self._drain(handler)
            return self._send(handler, 404, {"message": "Not Found"}, self._rate_headers())
        if not self._authorized(handler):
            return self._refuse(handler)
        name = parse_qs(parts.query).get("name", [""])[0]
        data = self._drain(handler)
        with self._lock:
            release = self.releases.get(int(rest[0]))
            if release is None:
                return self._send(handler, 404, {"message": "Not Found"}, self._rate_headers())
            if any(self.assets[a].name == name for a in release.assets):
                return self._send(
                    handler,
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [{"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}],
                    },
                    self._rate_headers(),
                )
            asset = StubAsset(next(self._ids), release.id, name, handler.headers.get("Content-Type", ""), data)
            self.assets[asset.id] = asset
            release.assets.append(asset.id)
            if self.fail_uploads > 0:  # the upload broke off after GitHub made the asset: it stays "starter"
                self.fail_uploads -= 1
                return self._send(handler, 502, {"message": "Server Error"}, self._rate_headers())
            asset.state = "uploaded"
            return self._send(handler, 201, self._asset_json(asset), self._rate_headers())

    def _download(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        prefix = f"/{self.repository}/releases/download/"
        if path.startswith("/repos/"):  # the web host is not the API: a misconfigured api-url gets a page
            return self._send(handler, 200, body=b"<html>sign in</html>", headers={"Content-Type": "text/html"})
        if path.startswith("/loop"):
            return self._send(handler, 302, None, {"Location": f"{self.storage_url}/loop"})
        tag, _, name = path.removeprefix(prefix).partition("/")
        with self._lock:
            release = self.release(unquote(tag)) if path.startswith(prefix) else None
            found = None
            if release is not None and not release.draft:
                found = next((self.assets[a] for a in release.assets if self.assets[a].name == unquote(name)), None)
        if found is None or found.state != "uploaded":
            return self._send(handler, 404, body=b"Not Found", headers={"Content-Type": "text/plain"})
        location = f"{self.storage_url}/loop" if self.redirect_loop else f"{self.storage_url}/blobs/{found.id}"
        self._send(handler, 302, None, {"Location": location})

    def _storage(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        if path == "/loop":
            return self._send(handler, 302, None, {"Location": f"{self.download_url}/loop"})
        asset_id = path.removeprefix("/blobs/")
        asset = self.assets.get(int(asset_id)) if asset_id.isdigit() else None
        if asset is None:
            return self._send(handler, 404, body=b"Not Found", headers={"Content-Type": "text/plain"})
        data = asset.data
        if asset.name in self.corrupt:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        handler.send_response(200)
        handler.send_header("Content-Type", asset.content_type or "application/octet-stream")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command == "HEAD":  # uv asks before it downloads
            return
        if self.slow_download is None:
            handler.wfile.write(data)
            return
        for i in range(len(data)):
            handler.wfile.write(data[i : i + 1])
            handler.wfile.flush()
            time.sleep(self.slow_download)  # the fault itself: a download host that drips
