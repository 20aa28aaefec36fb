"""The embedded local index: a pypiserver that wheelflow runs under $WHEELFLOW_HOME.

It lives like the home's Prefect server (:mod:`wheelflow.adapters.localserver`): the first command that
needs it starts it in the background, later commands reuse it, and the install command in a release's
report keeps working after the run. The same watchdog runs it (``python -m
wheelflow.adapters.serverwatch --service index``, started as a program: this layer imports nothing
above it), so it stops itself after ``WHEELFLOW_SERVER_IDLE_TIMEOUT`` seconds (default 3 h, ``0`` =
never) without a request or a command using it, and when its home is deleted; the next command
starts it again on the same port. Its state sits beside the packages: ``index/server.json`` (the
watchdog's PID and the port), ``index/server.port`` (the port of the last one), ``index/server.lock``
(two commands start one index) and ``index/in-use.lock`` (a shared lock each command using it holds:
an idle index is not stopped under a release). ``wheelflow server status|stop`` shows and stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import httpx

from wheelflow.config.spec import IndexTarget
from wheelflow.core import cancel, homeservices
from wheelflow.core.childenv import child_env
from wheelflow.core.credentials import Credentials
from wheelflow.core.errors import ServerUnavailable
from wheelflow.core.home import wheelflow_home
from wheelflow.core.homeservices import idle_timeout, kill_group, port_free
from wheelflow.core.redaction import register_secret
from wheelflow.index.indexes import (
    PRIVATE_VERIFY_TIMEOUT,
    Endpoints,
    endpoints_for_target,
    load_credentials,
    resolve_endpoints,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: ``pypi-server`` with direct lookups for a download and an upload's check (wheelflow.index.freshdir):
#: pypiserver's own walk of the whole folder per request made a 2,000-file release spend minutes there.
FRESH_DIR_PYPISERVER = (sys.executable, "-m", "wheelflow.index.freshdir")


def pypiserver_command(packages: Path, htpasswd: Path | None, port: int, *, log_requests: bool = False) -> list[str]:
    """``pypi-server run`` on loopback. ``log_requests``: one line per request, shaped as uvicorn's
    access lines (``"GET /simple/ HTTP/1.1"``), which is what the watchdog counts as use."""
    auth = ["-P", str(htpasswd), "-a", "update"] if htpasswd else ["-P", ".", "-a", "."]
    access = (
        [
            "-v",
            "--log-req-frmt",
            '"%(REQUEST_METHOD)s %(PATH_INFO)s %(SERVER_PROTOCOL)s"',
            "--log-res-frmt",
            "wheelflow-response %(status)s",
        ]
        if log_requests
        else []
    )
    return [
        *FRESH_DIR_PYPISERVER,
        "run",
        "-p",
        str(port),
        "-i",
        "127.0.0.1",
        *auth,
        *access,
        # simple-dir re-reads the directory on every request: what is on disk is what is served.
        "--backend",
        "simple-dir",
        "--disable-fallback",
        "--hash-algo",
        "sha256",
        str(packages),
    ]


def ensure_htpasswd(path: Path, username: str, password: str) -> None:
    from passlib.apache import HtpasswdFile

    htpasswd = HtpasswdFile(str(path), new=not path.exists())
    if not htpasswd.check_password(username, password):
        htpasswd.set_password(username, password)
        htpasswd.save()


class PypiServer:
    """A pypiserver process on loopback, with htpasswd-protected uploads. Used as a context manager."""

    def __init__(
        self, packages: Path, htpasswd: Path | None = None, *, port: int | None = None, log_file: Path | None = None
    ) -> None:
        self.packages = packages
        self.htpasswd = htpasswd
        self.port = port or free_port()
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def simple_url(self) -> str:
        return self.url + "simple/"

    def start(self, timeout: float = 30.0) -> PypiServer:
        self.packages.mkdir(parents=True, exist_ok=True)
        cmd = pypiserver_command(self.packages, self.htpasswd, self.port)
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env())
        cancel.spare(self._proc.pid)  # a cancelled release's rollback still reads and removes through it
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pypiserver exited with code {self._proc.returncode}; see {self.log_file}")
            try:
                if httpx.get(self.url + "health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pypiserver did not answer on {self.url} within {timeout:.0f} s")
            time.sleep(delay)  # polling a starting process: there is nothing to wait on but the socket
            delay = min(delay * 2, 0.5)

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc:
            cancel.unspare(self._proc.pid)
        self._proc = None

    def __enter__(self) -> PypiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the home's index, kept running -------------------------------------------------------------

WATCHDOG_MODULE = "wheelflow.adapters.serverwatch"
IN_USE_LOCK = "in-use.lock"  # the watchdog's name for it too (serverwatch.IN_USE_LOCK)
START_TIMEOUT = 120.0  # pypiserver answers within a second or two; minutes while builds keep the cores busy
POLL = 0.1


def registry_dir(environ: Mapping[str, str]) -> Path:
    """Where this user's running home indexes are listed, beside the home servers' registry."""
    return homeservices.registry_dir(environ, "indexes")


@dataclass(frozen=True)
class IndexState:
    """What ``index/server.json`` records: the watchdog's PID (leader of its process group) and the port."""

    pid: int
    port: int
    started_at: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def simple_url(self) -> str:
        return self.url + "simple/"


def read_index_state(folder: Path) -> IndexState | None:
    try:
        data = json.loads((folder / "server.json").read_text())
        return IndexState(pid=int(data["pid"]), port=int(data["port"]), started_at=float(data["started_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_index_state(folder: Path, state: IndexState) -> None:
    tmp = folder / "server.json.tmp"
    tmp.write_text(json.dumps({"pid": state.pid, "port": state.port, "started_at": state.started_at}))
    tmp.replace(folder / "server.json")


def _forget_index_state(folder: Path) -> None:
    (folder / "server.json").unlink(missing_ok=True)


def is_index_watchdog(pid: int) -> bool:
    """The PID runs the index's watchdog (not a program that was given a reused PID), and is no zombie."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[0] == "Z":
        return False
    return WATCHDOG_MODULE.encode() in argv and b"--service" in argv and b"index" in argv


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _flock(path: Path, kind: int, timeout: float, what: str) -> Iterator[TextIO]:
    """``kind`` (LOCK_SH, LOCK_EX) on ``path``, waiting up to ``timeout`` s; held until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def too_long() -> ServerUnavailable:
        return ServerUnavailable(
            f"the local index under {path.parent} is busy ({what}) for more than {timeout:.0f} s",
            "run the command again, or `wheelflow server stop` and run it again",
        )

    with open(path, "a") as handle, homeservices.flock_waiting(handle, kind, timeout, too_long, poll=POLL):
        yield handle


def ensure_index(home: Path, htpasswd: Path, *, timeout: float = START_TIMEOUT) -> IndexState:
    """The home's index, answering: reused when it runs, started (once, under the lock) when not."""
    folder = home / "index"
    state = read_index_state(folder)
    if state is not None and is_index_watchdog(state.pid) and _answers(state.url):
        return state
    deadline = time.monotonic() + timeout
    with _flock(folder / "server.lock", fcntl.LOCK_EX, timeout, "another command is starting it"):
        state = read_index_state(folder)
        if state is not None and is_index_watchdog(state.pid):
            return _wait_until_answering(state, folder, deadline)
        _forget_index_state(folder)
        port = _last_port(folder)
        port = port if port is not None and port_free(port) else free_port()
        command = [
            *(sys.executable, "-m", WATCHDOG_MODULE, "--home", str(home)),
            *("--port", str(port), "--idle-timeout", f"{idle_timeout(os.environ):g}"),
            *("--registry", str(registry_dir(os.environ)), "--service", "index", "--"),
            *pypiserver_command(folder / "packages", htpasswd, port, log_requests=True),
        ]
        (folder / "packages").mkdir(parents=True, exist_ok=True)
        with open(folder / "pypiserver.log", "ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=folder,
                env=child_env(pass_env=["PYTHONPATH"]),  # the watchdog imports this very wheelflow
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this command; Ctrl-C in the terminal does not reach it
            )
        cancel.spare(proc.pid)  # a cancelled release does not stop the home's index
        state = IndexState(proc.pid, port, time.time())
        _write_index_state(folder, state)
        (folder / "server.port").write_text(str(port))
        return _wait_until_answering(state, folder, deadline, proc)


def _last_port(folder: Path) -> int | None:
    try:
        return int((folder / "server.port").read_text())
    except (OSError, ValueError):
        return None


def _wait_until_answering(
    state: IndexState, folder: Path, deadline: float, proc: subprocess.Popen[bytes] | None = None
) -> IndexState:
    while not _answers(state.url):
        exited = proc.poll() is not None if proc is not None else not is_index_watchdog(state.pid)
        if exited:
            _forget_index_state(folder)
            raise ServerUnavailable(
                f"the local index (pid {state.pid}, port {state.port}) exited before it answered",
                f"read its log {folder / 'pypiserver.log'}, then run the command again",
            )
        if time.monotonic() >= deadline:
            raise ServerUnavailable(
                f"the local index (pid {state.pid}, port {state.port}) did not answer in time",
                f"run the command again when the machine is less busy; its log: {folder / 'pypiserver.log'}",
            )
        time.sleep(POLL)  # polling a starting process: there is nothing to wait on but the socket
    return state


def index_status(home: Path) -> dict[str, object]:
    """What ``wheelflow server status`` shows about the home's index."""
    folder = home / "index"
    state = read_index_state(folder)
    info: dict[str, object] = {"status": "stopped", "home": str(home), "log": str(folder / "pypiserver.log")}
    if state is not None and is_index_watchdog(state.pid):
        info.update(
            status="running" if _answers(state.url) else "starting",
            pid=state.pid,
            port=state.port,
            simple_url=state.simple_url,
        )
    return info


def stop_index(home: Path, grace: float = 30.0) -> dict[str, object]:
    """Stop the home's index (SIGTERM to its process group, SIGKILL after ``grace`` s); its port is kept
    for the next start. Says what it stopped (``pid``, ``port``)."""
    folder = home / "index"
    state = read_index_state(folder)
    info: dict[str, object] = {"status": "stopped", "home": str(home)}
    if state is not None and is_index_watchdog(state.pid):
        kill_index_group(state.pid, grace)
        info.update(pid=state.pid, port=state.port)
    if state is not None:
        with contextlib.suppress(OSError):
            (folder / "server.port").write_text(str(state.port))
        _forget_index_state(folder)
    return info


def kill_index_group(pid: int, grace: float = 30.0) -> None:
    kill_group(pid, grace, alive=is_index_watchdog)


class LocalIndex:
    """The embedded index: ``$WHEELFLOW_HOME/index/packages`` served by the home's pypiserver, which
    stays up after the command (see the module's docstring). While open, the command holds it in use."""

    USERNAME = "wheelflow"

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or wheelflow_home()
        self.root = self.home / "index"
        self.packages = self.root / "packages"
        self._in_use: contextlib.ExitStack | None = None

    def credentials(self) -> Credentials:
        # A random password per home, kept 0600 beside the index: uploads need auth even on loopback.
        path = self.root / "credentials.json"
        if path.exists():
            password = json.loads(path.read_text())["password"]
            register_secret(password)
            return Credentials(self.USERNAME, password)
        self.root.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        register_secret(password)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"username": self.USERNAME, "password": password}, handle)
        return Credentials(self.USERNAME, password)

    def __enter__(self) -> Endpoints:
        creds = self.credentials()
        htpasswd = self.root / "htpasswd"
        ensure_htpasswd(htpasswd, creds.username, creds.password)
        stack = contextlib.ExitStack()
        # in use before it is looked up: an idle watchdog that is stopping it makes us wait, then start anew
        stack.enter_context(_flock(self.root / IN_USE_LOCK, fcntl.LOCK_SH, START_TIMEOUT, "it is stopping"))
        try:
            state = ensure_index(self.home, htpasswd)
        except BaseException:
            stack.close()
            raise
        self._in_use = stack
        return Endpoints("local", state.simple_url, state.url, False, PRIVATE_VERIFY_TIMEOUT)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._in_use:  # the index keeps running for the user's `pip install`; only our hold ends
            self._in_use.close()
            self._in_use = None


def credentials_for(
    target: IndexTarget, home: Path | None = None, read_secret: Callable[[str], Any] | None = None
) -> Credentials | None:
    """Credentials of an index target; the embedded index's own are generated under $WHEELFLOW_HOME.
    (A static target's are its store's options: :func:`wheelflow.index.staticsite.storage_options_for`.)"""
    if target.index == "local":
        return LocalIndex(home).credentials()
    return load_credentials(target, read_secret)


def open_index(index: str | IndexTarget, home: Path | None = None) -> contextlib.AbstractContextManager[Endpoints]:
    """The endpoints of an index alias, a Simple API URL or a spec's index target, as a context: the
    embedded index (``local``) runs while it is open."""
    target = index if isinstance(index, IndexTarget) else None
    if (target.index if target else index) == "local":
        return LocalIndex(home)
    return contextlib.nullcontext(endpoints_for_target(target) if target else resolve_endpoints(index))
