"""One upload attempt through twine's API, in this process (:mod:`wheelflow.index.uploading` calls it).

twine's command line re-POSTs by itself on any 5xx (up to five times). That is the wrong reflex
when a 5xx can come after the index stored the file, so this makes exactly one attempt
(``max_redirects=1``) and leaves the decision (read the index, then retry with backoff) to
wheelflow. It used to run in a subprocess per file: about 2 s each on a busy 2-core machine (an
interpreter and twine's imports), 243.7 s of a 500-file release. In this process it costs the POST.
The credentials go to this one request only (no environment variable); twine's "Uploading ..." line
is kept off wheelflow's stdout.

An attempt ends by its deadline whatever the server does: requests' timeouts are per read, so an
index that accepts the POST and never answers, or answers one byte every few seconds, would hold it
for as long as it likes. The POST runs in a thread of its own; when the deadline passes or the run
is asked to stop (:mod:`wheelflow.core.cancel`), its sockets are shut, which ends it.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import twine.repository
from twine.package import PackageFile
from twine.repository import Repository
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from wheelflow.core import cancel
from wheelflow.core.deadline import Deadline

# twine prints "Uploading FILE" with rich's print on stdout (which would break --json) and logs the
# username at INFO: neither belongs in wheelflow's output.
twine.repository.print = lambda *args, **kwargs: None  # type: ignore[attr-defined]
logging.getLogger("twine").setLevel(logging.WARNING)


class NotPrepared(Exception):
    """twine could not read the file or its metadata: nothing was sent."""


#: After its sockets are shut, how long an attempt's thread is given to notice (it does at once).
_LET_GO = 5.0


def upload_once(path: Path, upload_url: str, username: str, password: str, timeout: float) -> dict[str, Any]:
    """POST one file once, within ``timeout`` seconds in all; the index's answer as
    ``{"status", "reason", "text", "deadline"}`` (status None: no answer; deadline True: the time ran out)."""
    try:
        package = PackageFile.from_filename(str(path), comment=None)
    except Exception as exc:  # twine's InvalidDistribution, a zip that does not open, an unreadable file
        raise NotPrepared(f"{type(exc).__name__}: {exc}") from None
    deadline = Deadline.after(timeout)
    repository = Repository(upload_url, username, password, disable_progress_bar=True)
    sockets = _track_sockets(repository.session)
    # a read timeout longer than the deadline: the deadline is what ends a silent server
    repository.session.request = functools.partial(repository.session.request, timeout=timeout + _LET_GO)  # type: ignore[method-assign]
    outcome: dict[str, Any] = {}
    ended = threading.Event()

    def attempt() -> None:
        try:
            response = repository.upload(package, max_redirects=1)
            outcome.update(status=response.status_code, reason=response.reason or "", text=response.text[:500])
        except requests.RequestException as exc:
            outcome.update(status=None, reason=type(exc).__name__, text="")
        except Exception as exc:  # a socket shut under it can surface as anything
            outcome.update(status=None, reason=type(exc).__name__, text="")
        finally:
            ended.set()

    worker = threading.Thread(target=attempt, name=f"upload {path.name}", daemon=True)
    try:
        with cancel.on_stop(ended.set):  # a stop request wakes the wait below at once
            worker.start()
            ended.wait(deadline.remaining())
            if worker.is_alive():  # the deadline passed, or the run is stopping: end the attempt
                sockets.shut()
                worker.join(_LET_GO)
                stopped = cancel.requested()
                reason = (
                    f"stopped: {stopped}"
                    if stopped
                    else f"no complete answer within the upload deadline ({_seconds(timeout)} s)"
                )
                return {"status": None, "reason": reason, "text": "", "deadline": not stopped}
        return {**outcome, "deadline": False}
    finally:
        repository.close()


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:g}"


class _Sockets:
    """The sockets an attempt's session opened, to shut from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._shut = False

    def add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._open.append(sock)
            if self._shut:  # connected after the deadline: shut it too
                _shutdown(sock)

    def shut(self) -> None:
        with self._lock:
            self._shut = True
            for sock in self._open:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:  # a blocked send or receive in the attempt's thread returns at once
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _track_sockets(session: requests.Session) -> _Sockets:
    """Make every connection ``session`` opens report its socket (twine's adapters and retries are kept)."""
    sockets = _Sockets()

    def tracked(base: type[HTTPConnection]) -> type[HTTPConnection]:
        def connect(self: HTTPConnection) -> None:
            base.connect(self)
            sockets.add(getattr(self, "sock", None))

        return type(f"Tracked{base.__name__}", (base,), {"connect": connect})

    pools: dict[str, Callable[..., Any]] = {
        "http": type("TrackedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": tracked(HTTPConnection)}),
        "https": type(
            "TrackedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": tracked(HTTPSConnection)}
        ),
    }
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        if manager is not None:
            manager.pool_classes_by_scheme = pools
    return sockets
