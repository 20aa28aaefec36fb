"""Read an index the way pip does: the Simple API, PEP 691 JSON when offered, PEP 503 HTML otherwise.

An index is input we do not control: every answer is read within a total deadline, bounded in
size, and validated before any of it is used. Whatever is wrong with it becomes one
``IndexReadError`` line that names the URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx
from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wheelflow.core.deadline import Deadline
from wheelflow.core.errors import IndexReadError, IndexRedirectError, MalformedListingError
from wheelflow.core.redaction import redact_url

JSON_V1 = "application/vnd.pypi.simple.v1+json"
#: How long one socket read of an index may wait: slower answers count as no answer (retried by the caller).
READ_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Total time for one listing or one download when the caller gives no deadline of its own.
LISTING_DEADLINE = 120.0
DOWNLOAD_DEADLINE = 1800.0
#: The largest listing read: the biggest real project pages are a few MiB; more is refused unread.
MAX_LISTING_BYTES = 64 * 2**20
# pip's own preference order (PEP 691): JSON, then the versioned HTML, then legacy HTML.
ACCEPT = f"{JSON_V1}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
#: Redirects followed for one read (pip's own client follows up to 30; real indexes use one or two).
MAX_REDIRECTS = 10
#: Listing entries handled between two looks at the deadline while parsing and filtering.
DEADLINE_STRIDE = 2000
#: HTML fed to the parser between two looks at the deadline.
HTML_CHUNK = 256 * 2**10
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_FIX = "fix: check the index URL; the index answers with a broken listing"


@dataclass(frozen=True)
class ServedFile:
    filename: str
    url: str
    sha256: str | None
    upload_time: str | None = None  # PEP 700, where the index provides it
    yanked: bool = False  # PEP 592: installers skip it unless pinned exactly; never "verified"
    yanked_reason: str = ""  # the reason the index gives, if any (one line, shortened)


def inherited_from(simple_url: str, file_url: str) -> str | None:
    """The index a listed file lives in when that is not the index read: devpi lists the files of
    its ``bases`` beside its own, each under its own index's path (``/root/pypi/+f/...``); None for
    the index's own files and for indexes that inherit nothing."""
    path = urlsplit(file_url).path
    if "/+f/" not in path:
        return None
    home = path.split("/+f/", 1)[0].rstrip("/")
    own = urlsplit(simple_url).path.rstrip("/").removesuffix("/+simple")
    return None if home == own else home.lstrip("/")


def project_url(simple_url: str, name: str) -> str:
    """The project page: ``{simple_url}/{normalised name}/`` (PEP 503)."""
    return simple_url.rstrip("/") + "/" + canonicalize_name(name) + "/"


class _JsonMeta(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=False)
    api_version: str = Field(alias="api-version")


class _JsonFile(BaseModel):
    # PEP 691 / 700 / 714 types; keys this module does not use are ignored, not trusted.
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=False)
    filename: str
    url: str
    hashes: dict[str, str]
    yanked: bool | str = False
    upload_time: str | None = Field(None, alias="upload-time")


class _JsonPage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=False)
    meta: _JsonMeta
    name: str
    files: list[_JsonFile]


def _malformed(page_url: str, form: Literal["PEP 691 JSON", "PEP 503 HTML"], problem: str) -> MalformedListingError:
    return MalformedListingError(f"{redact_url(page_url)} is not a valid {form} listing: {problem}; {_FIX}")


def _validation_problem(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the top level"
    return f"{where}: {first['msg']}" + (f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else "")


def plain_filename(name: str, page_url: str, form: Literal["PEP 691 JSON", "PEP 503 HTML"]) -> str:
    """``name`` if it is a bare file name; a listed name may later name a local file, so it never
    carries a directory part, a dot-only name or a control character."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise _malformed(page_url, form, f"file name {name!r} is not a plain file name")
    return name


def _file_url(href: str, page_url: str, form: Literal["PEP 691 JSON", "PEP 503 HTML"]) -> str:
    url = urljoin(page_url, href)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() or ord(c) < 32 for c in url):
        raise _malformed(page_url, form, f"file URL {redact_url(href)!r} is not an http(s) URL")
    return url


def _sha256(
    value: str | None, filename: str, page_url: str, form: Literal["PEP 691 JSON", "PEP 503 HTML"]
) -> str | None:
    """Hex digests compare case-insensitively: listings may spell them in capitals."""
    if value is None:
        return None
    if not _SHA256.fullmatch(value):
        raise _malformed(page_url, form, f"{filename}: sha256 {value[:80]!r} is not 64 hex digits")
    return value.lower()


def _json_kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "null"
    )


class _JsonHead(BaseModel):
    """The page without its files: the files are validated one by one, so the deadline is checked between them."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=False)
    meta: _JsonMeta
    name: str
    files: list[Any]


def parse_json_page(payload: Any, page_url: str, deadline: Deadline | None = None) -> list[ServedFile]:
    form: Literal["PEP 691 JSON"] = "PEP 691 JSON"
    if not isinstance(payload, dict):
        raise _malformed(page_url, form, f"the top level is {_json_kind(payload)}, not an object")
    try:
        head = _JsonHead.model_validate(payload)
    except ValidationError as exc:
        raise _malformed(page_url, form, _validation_problem(exc)) from None
    if head.meta.api_version.split(".")[0] != "1":
        raise _malformed(page_url, form, f"meta.api-version {head.meta.api_version!r} is not 1.x")
    files = []
    for i, raw in enumerate(head.files):
        if deadline is not None and i % DEADLINE_STRIDE == 0:
            deadline.check("read", page_url)
        try:
            entry = _JsonFile.model_validate(raw)
        except ValidationError as exc:
            raise _malformed(page_url, form, f"files.{i}.{_validation_problem(exc)}") from None
        filename = plain_filename(entry.filename, page_url, form)
        files.append(
            ServedFile(
                filename=filename,
                url=_file_url(entry.url, page_url, form),
                sha256=_sha256(entry.hashes.get("sha256"), filename, page_url, form),
                upload_time=entry.upload_time,
                yanked=entry.yanked is not False,  # a string is the reason it was yanked
                yanked_reason=_reason(entry.yanked),
            )
        )
    return unique_files(files, page_url, deadline)


def _reason(yanked: object) -> str:
    """A yank's reason as one short line (it is the index's text, shown to the user)."""
    return " ".join(yanked.split())[:200] if isinstance(yanked, str) else ""


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def parse_html_page(text: str, page_url: str, deadline: Deadline | None = None) -> list[ServedFile]:
    form: Literal["PEP 503 HTML"] = "PEP 503 HTML"
    parser = _AnchorParser()
    for start in range(0, len(text), HTML_CHUNK):  # fed in pieces: the deadline is checked between them
        if deadline is not None:
            deadline.check("read", page_url)
        parser.feed(text[start : start + HTML_CHUNK])
    parser.close()
    files = []
    for i, (attrs, label) in enumerate(parser.anchors):
        if deadline is not None and i % DEADLINE_STRIDE == 0:
            deadline.check("read", page_url)
        href = attrs.get("href")
        if not href:
            continue
        parts = urlsplit(_file_url(href, page_url, form))
        filename = plain_filename(unquote(parts.path.rsplit("/", 1)[-1]) or label, page_url, form)
        sha256 = parts.fragment[len("sha256=") :] if parts.fragment.startswith("sha256=") else None
        files.append(
            ServedFile(
                filename=filename,
                url=urlunsplit(parts._replace(fragment="")),
                sha256=_sha256(sha256, filename, page_url, form),
                yanked="data-yanked" in attrs,
                yanked_reason=_reason(attrs.get("data-yanked")),
            )
        )
    return unique_files(files, page_url, deadline)


def unique_files(files: list[ServedFile], page_url: str, deadline: Deadline | None = None) -> list[ServedFile]:
    """Each file once. A file listed twice with different sha256 is an index contradicting itself:
    which bytes pip gets would depend on which link it picks, so it is refused naming both."""
    by_name: dict[str, ServedFile] = {}
    for i, served in enumerate(files):
        if deadline is not None and i % DEADLINE_STRIDE == 0:
            deadline.check("read", page_url)
        seen = by_name.get(served.filename)
        if seen is None or (seen.sha256 is None and served.sha256 is not None):
            by_name[served.filename] = served
        elif served.sha256 is not None and served.sha256 != seen.sha256:
            raise MalformedListingError(
                f"{redact_url(page_url)} lists {served.filename} twice with different sha256: {seen.sha256} "
                f"(at {redact_url(seen.url)}) and {served.sha256} (at {redact_url(served.url)}); "
                "fix: the index contradicts itself: remove the wrong copy from the index"
            )
    return list(by_name.values())


def parse_listing(body: bytes, content_type: str, page_url: str, deadline: Deadline | None = None) -> list[ServedFile]:
    """A project page's files, from its body and media type (the JSON form when the index chose it);
    the deadline, when given, is checked all along the parsing."""
    if deadline is not None:
        deadline.check("read", page_url)
    if content_type == JSON_V1:
        try:
            payload = json.loads(body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
            raise _malformed(page_url, "PEP 691 JSON", f"not JSON ({str(exc).splitlines()[0]})") from None
        except RecursionError:
            raise _malformed(page_url, "PEP 691 JSON", "nested too deeply to be a listing") from None
        return parse_json_page(payload, page_url, deadline)
    return parse_html_page(body.decode("utf-8", errors="replace"), page_url, deadline)


class _Watchdog:
    """Shuts a request's socket down when its deadline passes.

    A read blocked on a server that drips its headers one byte at a time wakes up at once, rather
    than at the next byte. Our requests ask for ``Connection: close`` so that each opens its own
    connection, whose socket the trace hook sees; on a reused connection only the chunk checks and
    the capped socket timeouts bound the read.
    """

    def __init__(self, deadline: Deadline) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._fired = False
        self.location: str | None = None  # the last answer's Location header, as sent
        self._timer = threading.Timer(deadline.remaining(), self._fire)
        self._timer.daemon = True

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith(".receive_response_headers.complete") and info.get("return_value"):
            # httpcore's (http_version, status, reason, headers): the headers are the list of pairs.
            headers = next((part for part in info["return_value"] if isinstance(part, list)), [])
            found = [v for k, v in headers if bytes(k).lower() == b"location"]
            self.location = bytes(found[0]).decode("latin-1") if found else None
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete") and info.get("return_value"):
            with self._lock:
                self._socket = info["return_value"].get_extra_info("socket")
                if self._fired:
                    self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _timeout_within(deadline: Deadline) -> httpx.Timeout:
    left = max(deadline.remaining(), 0.001)
    return httpx.Timeout(min(READ_TIMEOUT.read or left, left), connect=min(READ_TIMEOUT.connect or left, left))


@contextlib.contextmanager
def _get(
    client: httpx.Client, url: str, deadline: Deadline, action: str, headers: dict[str, str]
) -> Iterator[httpx.Response]:
    """A streamed GET of ``url`` bounded by ``deadline``; network failures become one IndexReadError line.

    Redirects are followed here, each target checked: a loop, more than :data:`MAX_REDIRECTS`, or a
    target that is not http(s) (``file://``) is an IndexRedirectError, never retried."""
    deadline.check(action, url)
    headers = {"Connection": "close", **headers}
    chain = [url]
    with _Watchdog(deadline) as watchdog:
        try:
            while True:
                with client.stream(
                    "GET",
                    chain[-1],
                    headers=headers,
                    follow_redirects=False,
                    timeout=_timeout_within(deadline),
                    extensions={"trace": watchdog.trace},
                ) as response:
                    location = response.headers.get("location") if response.is_redirect else None
                    if location is None:
                        yield response
                        return
                chain.append(_redirect_target(chain, location, action))
        except httpx.InvalidURL:
            # httpx builds the next request before we see the answer: a Location it cannot parse
            # (javascript:alert(1)) ends here; the trace kept what the index sent.
            _redirect_target(chain, watchdog.location or "an unparseable URL", action)
            raise  # unreachable: a Location httpx cannot parse is never an http(s) URL
        except httpx.HTTPError as exc:
            if deadline.expired:
                raise deadline.exceeded(action, url) from None
            raise IndexReadError(
                f"cannot {action} {redact_url(url)}: {type(exc).__name__}; fix: check that the index is up"
            ) from None


def _redirect_target(
    chain: list[str],
    location: str,
    action: str,
    *,
    limit: int = MAX_REDIRECTS,
    scheme_fix: str = "check the index URL (an index never sends a client elsewhere than http(s))",
    loop_fix: str = "check the index URL",
) -> str:
    """Where a redirect leads, checked: http(s), not seen before in this read, within ``limit``.
    The fixes name what the caller's user can change (an index URL, GitHub's API URL or download host)."""
    target = urljoin(chain[-1], location.strip())
    parts = urlsplit(target)
    first = redact_url(chain[0])
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise IndexRedirectError(
            f"cannot {action} {first}: it redirects to {redact_url(target)!r}, not an http(s) URL; fix: {scheme_fix}"
        )
    if target in chain:
        loop = " → ".join(redact_url(u) for u in chain[chain.index(target) :] + [target])
        raise IndexRedirectError(f"cannot {action} {first}: it redirects in a loop ({loop}); fix: {loop_fix}")
    if len(chain) > limit:
        raise IndexRedirectError(
            f"cannot {action} {first}: more than {limit} redirects (last to {redact_url(target)}); fix: {loop_fix}"
        )
    return target


def _read_listing_body(response: httpx.Response, url: str, deadline: Deadline) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_LISTING_BYTES:
        raise MalformedListingError(
            f"{redact_url(url)} is {int(declared)} bytes long, more than the "
            f"{MAX_LISTING_BYTES // 2**20} MiB a listing may have; {_FIX}"
        )
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_LISTING_BYTES:
            raise MalformedListingError(
                f"{redact_url(url)} sent more than the {MAX_LISTING_BYTES // 2**20} MiB a listing may have; {_FIX}"
            )
        deadline.check("read", url)
    return bytes(body)


def list_project_files(
    client: httpx.Client, simple_url: str, name: str, *, deadline: Deadline | None = None
) -> list[ServedFile]:
    """Every file the index lists for ``name``; an unknown project lists nothing.

    The read ends by ``deadline`` (else the current one, else LISTING_DEADLINE from now). Raises
    IndexReadError: transient when the index does not answer, answers 5xx or is too slow;
    MalformedListingError (not transient) when the listing is invalid, too large or contradicts itself.
    """
    url = project_url(simple_url, name)
    deadline = Deadline.for_read(deadline, LISTING_DEADLINE)
    with _get(client, url, deadline, "read", {"Accept": ACCEPT}) as response:
        if response.status_code == 404:
            return []
        if response.status_code >= 400:
            raise IndexReadError(f"{redact_url(url)} answered HTTP {response.status_code}")
        body = _read_listing_body(response, url, deadline)
        page_url = str(response.url)
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
    return parse_listing(body, content_type, page_url, deadline)


def files_for_version(
    files: list[ServedFile], name: str, version: str, deadline: Deadline | None = None, page_url: str = ""
) -> list[ServedFile]:
    """The listed files of this project and version; a version without a local label also selects
    its variant wheels (1.0 selects 1.0+cu130), as ``pip install name==1.0`` would. The deadline,
    when given, is checked along the way (a listing of 200,000 files takes a while to filter)."""
    from packaging.version import Version

    from wheelflow.core.distributions import parse_filename  # local import: distributions imports this module's types

    wanted_name, wanted = canonicalize_name(name), Version(version)
    selected = []
    for i, served in enumerate(files):
        if deadline is not None and i % DEADLINE_STRIDE == 0:
            deadline.check("read", page_url or served.url)
        parsed = parse_filename(served.filename)
        if parsed is None or parsed[0] != wanted_name:
            continue
        if parsed[1] == wanted or (not wanted.local and parsed[1].public == wanted.public):
            selected.append(served)
    return selected


def download_sha256(
    client: httpx.Client,
    url: str,
    *,
    deadline: Deadline | None = None,
    log: Callable[[str], None] | None = None,
    to: Path | None = None,
) -> str:
    """sha256 of the bytes the index serves at ``url``, hashed as they stream in (never held whole),
    and written to ``to`` when given.

    Ends by ``deadline`` (else the current one, else DOWNLOAD_DEADLINE from now); ``log`` hears the
    size and rate.
    """
    deadline = Deadline.for_read(deadline, DOWNLOAD_DEADLINE)
    digest, size, started = hashlib.sha256(), 0, deadline.clock()
    # As pip downloads: the bytes as stored, never a transfer encoding's decoding of them.
    with _get(client, url, deadline, "download", {"Accept-Encoding": "identity"}) as response:
        if response.status_code >= 400:
            raise IndexReadError(
                f"cannot download {redact_url(url)}: HTTP {response.status_code}; "
                "fix: check that the index serves the files it lists"
            )
        with contextlib.ExitStack() as files:
            sink = files.enter_context(open(to, "wb")) if to is not None else None
            for chunk in response.iter_raw():
                digest.update(chunk)
                size += len(chunk)
                if sink is not None:
                    sink.write(chunk)
                deadline.check("download", url)
    if log is not None:
        seconds = max(deadline.clock() - started, 1e-6)
        log(
            f"downloaded {redact_url(url).rsplit('/', 1)[-1]}: {size / 1e6:.1f} MB in {seconds:.1f} s "
            f"({size / seconds / 1e6:.1f} MB/s)"
        )
    return digest.hexdigest()


def read_served(
    client: httpx.Client, simple_url: str, name: str, version: str, *, deadline: Deadline | None = None
) -> list[ServedFile]:
    """This version's files on the index, each with its sha256 (downloaded when the listing has none)."""
    listed = list_project_files(client, simple_url, name, deadline=deadline)
    filtering = Deadline.for_read(deadline, LISTING_DEADLINE)
    files = files_for_version(listed, name, version, filtering, project_url(simple_url, name))
    return [
        f
        if f.sha256
        else ServedFile(
            f.filename,
            f.url,
            download_sha256(client, f.url, deadline=deadline),
            f.upload_time,
            f.yanked,
            f.yanked_reason,
        )
        for f in files
    ]
