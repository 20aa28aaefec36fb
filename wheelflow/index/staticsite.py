"""A static index as a release target: where it is written and read, what it already lists, and the
embedded one that ``--to static-demo`` (or ``store-url = "local"``) writes under $WHEELFLOW_HOME and
serves on loopback while the release runs.

The pages themselves are written by :mod:`wheelflow.index.staticindex`; this module only knows targets.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from wheelflow.config.spec import LOCAL_STORE, Target
from wheelflow.core.credentials import secret_block_value
from wheelflow.core.errors import CredentialsError
from wheelflow.index.indexes import PRIVATE_VERIFY_TIMEOUT, Endpoints
from wheelflow.index.simple_api import ServedFile, read_served
from wheelflow.index.staticindex import join_url, store_location, subindex_for

EMBEDDED_DIR = "static"  # $WHEELFLOW_HOME/static: the embedded static index's store


@dataclass(frozen=True)
class StaticSite:
    """A static target as one release run sees it (no credentials: they are read where they are used)."""

    name: str
    store_url: str
    public_url: str
    layout: str
    shared_files: str
    verify_timeout: float

    def simple_url(self, subindex: str = "") -> str:
        """What installers pass as ``--index-url`` for a sub-index ("" is the root index)."""
        return join_url(self.public_url, subindex) + "/"

    @property
    def lock_name(self) -> str:
        """One writer per store at a time: every project on a store shares its root page. Keyed by the
        store's one location (:func:`store_location`), never by how this spec spells its URL: two
        spellings of one store are one lock. A digest, because Prefect's names refuse '/'."""
        return "static-index:" + hashlib.sha256(store_location(self.store_url).encode()).hexdigest()[:16]

    def endpoints(self) -> Endpoints:
        """The root index as a read-only index (nothing is uploaded to a static target)."""
        return Endpoints(self.name, self.simple_url(), None, False, self.verify_timeout)

    def subindex_endpoints(self, subindex: str) -> Endpoints:
        return Endpoints(
            f"{self.name}/{subindex}" if subindex else self.name,
            self.simple_url(subindex),
            None,
            False,
            self.verify_timeout,
        )


def storage_options_for(target: Target, read_secret: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """The store's fsspec options: the spec's (never secret) plus, with ``credentials = "prefect-secret:BLOCK"``,
    the block's JSON object (e.g. ``{"key": ..., "secret": ...}`` for s3fs). With "env" or "none" fsspec reads
    its own environment (s3fs: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL...)."""
    options = dict(target.storage_options)
    if not target.credentials.startswith("prefect-secret:"):
        return options
    block = target.credentials.split(":", 1)[1]
    value = secret_block_value(block, f"target {target.name!r}", 'credentials = "env" (AWS_* variables)', read_secret)
    if not isinstance(value, Mapping):
        raise CredentialsError(
            f"target {target.name!r}: Secret block {block!r} must hold a JSON object of storage "
            'options, e.g. {"key": ..., "secret": ...}; fix: store it in that form'
        )
    return {**options, **value}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the release log is not an access log

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")  # a page read right after its write is the new one
        super().end_headers()


class EmbeddedStaticServer:
    """A directory served over HTTP on loopback (``dir/`` answers ``dir/index.html``), in a thread of
    this process, like the embedded pypiserver: it runs while the release (or the caller) holds it."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> EmbeddedStaticServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="wheelflow-static-index", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)


def embedded_store(home: Path) -> Path:
    return home / EMBEDDED_DIR


@contextlib.contextmanager
def open_static(target: Target, home: Path) -> Iterator[StaticSite]:
    """The static target's site; the embedded one is served on loopback while this is open."""
    timeout = target.verify_timeout or PRIVATE_VERIFY_TIMEOUT
    if target.store_url == LOCAL_STORE:
        store = embedded_store(home)
        with EmbeddedStaticServer(store) as server:
            yield StaticSite(target.name, store.as_uri(), server.url, target.layout, target.shared_files, timeout)
        return
    assert target.store_url is not None and target.public_url is not None  # the spec requires both
    yield StaticSite(target.name, target.store_url, target.public_url, target.layout, target.shared_files, timeout)


def home_subindex(site: StaticSite, filename: str) -> str:
    """The sub-index that always lists ``filename``: its variant's, or the root for shared files."""
    return subindex_for(filename, site.layout)


def read_listed(
    client: httpx.Client, site: StaticSite, name: str, version: str, filenames: list[str]
) -> list[ServedFile]:
    """What the site lists of ``filenames``, each read from its home sub-index, at the public URL."""
    wanted = set(filenames)
    found: list[ServedFile] = []
    for subindex in sorted({home_subindex(site, f) for f in filenames}):
        found += [
            s
            for s in read_served(client, site.simple_url(subindex), name, version)
            if s.filename in wanted and home_subindex(site, s.filename) == subindex
        ]
    return found
