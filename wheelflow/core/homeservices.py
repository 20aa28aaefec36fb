"""What the home's background services share: the home's Prefect server (adapters/localserver.py) and
the home's embedded index (index/localindex.py) are started once, stop themselves after the same idle
timeout, are listed in per-user registries, and are stopped by their process group. Both layers use
these plain functions (the index layer may not import the adapters)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from wheelflow.core.errors import SpecError

DEFAULT_IDLE_TIMEOUT = 3 * 3600.0  # as Gradle's daemon: a working day keeps it, a forgotten checkout does not
POLL = 0.25  # how often a waiting command looks again (at a process, a lock)


def seconds_from_env(environ: Mapping[str, str], name: str, default: float, *, zero_ok: bool, fix: str) -> float:
    """A number of seconds from the environment variable ``name`` (``default`` when unset)."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if (not value >= 0) if zero_ok else value <= 0:
        kind = "a number of seconds" if zero_ok else "a positive number of seconds"
        raise SpecError(name, f"{raw!r} is not {kind}", fix)
    return value


def idle_timeout(environ: Mapping[str, str]) -> float:
    """``WHEELFLOW_SERVER_IDLE_TIMEOUT``: seconds without a request or work in progress after which the
    home's server and index stop themselves (``0``: never)."""
    return seconds_from_env(
        environ,
        "WHEELFLOW_SERVER_IDLE_TIMEOUT",
        DEFAULT_IDLE_TIMEOUT,
        zero_ok=True,
        fix="write e.g. 10800 (3 h), or 0 to keep the server running until `wheelflow server stop`",
    )


def registry_dir(environ: Mapping[str, str], kind: str = "servers") -> Path:
    """Where this user's running home services of ``kind`` (``servers``, ``indexes``) are listed:
    ``$XDG_RUNTIME_DIR/wheelflow/KIND`` (gone at logout, as they are), else ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    runtime = environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime:
        return Path(runtime) / "wheelflow" / kind
    cache = environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(cache) / "wheelflow" / kind


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: existing is all we can tell
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_group(pid: int, grace: float = 30.0, alive: Callable[[int], bool] = pid_alive) -> None:
    """SIGTERM to the process group led by ``pid``, SIGKILL after ``grace`` seconds while ``alive``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # our own child: reap it, or it stays a zombie
            time.sleep(POLL)  # polling for the process to exit, bounded by the grace period
        if not alive(pid):
            return


@contextlib.contextmanager
def flock_waiting(
    handle: IO[str],
    kind: int,
    timeout: float,
    too_long: Callable[[], Exception],
    *,
    poll: float = POLL,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """``kind`` (``fcntl.LOCK_EX`` or ``LOCK_SH``) on the open file ``handle``, held until the block ends.
    flock itself would wait forever, so it is polled: past ``timeout`` seconds, ``too_long()`` (one line
    saying who holds it and the fix) is raised; ``on_wait()`` is called once, when another holds it."""
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        try:
            fcntl.flock(handle.fileno(), kind | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise too_long() from None
            if on_wait is not None and not waiting:
                on_wait()
            waiting = True
            time.sleep(poll)  # polling a lock another process holds, bounded by the deadline
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
