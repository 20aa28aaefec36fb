"""One local Prefect server per ``$WHEELFLOW_HOME``, started by the first command that needs it.

Without ``PREFECT_API_URL``, Prefect would start a temporary server inside each command and give it
20 s to answer: on a busy machine it does not, and the command dies with a traceback before any work
starts. Instead the first command starts ``prefect server start`` in the background (its own session,
SQLite and logs under ``$WHEELFLOW_HOME/prefect``), waits for ``/api/health`` with a generous deadline
(``WHEELFLOW_SERVER_START_TIMEOUT``, default 180 s), and records its PID and port; later commands find
it answering and reuse it, so its UI keeps every run. A PID that is gone, or that now belongs to
another program, and a server that no longer answers are stale: replaced. A lock file makes two
commands that start at once start one server.

The server stops itself (see :mod:`wheelflow.adapters.serverwatch`, the watchdog that runs it): after
``WHEELFLOW_SERVER_IDLE_TIMEOUT`` seconds (default 3 h, ``0`` = never) without an API request or a run in
progress, and when its home is deleted. The next command starts it again on the port it had. Every
running server of this user is listed in a registry (``wheelflow server list``, ``server stop --all``):
``$XDG_RUNTIME_DIR/wheelflow/servers``, else ``~/.cache/wheelflow/servers``.

This module imports no Prefect: it runs Prefect's CLI as a child process and reads its health over
HTTP. Everything that can go wrong before a server answers (port taken, disk full, a home that cannot
be written, a server that exits) is a :class:`ServerUnavailable`: one line with why and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from wheelflow.core import homeservices
from wheelflow.core.errors import ServerUnavailable, SpecError
from wheelflow.core.homeservices import (
    idle_timeout,
    kill_group,
    pid_alive,
    port_free,
    seconds_from_env,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_START_TIMEOUT = 180.0  # ~15 s idle on 2 cores; minutes while builds keep both cores busy
PREFERRED_PORT = 4200  # Prefect's own default, when free; otherwise any free port
MIN_FREE_BYTES = 100 * 1024 * 1024  # the server's SQLite database and its migrations need room
# Prefect's client retries a request 2, 4, 8, ... s apart (with jitter): 7 retries bridge about 4 min of
# a server that restarts or is away (Prefect's default of 5 bridges about 1 min, less than a restart
# takes on a busy machine).
CLIENT_MAX_RETRIES = 7
POLL = 0.25  # how often a waiting command looks again (at the health endpoint, the lock, a process)


@dataclass(frozen=True)
class ServerState:
    """What ``server.json`` records about the home's server."""

    pid: int
    port: int
    started_at: float

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# -- which Prefect a command talks to ------------------------------------------------------------


def user_api_url(environ: Mapping[str, str]) -> str | None:
    """The user's own Prefect server: ``PREFECT_API_URL`` from the environment or the active Prefect
    profile. It always wins over anything wheelflow would start."""
    if environ.get("PREFECT_API_URL", "").strip():
        return environ["PREFECT_API_URL"].strip()
    prefect_home = Path(environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    profiles = Path(environ.get("PREFECT_PROFILES_PATH") or prefect_home / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(profiles.read_text())
    except (OSError, ValueError):
        return None
    active = environ.get("PREFECT_PROFILE") or data.get("active")
    profile = data.get("profiles", {}).get(active, {}) if isinstance(active, str) else {}
    url = profile.get("PREFECT_API_URL") if isinstance(profile, dict) else None
    return url.strip() if isinstance(url, str) and url.strip() else None


def connection_mode(environ: Mapping[str, str]) -> str:
    """``user`` (the user's PREFECT_API_URL), ``ephemeral`` (WHEELFLOW_EPHEMERAL=1: Prefect's temporary
    server inside the command) or ``local`` (the home's own background server)."""
    if user_api_url(environ):
        return "user"
    if environ.get("WHEELFLOW_EPHEMERAL", "").strip().lower() in ("1", "true", "yes", "on"):
        return "ephemeral"
    return "local"


def start_timeout(environ: Mapping[str, str]) -> float:
    """``WHEELFLOW_SERVER_START_TIMEOUT``: how long a command waits for a server to answer."""
    return seconds_from_env(
        environ, "WHEELFLOW_SERVER_START_TIMEOUT", DEFAULT_START_TIMEOUT, zero_ok=False, fix="write e.g. 300"
    )


def requested_port(environ: Mapping[str, str]) -> int | None:
    """``WHEELFLOW_SERVER_PORT``: the port the home's server must use (default: a free one)."""
    raw = environ.get("WHEELFLOW_SERVER_PORT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SpecError("WHEELFLOW_SERVER_PORT", f"{raw!r} is not a TCP port", "write e.g. 4200, or unset it")
    return int(raw)


def client_defaults(mode: str, timeout: float) -> dict[str, str]:
    """The Prefect settings a command sets unless the user set them (``os.environ.setdefault``)."""
    defaults = {
        # The telemetry heartbeat raced runs for SQLite's write lock ("database is locked" tracebacks
        # on releases that succeeded); a local server has nothing worth reporting.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLIENT_MAX_RETRIES": str(CLIENT_MAX_RETRIES),
    }
    if mode == "ephemeral":
        defaults["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = str(int(timeout))
    return defaults


# -- the state files and what they say ------------------------------------------------------------


def state_dir(home: Path) -> Path:
    """The server's PREFECT_HOME: its SQLite database, log, PID and state files."""
    return home / "prefect"


def read_state(folder: Path) -> ServerState | None:
    try:
        data = json.loads((folder / "server.json").read_text())
        return ServerState(pid=int(data["pid"]), port=int(data["port"]), started_at=float(data["started_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(folder: Path, state: ServerState) -> None:
    tmp = folder / "server.json.tmp"
    tmp.write_text(json.dumps(asdict(state)))
    tmp.replace(folder / "server.json")
    # Prefect's own `prefect server stop` (with PREFECT_HOME=this folder) reads its PID file.
    (folder / "server.pid").write_text(str(state.pid))


def forget_state(folder: Path) -> None:
    for name in ("server.json", "server.pid"):
        (folder / name).unlink(missing_ok=True)


def last_port(folder: Path) -> int | None:
    """The port the home's last server listened on (kept by ``stop_server``), so that the next start
    takes it again and UI links and a PREFECT_UI_API_URL someone set keep working."""
    try:
        return int((folder / "server.port").read_text())
    except (OSError, ValueError):
        return None


def is_prefect_server(pid: int) -> bool:
    """The PID runs ``prefect server start`` (not a program that was given a reused PID); the watchdog
    that runs it has that command in its own arguments."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return pid_alive(pid)  # no /proc: trust the PID
    return b"prefect" in b" ".join(argv) and b"server" in argv and b"start" in argv


def answers(api_url: str, timeout: float = 2.0) -> bool:
    """``/api/health`` says true."""
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def classify(
    state: ServerState | None,
    *,
    alive: Callable[[int], bool] = pid_alive,
    is_server: Callable[[int], bool] = is_prefect_server,
    answering: Callable[[str], bool] = answers,
) -> str:
    """What the recorded server is now: ``absent`` (nothing recorded), ``running`` (its process runs
    Prefect's server and answers), ``starting`` (its process runs the server, which does not answer
    yet) or ``stale`` (the PID is gone or belongs to another program: replace it)."""
    if state is None:
        return "absent"
    if not alive(state.pid) or not is_server(state.pid):
        return "stale"
    return "running" if answering(state.api_url) else "starting"


# -- the per-user registry of running home servers -----------------------------------------------


@dataclass(frozen=True)
class RegistryEntry:
    """One running home server, as its watchdog registers it."""

    home: str
    pid: int
    port: int
    started_at: float
    last_request_at: float

    def idle_for(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.last_request_at)


def registry_dir(environ: Mapping[str, str]) -> Path:
    """Where this user's running home servers are listed: ``$XDG_RUNTIME_DIR/wheelflow/servers`` (gone
    at logout, as the servers are), else ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    return homeservices.registry_dir(environ, "servers")


def _entry_path(registry: Path, home: Path | str) -> Path:
    return registry / (hashlib.sha256(str(home).encode()).hexdigest()[:20] + ".json")


def register(registry: Path, entry: RegistryEntry) -> None:
    registry.mkdir(parents=True, exist_ok=True)
    path = _entry_path(registry, entry.home)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(entry)))
    tmp.replace(path)


def unregister(registry: Path, home: Path | str, pid: int) -> None:
    """Remove the home's entry if it is still this PID's (a newer server may have replaced it)."""
    path = _entry_path(registry, home)
    entry = _read_entry(path)
    if entry is None or entry.pid == pid:
        path.unlink(missing_ok=True)


def _read_entry(path: Path) -> RegistryEntry | None:
    try:
        data = json.loads(path.read_text())
        return RegistryEntry(
            home=str(data["home"]),
            pid=int(data["pid"]),
            port=int(data["port"]),
            started_at=float(data["started_at"]),
            last_request_at=float(data["last_request_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_servers(registry: Path, is_server: Callable[[int], bool] = is_prefect_server) -> list[RegistryEntry]:
    """The home servers (or, with ``is_server``, the home indexes) that run now, by home; entries of
    those that are gone are removed."""
    entries = []
    for path in registry.glob("*.json") if registry.is_dir() else []:
        entry = _read_entry(path)
        if entry is None or not pid_alive(entry.pid) or not is_server(entry.pid):
            path.unlink(missing_ok=True)
            continue
        entries.append(entry)
    return sorted(entries, key=lambda e: e.home)


def stop_all(registry: Path, grace: float = 30.0) -> list[dict[str, object]]:
    """Stop every running home server of the registry (each keeps its port for its next start)."""
    stopped = []
    for entry in running_servers(registry):
        home = Path(entry.home)
        state = read_state(state_dir(home))
        if state is not None and state.pid == entry.pid:
            stop_server(home, grace)
        else:  # its home is gone or records another server: stop it by its PID
            _kill_group(entry.pid, grace)
        _entry_path(registry, home).unlink(missing_ok=True)
        stopped.append({"home": entry.home, "pid": entry.pid, "port": entry.port})
    return stopped


# -- the lock -------------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive lock on ``path`` (flock: released when the holder exits, however it exits), so that
    two commands starting at once start one server; waits up to ``timeout`` seconds for it."""

    def too_long() -> ServerUnavailable:
        return ServerUnavailable(
            f"another wheelflow command has been starting the local Prefect server for more than "
            f"{timeout:.0f} s (lock {path})",
            "wait for it and run the command again, or raise WHEELFLOW_SERVER_START_TIMEOUT",
        )

    with _opened(path, "a") as handle, homeservices.flock_waiting(handle, fcntl.LOCK_EX, timeout, too_long, poll=POLL):
        yield


@contextlib.contextmanager
def _opened(path: Path, mode: str) -> Iterator[object]:
    try:
        handle = open(path, mode)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise unwritable(path.parent, exc) from None
    try:
        yield handle
    finally:
        handle.close()


# -- why a server cannot start, and the fix -------------------------------------------------------


def unwritable(folder: Path, exc: OSError) -> ServerUnavailable:
    """An OSError while preparing the server's folder, as one line with the fix."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return disk_full(folder)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return read_only(folder, exc.strerror or str(exc))
    return ServerUnavailable(
        f"cannot prepare the local Prefect server's folder {folder}: {exc.strerror or exc}",
        "set WHEELFLOW_HOME to a writable folder, or PREFECT_API_URL to a running Prefect server",
    )


def read_only(folder: Path, why: str) -> ServerUnavailable:
    return ServerUnavailable(
        f"the local Prefect server cannot write its database under {folder} ({why})",
        "make that folder writable, set WHEELFLOW_HOME to a writable folder, "
        "or set PREFECT_API_URL to a running Prefect server",
    )


def disk_full(folder: Path, free: int | None = None) -> ServerUnavailable:
    room = f" (only {free // 1024} KiB free)" if free is not None else ""
    return ServerUnavailable(
        f"the local Prefect server cannot start: the disk holding {folder} is full{room}",
        f"free at least {MIN_FREE_BYTES // 2**20} MiB there, or set WHEELFLOW_HOME to a folder on another disk",
    )


def port_taken(port: int) -> ServerUnavailable:
    return ServerUnavailable(
        f"the local Prefect server cannot listen on 127.0.0.1:{port}: another program holds that port",
        "stop that program, or set WHEELFLOW_SERVER_PORT to a free port (unset, wheelflow picks one)",
    )


def diagnose(log_tail: str, code: int | None, folder: Path, port: int) -> ServerUnavailable:
    """A server process that exited before it answered: why, from its log, and the fix."""
    text = log_tail.lower()
    if "address already in use" in text or "already in use" in text:
        return port_taken(port)
    if "no space left on device" in text or "database or disk is full" in text:
        return disk_full(folder)
    for marker in ("readonly database", "read-only file system", "permission denied", "unable to open database"):
        if marker in text:
            return read_only(folder, marker)
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    # The exception that ended it (a traceback's last line, e.g. "sqlalchemy.exc.DatabaseError: ..."), else
    # the last line that says error, else the last line.
    raised = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*:", line)]
    said = [line for line in lines if "error" in line.lower()]
    last = (raised or said or lines or ["no output"])[-1]
    return ServerUnavailable(
        f"the local Prefect server exited with code {code} before it answered: {last[:300]}",
        f"read its log {folder / 'server.log'}; `wheelflow server stop` then run the command again, "
        "or set PREFECT_API_URL to a running Prefect server (WHEELFLOW_EPHEMERAL=1: Prefect's temporary one)",
    )


def _log_tail(folder: Path, size: int = 6000) -> str:
    try:
        with open(folder / "server.log", "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - size))
            return log.read().decode(errors="replace")
    except OSError:
        return ""


# -- start, reuse, stop ---------------------------------------------------------------------------


def ensure_server(
    home: Path,
    *,
    timeout: float = DEFAULT_START_TIMEOUT,
    port: int | None = None,
    say: Callable[[str], None] = lambda line: None,
    idle: float | None = None,
) -> ServerState:
    """The home's server, answering: reused when it runs, started (once, under the lock) when it does
    not, replaced when it is stale. A started one stops itself after ``idle`` seconds without use
    (default: ``WHEELFLOW_SERVER_IDLE_TIMEOUT``). Raises :class:`ServerUnavailable` with why and the fix."""
    idle = idle_timeout(os.environ) if idle is None else idle
    folder = state_dir(home)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(folder, exc) from None
    state = read_state(folder)
    if classify(state) == "running":  # the common case, without waiting for the lock
        assert state is not None
        return state
    deadline = time.monotonic() + timeout
    with locked(folder / "server.lock", timeout):
        state = read_state(folder)
        status = classify(state)
        if state is not None and status == "running":
            return state
        if state is not None and status == "starting":  # another command started it and has given up waiting
            say(f"waiting for the local Prefect server (pid {state.pid}) to answer on port {state.port}")
            return _wait_until_answering(state, None, folder, deadline, timeout)
        if state is not None:
            say(f"the local Prefect server recorded in {folder} (pid {state.pid}) is gone: starting a new one")
            forget_state(folder)
        chosen = _choose_port(port, state.port if state else last_port(folder))
        free = shutil.disk_usage(folder).free
        if free < MIN_FREE_BYTES:
            raise disk_full(folder, free)
        say(
            f"starting the local Prefect server for {home} on port {chosen} "
            f"(once: later commands reuse it; `wheelflow server stop` stops it)"
        )
        proc = _spawn(home, chosen, idle)
        state = ServerState(pid=proc.pid, port=chosen, started_at=time.time())
        try:
            write_state(folder, state)
        except OSError as exc:
            _kill_group(proc.pid)
            raise unwritable(folder, exc) from None
        return _wait_until_answering(state, proc, folder, deadline, timeout)


def _choose_port(requested: int | None, previous: int | None) -> int:
    if requested is not None:
        if not port_free(requested):
            raise port_taken(requested)
        return requested
    for candidate in (previous, PREFERRED_PORT):
        if candidate and port_free(candidate):
            return candidate  # the same address as before (links stay valid), else Prefect's default
    return any_free_port()


def _spawn(home: Path, port: int, idle: float) -> subprocess.Popen[bytes]:
    """The watchdog (the recorded PID, leader of its own session) running ``prefect server start``."""
    folder = state_dir(home)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        {
            "PREFECT_HOME": str(folder),  # SQLite database, profiles, everything under the home
            "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        }
    )
    # Concurrency leases (the one-release-at-a-time lock) on disk, not in the server's memory: a
    # restarted server still knows who holds what.
    env.setdefault("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", "prefect.server.concurrency.lease_storage.filesystem")
    # The UI in the browser asks PREFECT_UI_API_URL for its data: without it, a server on another port
    # than 4200 shows an empty UI. PREFECT_UI_URL gives the server's own alert templates the run's link.
    env.setdefault("PREFECT_UI_API_URL", f"http://127.0.0.1:{port}/api")
    env.setdefault("PREFECT_UI_URL", f"http://127.0.0.1:{port}")
    # uvicorn's access lines (INFO) tell the watchdog that a request came; Prefect's own server loggers
    # stay at the level they had (default WARNING).
    level = env.get("PREFECT_SERVER_LOGGING_LEVEL", "WARNING").upper()
    env.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_SERVER_LEVEL", level)
    env.setdefault("PREFECT_LOGGING_LOGGERS_FASTAPI_LEVEL", level)
    if level not in ("DEBUG", "TRACE"):
        env["PREFECT_SERVER_LOGGING_LEVEL"] = "INFO"
    server = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    watchdog = [
        *(sys.executable, "-m", "wheelflow.adapters.serverwatch", "--home", str(home), "--port", str(port)),
        *("--idle-timeout", f"{idle:g}", "--registry", str(registry_dir(os.environ)), "--"),
    ]
    with _opened(folder / "server.log", "ab") as log:
        try:
            return subprocess.Popen(
                [*watchdog, *server],
                env=env,
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=log,  # type: ignore[arg-type]
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this command; Ctrl-C in the terminal does not reach it
            )
        except OSError as exc:
            raise unwritable(folder, exc) from None


def _wait_until_answering(
    state: ServerState, proc: subprocess.Popen[bytes] | None, folder: Path, deadline: float, timeout: float
) -> ServerState:
    while True:
        if answers(state.api_url):
            return state
        code = proc.poll() if proc is not None else (None if pid_alive(state.pid) else -1)
        if code is not None:
            forget_state(folder)
            raise diagnose(_log_tail(folder), code, folder, state.port)
        if time.monotonic() >= deadline:
            raise ServerUnavailable(
                f"the local Prefect server (pid {state.pid}, port {state.port}) did not answer within {timeout:.0f} s; "
                "it is still starting",
                "run the command again when the machine is less busy (it reuses that server), or raise "
                f"WHEELFLOW_SERVER_START_TIMEOUT; its log: {folder / 'server.log'}",
            )
        time.sleep(POLL)  # polling the server's health endpoint, bounded by the deadline


def server_status(home: Path) -> dict[str, object]:
    """What ``wheelflow server status`` shows."""
    folder = state_dir(home)
    state = read_state(folder)
    status = classify(state)
    info: dict[str, object] = {"status": "stopped" if status == "absent" else status, "home": str(home)}
    if state is not None:
        info.update(pid=state.pid, port=state.port, api_url=state.api_url, ui_url=state.ui_url)
    info["log"] = str(folder / "server.log")
    return info


def stop_server(home: Path, grace: float = 30.0) -> dict[str, object]:
    """Stop the home's server (SIGTERM to its process group, SIGKILL after ``grace`` s); forget its
    process but keep its port for the next start. Says what it stopped (``pid``, ``port``)."""
    folder = state_dir(home)
    state = read_state(folder)
    status = classify(state)
    info: dict[str, object] = {
        "status": "stopped",
        "was": "stopped" if status == "absent" else status,
        "home": str(home),
    }
    if state is not None and status in ("running", "starting"):
        _kill_group(state.pid, grace)
        info.update(pid=state.pid, port=state.port)
    if state is not None:
        (folder / "server.port").write_text(str(state.port))
        forget_state(folder)
    return info


def _kill_group(pid: int, grace: float = 30.0) -> None:
    kill_group(pid, grace)
