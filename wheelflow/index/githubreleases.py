"""GitHub Releases as a place wheels are published: a typed client over GitHub's documented REST API.

The flash-attention family ships its compiled wheels as release assets. This client does what a
release needs there, and nothing GitHub does not document (REST API version 2022-11-28):

- the release for a tag, drafts included (``GET .../releases/tags/{tag}`` does not return drafts:
  they are found by listing releases), a draft created, published (``PATCH draft=false``), deleted;
- assets listed (paginated by the ``Link`` header), uploaded (streamed from the file, to the uploads
  host that the release's ``upload_url`` names), deleted, downloaded and hashed (through the asset API
  URL, which redirects to a download host, or the ``browser_download_url`` users see), and compared
  with the asset's ``digest`` (``sha256:...``) where GitHub gives one.

Failures are one line with the fix, as wheelflow errors (:mod:`wheelflow.core.errors`): the 2 GiB
asset limit is checked before an upload; ``422 already_exists`` is read back ("already present" when
the bytes are ours, a stop when another file has our name); rate limits (403/429 with
``X-RateLimit-Remaining: 0`` + ``X-RateLimit-Reset``, ``Retry-After``, secondary limits) are waited out
only within the deadline; a 5xx during an upload deletes the half-made asset and retries a bounded
number of times.

The token goes only into the ``Authorization`` header of requests to the API host and the uploads
host, never into a URL, a log line, an exception or a repr; a redirect to a download host gets no token.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import httpx

from wheelflow.config.assetnames import DEFAULT_API_URL, check_repository
from wheelflow.core.deadline import Deadline
from wheelflow.core.errors import (
    CredentialsError,
    DeadlineExceeded,
    HashMismatchError,
    RateLimited,
    ReleaseAssetError,
    VerificationError,
)
from wheelflow.core.redaction import redact_url, register_secret
from wheelflow.index.simple_api import (  # the index reader's deadline guard and redirect checks, shared
    _redirect_target,
    _Watchdog,
)

API_VERSION = "2022-11-28"
ACCEPT_JSON = "application/vnd.github+json"
ACCEPT_BYTES = "application/octet-stream"
#: GitHub: "each file included in a release must be under 2 GiB".
MAX_ASSET_BYTES = 2 * 2**30
#: Upload attempts for one asset when GitHub answers 5xx or drops the connection mid-upload.
UPLOAD_ATTEMPTS = 3
#: Attempts of one idempotent request (GET, PATCH, DELETE) that answers 5xx or no answer.
REQUEST_ATTEMPTS = 3
#: Pause before the next attempt after a 5xx (doubled each time), bounded by the deadline.
BACKOFF_SECONDS = 1.0
#: GitHub asks clients hitting a secondary limit without a Retry-After to wait at least a minute.
SECONDARY_LIMIT_WAIT = 60.0
#: Redirects followed for one download (GitHub uses one: API or github.com -> the download host).
MAX_REDIRECTS = 5
#: Pages read of one listing (100 per page: 10,000 assets or releases, far beyond the 1,000 GitHub keeps).
MAX_PAGES = 100
PER_PAGE = 100
#: Total time of one release's GitHub work when the caller gives no deadline.
DEFAULT_DEADLINE = 3600.0
READ_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
CHUNK = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class Asset:
    id: int
    name: str
    size: int
    state: str  # "uploaded" once complete; "starter"/"new" for an interrupted upload
    url: str  # the asset's API URL (downloads with Accept: application/octet-stream, token needed for drafts)
    browser_download_url: str  # what users download (redirects to the download host)
    digest: str | None  # the sha256 GitHub computed, hex, when it gives one

    @classmethod
    def from_api(cls, payload: dict[str, Any]) -> Asset:
        digest = payload.get("digest")
        sha256 = digest[len("sha256:") :].lower() if isinstance(digest, str) and digest.startswith("sha256:") else None
        return cls(
            id=int(payload["id"]),
            name=str(payload["name"]),
            size=int(payload.get("size") or 0),
            state=str(payload.get("state") or "uploaded"),
            url=str(payload["url"]),
            browser_download_url=str(payload.get("browser_download_url") or ""),
            digest=sha256,
        )


@dataclass(frozen=True)
class Release:
    id: int
    tag_name: str
    draft: bool
    upload_url: str  # a URI template: https://uploads.github.com/repos/O/R/releases/ID/assets{?name,label}
    html_url: str = ""

    @classmethod
    def from_api(cls, payload: dict[str, Any]) -> Release:
        return cls(
            id=int(payload["id"]),
            tag_name=str(payload["tag_name"]),
            draft=bool(payload.get("draft")),
            upload_url=str(payload.get("upload_url") or ""),
            html_url=str(payload.get("html_url") or ""),
        )


@dataclass
class UploadOutcome:
    asset: Asset
    outcome: str  # "uploaded" or "already present"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def uploads_base(api_url: str) -> str:
    """Where uploads go when the API is at ``api_url``: github.com's uploads host, or a GitHub
    Enterprise server's ``/api/uploads`` (its API being ``https://HOST/api/v3``)."""
    parts = urlsplit(api_url.rstrip("/"))
    if parts.netloc.lower() == "api.github.com":
        return "https://uploads.github.com"
    return f"{parts.scheme}://{parts.netloc}{parts.path.removesuffix('/v3')}/uploads"


def published_refusal(tag: str, repository: str, fix: str = "") -> str:
    """Why assets are not added to a release already published: one line with ``fix``."""
    return (
        f"release {tag} of {repository} is already published: assets added now would appear to its users one by "
        "one; fix: " + (fix or "release a new version, or allow adding assets to a published release")
    )


@dataclass
class GitHubReleases:
    """One repository's releases, spoken to with one token under one deadline.

    ``sleep`` waits out rate limits and backoffs (tests pass one that records the waits);
    ``uploads_url`` is where the release's ``upload_url`` may point (default: :func:`uploads_base`):
    the token is sent there and to ``api_url``, to no other host.
    """

    repository: str  # OWNER/REPO
    token: str = field(repr=False)
    api_url: str = DEFAULT_API_URL
    uploads_url: str | None = None
    deadline: Deadline | None = None
    client: httpx.Client | None = field(default=None, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    log: Callable[[str], None] = field(default=lambda _line: None, repr=False)

    def __post_init__(self) -> None:
        check_repository(self.repository, "repository")
        if not self.token or any(c.isspace() or not c.isprintable() or not c.isascii() for c in self.token):
            raise CredentialsError(
                f"GitHub release of {self.repository}: the token is empty or holds spaces or control characters; "
                "fix: give the target's token as the single line GitHub shows (fine-grained: Contents read and write)"
            )
        register_secret(self.token)
        self.api_url = self.api_url.rstrip("/")
        self.uploads_url = (self.uploads_url or uploads_base(self.api_url)).rstrip("/")
        if self.deadline is None:
            self.deadline = Deadline.for_read(None, DEFAULT_DEADLINE)
        self._own_client = self.client is None
        if self.client is None:
            self.client = httpx.Client(timeout=READ_TIMEOUT, follow_redirects=False)
        self._trusted = {_origin(self.api_url), _origin(self.uploads_url)}

    def close(self) -> None:
        if self._own_client and self.client is not None:
            self.client.close()

    def __enter__(self) -> GitHubReleases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests ---------------------------------------------------------------------------

    @property
    def _repo_url(self) -> str:
        return f"{self.api_url}/repos/{self.repository}"

    def _headers(self, url: str, accept: str = ACCEPT_JSON) -> dict[str, str]:
        headers = {"Accept": accept, "X-GitHub-Api-Version": API_VERSION, "User-Agent": "wheelflow"}
        if _origin(url) in self._trusted:  # never to a download host, nor anywhere a redirect leads
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _timeout(self) -> httpx.Timeout:
        assert self.deadline is not None
        left = max(self.deadline.remaining(), 0.001)
        return httpx.Timeout(min(READ_TIMEOUT.read or left, left), connect=min(READ_TIMEOUT.connect or left, left))

    @staticmethod
    def _rate_limit_wait(response: httpx.Response) -> tuple[float, str] | None:
        """(seconds GitHub asks us to wait, which limit) when ``response`` is a rate limit; else None."""
        if response.status_code not in (403, 429):
            return None
        headers = response.headers
        if (after := headers.get("retry-after", "").strip()).isdigit():
            return float(after), "secondary rate limit"
        if headers.get("x-ratelimit-remaining") == "0" and (reset := headers.get("x-ratelimit-reset", "")).isdigit():
            return max(0.0, int(reset) - time.time()) + 1.0, "rate limit"  # whole seconds on GitHub's clock: one more
        if response.status_code == 429 or "secondary rate limit" in response.text.lower():
            return SECONDARY_LIMIT_WAIT, "secondary rate limit"
        return None

    def _waited(self, seconds: float, what: str, url: str) -> None:
        """Wait ``seconds`` if the deadline leaves that long, else one line naming the wait and the fix."""
        assert self.deadline is not None
        if seconds >= self.deadline.remaining():
            until = datetime.fromtimestamp(time.time() + seconds, timezone.utc).strftime("%H:%M:%S UTC")
            raise RateLimited(
                f"GitHub's {what} for {self.repository} asks to wait {seconds:.0f} s (until {until}) before "
                f"{redact_url(url)}, more than the {self.deadline.remaining():.0f} s left of the release's deadline; "
                "fix: re-run after that time (assets already uploaded are found, not uploaded again), "
                "or use a token with a higher limit, or allow the release more time",
                transient=False,
                status=429,
            )
        self.log(f"GitHub {what}: waiting {seconds:.0f} s before {redact_url(url)}")
        self.sleep(seconds)

    def _request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200,),
        tolerate: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One API call: rate limits waited out within the deadline, 5xx and dropped connections
        retried (REQUEST_ATTEMPTS, backoff), any other answer outside ``ok`` + ``tolerate`` one error line."""
        assert self.deadline is not None and self.client is not None
        attempt = 0
        while True:
            attempt += 1
            if self.deadline.expired:
                raise self._deadline_error(method, url)
            try:
                response = self.client.request(
                    method, url, json=json, params=params, headers=self._headers(url), timeout=self._timeout()
                )
            except httpx.HTTPError as exc:
                if self.deadline.expired:
                    raise self._deadline_error(method, url) from None
                if attempt >= REQUEST_ATTEMPTS:
                    raise ReleaseAssetError(
                        f"GitHub did not answer {method} {redact_url(url)} ({type(exc).__name__}) in {attempt} "
                        "attempts; fix: check the API URL and the network, then re-run",
                        transient=True,
                    ) from None
                self._backoff(attempt, method, url)
                continue
            if response.status_code in ok or response.status_code in tolerate:
                return response
            if (limit := self._rate_limit_wait(response)) is not None:
                self._waited(*limit, url)
                continue
            if response.status_code >= 500 and attempt < REQUEST_ATTEMPTS:
                self._backoff(attempt, method, url)
                continue
            raise self._answer_error(method, url, response)

    def _backoff(self, attempt: int, method: str, url: str) -> None:
        assert self.deadline is not None
        pause = BACKOFF_SECONDS * 2 ** (attempt - 1)
        if pause >= self.deadline.remaining():
            raise self._deadline_error(method, url)
        self.sleep(pause)

    def _deadline_error(self, method: str, url: str) -> DeadlineExceeded:
        assert self.deadline is not None
        return DeadlineExceeded(
            f"GitHub did not complete {method} {redact_url(url)} within the release's deadline "
            f"({self.deadline.at - self.deadline.started:.0f} s); fix: check that GitHub answers, or allow more time"
        )

    def _answer_error(self, method: str, url: str, response: httpx.Response) -> Exception:
        status = response.status_code
        message = _api_message(response)
        said = f"{method} {redact_url(url)} answered {status}" + (f" ({message})" if message else "")
        if status == 401:
            return CredentialsError(
                f"GitHub refused the token: {said}; fix: give the target a valid token (fine-grained: "
                f"Contents read and write on {self.repository})"
            )
        if status == 403:
            return CredentialsError(
                f"the token may not do this on {self.repository}: {said}; fix: give the token Contents read and "
                "write on the repository (and SSO authorisation where the organisation requires it)"
            )
        if status == 404:
            return ReleaseAssetError(
                f"{said}; fix: check repository = {self.repository!r} and the API URL, and that the token can "
                "see the repository (private repositories answer 404 to tokens without access)",
                status=status,
            )
        return ReleaseAssetError(
            f"{said}; fix: "
            + ("GitHub had trouble: re-run the release later" if status >= 500 else "see GitHub's answer"),
            transient=status >= 500,
            status=status,
        )

    def _pages(self, url: str) -> Iterator[Any]:
        """Every item of a paginated listing, following ``Link: rel="next"`` on the API host only."""
        params: dict[str, Any] | None = {"per_page": PER_PAGE}
        for _page in range(MAX_PAGES):
            response = self._request("GET", url, params=params)
            items = _parsed(response, url, "a list", _as_list)
            yield from items
            following = response.links.get("next", {}).get("url")
            if not following:
                return
            url, params = urljoin(url, following), None
            if _origin(url) != _origin(self.api_url):
                raise ReleaseAssetError(
                    f"GitHub's next page of {self.repository} is on another host ({redact_url(url)}); "
                    "fix: check the API URL"
                )
        raise ReleaseAssetError(
            f"GitHub listed more than {MAX_PAGES} pages at {redact_url(url)}; fix: delete old releases or assets"
        )

    # --- releases ---------------------------------------------------------------------------

    def release_for_tag(self, tag: str) -> Release | None:
        """The release of ``tag``, draft or published, or None. The by-tag endpoint does not return
        drafts, so a 404 there is followed by a look through the list (which shows drafts to a token
        that may push)."""
        response = self._request("GET", f"{self._repo_url}/releases/tags/{quote(tag, safe='')}", tolerate=(404,))
        if response.status_code == 200:
            return _parsed(response, response.request.url, "a release", Release.from_api)
        for item in self._pages(f"{self._repo_url}/releases"):
            if isinstance(item, dict) and item.get("tag_name") == tag:
                return _parsed(item, f"{self._repo_url}/releases", "a release", Release.from_api)
        return None

    def draft_for_tag(
        self, tag: str, *, name: str | None = None, allow_published: bool = False, published_fix: str = ""
    ) -> tuple[Release, bool]:
        """The release assets go to: the tag's draft (found, or created: the bool says so). A published
        release is returned only with ``allow_published`` (its users would see assets appear one by one);
        otherwise it is one line with ``published_fix``."""
        found = self.release_for_tag(tag)
        if found is not None:
            if not found.draft and not allow_published:
                raise ReleaseAssetError(published_refusal(tag, self.repository, published_fix))
            return found, False
        response = self._request(
            "POST",
            f"{self._repo_url}/releases",
            json={"tag_name": tag, "name": name or tag, "draft": True},
            ok=(201,),
            tolerate=(422,),
        )
        if response.status_code == 201:
            return _parsed(response, f"{self._repo_url}/releases", "a release", Release.from_api), True
        raced = self.release_for_tag(tag)  # another run created it between our read and our create
        if raced is not None and (raced.draft or allow_published):
            return raced, False
        raise self._answer_error("POST", f"{self._repo_url}/releases", response)

    def publish(self, release: Release) -> Release:
        """The draft made visible to users (``draft: false``)."""
        response = self._request("PATCH", f"{self._repo_url}/releases/{release.id}", json={"draft": False})
        published = _parsed(response, f"{self._repo_url}/releases/{release.id}", "a release", Release.from_api)
        if published.draft:
            raise ReleaseAssetError(
                f"GitHub kept release {release.tag_name} of {self.repository} a draft after publishing it; "
                "fix: publish it in GitHub's web page and check the repository's release rules"
            )
        return published

    def delete_release(self, release: Release) -> bool:
        """Delete the release (not its tag); False when it was already gone."""
        response = self._request("DELETE", f"{self._repo_url}/releases/{release.id}", ok=(204,), tolerate=(404,))
        return response.status_code == 204

    # --- assets -----------------------------------------------------------------------------

    def assets(self, release: Release) -> list[Asset]:
        url = f"{self._repo_url}/releases/{release.id}/assets"
        return [_parsed(item, url, "an asset", Asset.from_api) for item in self._pages(url)]

    def asset_named(self, release: Release, name: str) -> Asset | None:
        return next((a for a in self.assets(release) if a.name == name), None)

    def delete_asset(self, asset: Asset) -> bool:
        """Delete one asset; False when it was already gone."""
        response = self._request("DELETE", f"{self._repo_url}/releases/assets/{asset.id}", ok=(204,), tolerate=(404,))
        return response.status_code == 204

    def _upload_target(self, release: Release) -> str:
        """The release's upload URL without its ``{?name,label}`` template, on the uploads host only."""
        url = release.upload_url.split("{", 1)[0]
        if not url or _origin(url) != _origin(self.uploads_url or ""):
            raise ReleaseAssetError(
                f"release {release.tag_name} of {self.repository} names upload URL {redact_url(url)!r}, not on the "
                f"uploads host {redact_url(self.uploads_url or '')}; the token is not sent elsewhere; fix: set the "
                "target's uploads URL to that host if it is really GitHub's"
            )
        return url

    def upload(
        self, release: Release, path: Path, *, sha256: str | None = None, name: str | None = None
    ) -> UploadOutcome:
        """Upload ``path`` as asset ``name`` (default: its file name): "uploaded" or "already present".

        Refused before any byte is sent when the file is 2 GiB or more. An asset of that name already
        there with the same sha256 is "already present"; with other bytes it stops (HashMismatchError).
        A 5xx or a dropped connection mid-upload leaves a half-made asset: it is deleted and the upload
        tried again, UPLOAD_ATTEMPTS times in all."""
        name = name or path.name
        size = path.stat().st_size
        if size >= MAX_ASSET_BYTES:
            raise ReleaseAssetError(
                f"{name} is {size / 2**30:.2f} GiB, and GitHub takes release assets under 2 GiB; fix: shrink the "
                "wheel (strip debug symbols, build fewer CUDA architectures) or publish it to an index instead"
            )
        sha256 = sha256 or file_sha256(path)
        target = self._upload_target(release)
        assert self.deadline is not None and self.client is not None
        last = ""
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            if self.deadline.expired:
                raise self._deadline_error("POST", target)
            headers = {
                **self._headers(target),
                "Content-Type": _content_type(name),
                "Content-Length": str(size),
            }
            try:
                response = self.client.post(
                    target,
                    params={"name": name},
                    content=self._chunks(path, target),
                    headers=headers,
                    timeout=self._timeout(),
                )
            except httpx.HTTPError as exc:
                if self.deadline.expired:
                    raise self._deadline_error("POST", target) from None
                last = f"no answer ({type(exc).__name__})"
            else:
                if response.status_code == 201:
                    return UploadOutcome(_parsed(response, target, "an asset", Asset.from_api), "uploaded")
                if (limit := self._rate_limit_wait(response)) is not None:
                    self._waited(*limit, target)
                    continue
                if response.status_code < 500 and not (response.status_code == 422 and _already_exists(response)):
                    raise self._answer_error("POST", target, response)
                last = f"HTTP {response.status_code}" + (" already_exists" if response.status_code == 422 else "")
            # The upload's fate is unknown (or the name is taken): read what GitHub holds under our name.
            # Ours: done; another file: stop; a half-made asset: deleted, then uploaded again.
            outcome = self._existing(release, name, sha256)
            if outcome is not None:
                return outcome
            if attempt < UPLOAD_ATTEMPTS:
                self.log(f"upload of {name} failed ({last}); attempt {attempt + 1} of {UPLOAD_ATTEMPTS}")
                self._backoff(attempt, "POST", target)
        raise ReleaseAssetError(
            f"upload of {name} to release {release.tag_name} of {self.repository} failed {UPLOAD_ATTEMPTS} times "
            f"(last: {last}); the half-made asset was deleted; fix: re-run the release later (assets already "
            "uploaded are found, not uploaded again)",
            transient=True,
        )

    def _chunks(self, path: Path, url: str) -> Iterator[bytes]:
        assert self.deadline is not None
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                if self.deadline.expired:  # raised through httpx's body iteration, as it is
                    raise self._deadline_error("POST", url)
                yield chunk

    def _existing(self, release: Release, name: str, sha256: str) -> UploadOutcome | None:
        """What GitHub holds under ``name``: ours ("already present"), nothing or a half-made asset
        (deleted: None, upload again), or another file (HashMismatchError: stop)."""
        found = self.asset_named(release, name)
        if found is None:
            return None
        if found.state != "uploaded":  # "starter"/"new": an upload that never completed
            self.delete_asset(found)
            return None
        self._check_ours(release, found, sha256)
        return UploadOutcome(found, "already present")

    def _check_ours(self, release: Release, asset: Asset, sha256: str) -> None:
        served = asset.digest or self.download_sha256(asset)
        if served != sha256:
            raise HashMismatchError(
                f"release {release.tag_name} of {self.repository} already has an asset {asset.name} with sha256 "
                f"{served}, the built file has {sha256}; fix: that is another file under our name: delete the asset "
                "on GitHub if it is wrong, or release a new version"
            )

    def already_there(self, release: Release, wanted: Mapping[str, str]) -> dict[str, Asset]:
        """The files of ``wanted`` (name -> sha256) the release already holds with those bytes, read in
        one listing, so that a re-run uploads none of them. A half-made asset under a wanted name is
        deleted (it is uploaded again); another file under a wanted name stops (HashMismatchError)."""
        present: dict[str, Asset] = {}
        for asset in self.assets(release):
            sha256 = wanted.get(asset.name)
            if sha256 is None:
                continue
            if asset.state != "uploaded":
                self.delete_asset(asset)
                continue
            self._check_ours(release, asset, sha256)
            present[asset.name] = asset
        return present

    # --- downloads --------------------------------------------------------------------------

    def download_sha256(self, asset: Asset, *, as_user: bool = False, to: Path | None = None) -> str:
        """sha256 of the asset's bytes as served, hashed while streaming (and written to ``to``).

        By default through the asset's API URL (``Accept: application/octet-stream``, token sent to the
        API host only: drafts are not downloadable otherwise); ``as_user`` downloads the
        ``browser_download_url`` with no token at all, as users' installers do."""
        url = asset.browser_download_url if as_user else asset.url
        accept = "*/*" if as_user else ACCEPT_BYTES
        return self.download_url_sha256(url, accept=accept, token=not as_user, to=to)

    def download_url_sha256(self, url: str, *, accept: str = "*/*", token: bool = False, to: Path | None = None) -> str:
        """sha256 of what ``url`` serves, following at most MAX_REDIRECTS redirects (a loop is one
        line); the token, when asked for, goes only to the API and uploads hosts."""
        assert self.deadline is not None and self.client is not None
        chain = [url]
        digest = hashlib.sha256()
        # The watchdog shuts the socket at the deadline: a host dripping its headers wakes us at once.
        with _Watchdog(self.deadline) as watchdog:
            while True:
                hop = chain[-1]
                headers = self._headers(hop, accept) if token else {"Accept": accept, "User-Agent": "wheelflow"}
                headers |= {"Accept-Encoding": "identity", "Connection": "close"}
                try:
                    self.deadline.check("download", url)
                    with self.client.stream(
                        "GET", hop, headers=headers, timeout=self._timeout(), extensions={"trace": watchdog.trace}
                    ) as response:
                        if response.is_redirect:
                            chain.append(self._redirect(chain, response.headers.get("location", "")))
                            continue
                        if response.status_code >= 400:
                            raise ReleaseAssetError(
                                f"cannot download {redact_url(url)}: HTTP {response.status_code}"
                                + (f" at {redact_url(hop)}" if hop != url else "")
                                + "; fix: check that the asset exists and the release is published (users get the same answer)",
                                status=response.status_code,
                            )
                        with contextlib.ExitStack() as files:
                            sink = files.enter_context(open(to, "wb")) if to is not None else None
                            for chunk in response.iter_raw():
                                digest.update(chunk)
                                if sink is not None:
                                    sink.write(chunk)
                                self.deadline.check("download", url)
                        return digest.hexdigest()
                except httpx.HTTPError as exc:
                    if self.deadline.expired:
                        raise self._download_deadline(url) from None
                    raise ReleaseAssetError(
                        f"cannot download {redact_url(url)}: {type(exc).__name__}; fix: check that GitHub's download "
                        "host answers, then re-run",
                        transient=True,
                    ) from None
                except DeadlineExceeded:
                    raise self._download_deadline(url) from None

    def _download_deadline(self, url: str) -> DeadlineExceeded:
        assert self.deadline is not None
        return DeadlineExceeded(
            f"download of {redact_url(url)} did not complete within the release's deadline "
            f"({self.deadline.at - self.deadline.started:.0f} s); fix: check the download host, or allow more time"
        )

    @staticmethod
    def _redirect(chain: list[str], location: str) -> str:
        return _redirect_target(
            chain,
            location,
            "download",
            limit=MAX_REDIRECTS,
            scheme_fix="check the API URL",
            loop_fix="check the download host, then re-run the release",
        )

    def prove(self, asset: Asset, sha256: str, *, as_user: bool = False) -> None:
        """The asset is the built file: GitHub's ``digest`` (when given) and the downloaded bytes both
        have ``sha256``; else VerificationError / HashMismatchError naming both digests."""
        if asset.digest is not None and asset.digest != sha256:
            raise VerificationError(
                f"GitHub records sha256 {asset.digest} for asset {asset.name}, the built file has {sha256}; "
                "fix: delete the asset and re-run the release"
            )
        served = self.download_sha256(asset, as_user=as_user)
        if served != sha256:
            where = "its download URL" if as_user else "the API"
            raise HashMismatchError(
                f"asset {asset.name} downloads from {where} with sha256 {served}, the built file has {sha256}"
                + (f" (and GitHub's digest says {asset.digest})" if asset.digest else "")
                + "; fix: delete the asset and re-run the release; if it persists, report it to GitHub"
            )

    def rollback(
        self, release: Release, uploaded: list[Asset], *, created: bool, published_by_run: bool = False
    ) -> list[str]:
        """Undo one run: delete the assets it uploaded, and the release when the run created it and it
        is still a draft (or the run itself published it: a check after publishing failed, and the
        release would stay empty); a draft the run found and published is made a draft again. Returns
        what was undone (names, then ``release TAG``)."""
        removed = [a.name for a in uploaded if self.delete_asset(a)]
        if not created and published_by_run:  # a draft found and published by this run: a draft again
            current = self.release_for_tag(release.tag_name)
            if current is not None and current.id == release.id and not current.draft:
                self._request("PATCH", f"{self._repo_url}/releases/{release.id}", json={"draft": True})
                removed.append(f"publication of release {release.tag_name} (a draft again)")
        if created:
            current = self.release_for_tag(release.tag_name)
            ours = current is not None and current.id == release.id and (current.draft or published_by_run)
            if ours and self.delete_release(release):
                removed.append(f"release {release.tag_name}")
        return removed


def _parsed(answer: httpx.Response | Any, url: object, what: str, make: Callable[[Any], T]) -> T:
    """``make`` applied to GitHub's JSON answer (a response, or one item of a listing); anything else
    (an HTML page, a payload without the keys the API documents) is one line naming the URL."""
    try:
        return make(answer.json() if isinstance(answer, httpx.Response) else answer)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ReleaseAssetError(
            f"{redact_url(str(url))} did not answer with {what} as GitHub's REST API does; fix: check the API URL "
            "(https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise)"
        ) from None


def _as_list(payload: Any) -> list[Any]:
    if not isinstance(payload, list):
        raise TypeError("not a list")
    return payload


def _content_type(name: str) -> str:
    return "text/html; charset=utf-8" if name.endswith(".html") else ACCEPT_BYTES


def _api_message(response: httpx.Response) -> str:
    """GitHub's own one-line explanation of an error answer, when it gives one."""
    try:
        payload = response.json()
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    message = str(payload.get("message") or "")
    codes = [e.get("code") for e in payload.get("errors") or [] if isinstance(e, dict) and e.get("code")]
    return " ".join((message + (f": {', '.join(map(str, codes))}" if codes else "")).split())[:200]


def _already_exists(response: httpx.Response) -> bool:
    try:
        payload = response.json()
    except ValueError:
        return False
    errors = payload.get("errors") if isinstance(payload, dict) else None
    return any(isinstance(e, dict) and e.get("code") == "already_exists" for e in errors or [])
