"""The home's Prefect server stops itself: a small watchdog process that runs ``prefect server start``.

``ensure_server`` starts this module (``python -m wheelflow.adapters.serverwatch``) as the leader of a
new session; it starts Prefect's server as its child in the same process group, so the PID recorded in
``server.json`` (this watchdog's) stops both with one signal. The server's output comes through a
pipe: every line goes on to ``server.log`` except uvicorn's access lines, which only tell the watchdog
that an API request came in (the log keeps its size while a worker polls for weeks). The watchdog stops
the server, on its own, when

- no API request came for ``WHEELFLOW_SERVER_IDLE_TIMEOUT`` seconds and the server has no flow run in
  progress (pending, running, paused or cancelling: asked over the API, with a marked request that does
  not count as one). It records the port first, so that the next command starts the server on it again;
- the home's ``prefect`` folder is gone or replaced (the home was deleted): nothing is recorded then.

While it runs it keeps an entry in the per-user registry (``wheelflow server list``), with the time of
the last API request; the entry goes when it exits. If the watchdog itself is killed, the server gets
SIGTERM from the kernel (``PR_SET_PDEATHSIG``) rather than running on unwatched.

With ``--service index`` it runs the home's embedded package index (pypiserver, started by
:mod:`wheelflow.index.localindex`) the same way: its folder is the home's ``index``, its log
``pypiserver.log``, pypiserver writes each request as an access line of the same shape, and instead of
runs in progress it stays up while a command holds the index (a shared lock on ``index/in-use.lock``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from wheelflow.adapters import localserver

# A request line as uvicorn's access log writes it: `127.0.0.1:53422 - "POST /api/flow_runs/ HTTP/1.1" 201`;
# a websocket as uvicorn.error announces it: `127.0.0.1:53430 - "WebSocket /api/events/in" [accepted]`.
REQUEST = re.compile(r'"(?:[A-Z]+ \S+ HTTP/[\d.]+|WebSocket \S+)"')
SERVING = "Uvicorn running on"  # uvicorn's line once the server listens
OWN_REQUEST = "wheelflow-watchdog=1"  # in the query string of the watchdog's own requests: not activity
IN_PROGRESS = ["PENDING", "RUNNING", "PAUSED", "CANCELLING"]  # a flow run the server must stay up for
STOP_GRACE = 30.0  # seconds the server gets to stop after SIGTERM before SIGKILL
LOG_PREFIX = "wheelflow watchdog: "
SERVICES = ("prefect", "index")
RESPONSE = "wheelflow-response "  # how the index's pypiserver starts its response lines: not kept in the log
IN_USE_LOCK = "in-use.lock"  # the index: every command using it holds a shared lock on this file


def is_request(line: str) -> bool:
    """An access (or websocket) line of a client's request; the watchdog's own requests do not count."""
    return bool(REQUEST.search(line)) and OWN_REQUEST not in line


def tick(idle_timeout: float) -> float:
    """How often the watchdog looks (for a deleted home, an elapsed timeout): often enough that a short
    timeout is kept to within a quarter, never more than every 2 s."""
    return 2.0 if idle_timeout <= 0 else max(0.25, min(2.0, idle_timeout / 4))


def folder_identity(folder: Path) -> tuple[int, int] | None:
    try:
        stat = folder.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def runs_in_progress(api_url: str) -> int | None:
    """How many flow runs the server has in progress; ``None`` when it does not say (busy, broken)."""
    try:
        response = httpx.post(
            f"{api_url}/flow_runs/count?{OWN_REQUEST}",
            json={"flow_runs": {"state": {"type": {"any_": IN_PROGRESS}}}},
            timeout=30,
        )
        response.raise_for_status()
        return int(response.json())
    except (httpx.HTTPError, ValueError):
        return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def index_in_use(folder: Path) -> int:
    """1 when a command holds the index (a shared lock on its in-use file), else 0."""
    try:
        with open(folder / IN_USE_LOCK, "a") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 1
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return 0
    except OSError:
        return 0  # a folder that is gone: the home-deleted check stops the index


class Watchdog:
    def __init__(self, args: argparse.Namespace) -> None:
        self.home = Path(args.home)
        self.service: str = getattr(args, "service", "prefect")
        self.is_index = self.service == "index"
        self.folder = self.home / "index" if self.is_index else localserver.state_dir(self.home)
        self.what = "the local index" if self.is_index else "the Prefect server"
        self.port: int = args.port
        self.idle_timeout: float = args.idle_timeout
        self.registry = Path(args.registry)
        self.command: list[str] = args.command
        self.identity = folder_identity(self.folder)
        self.started_at = time.time()
        self.last_request = time.time()
        self.recorded_request = 0.0
        self.stopping = False
        # the idle clock starts when the server says it answers; pypiserver answers within a second
        self.serving = self.is_index
        log_name = "pypiserver.log" if self.is_index else "server.log"
        self.log = open(self.folder / log_name, "ab", buffering=0)  # noqa: SIM115 - lives as long as we do

    def say(self, line: str) -> None:
        with contextlib.suppress(OSError):
            self.log.write(f"{time.strftime('%H:%M:%S')} | {LOG_PREFIX}{line}\n".encode())

    def register(self) -> None:
        with contextlib.suppress(OSError):
            localserver.register(
                self.registry,
                localserver.RegistryEntry(
                    home=str(self.home),
                    pid=os.getpid(),
                    port=self.port,
                    started_at=self.started_at,
                    last_request_at=self.last_request,
                ),
            )
            self.recorded_request = self.last_request

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_sigterm)  # the group's SIGTERM: the child stops, we follow it
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        child = subprocess.Popen(
            self.command,
            env=env,
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - we have no threads
        )
        self.register()
        work = "a command using it" if self.is_index else "a run in progress"
        idle = f"after {self.idle_timeout:g} s without an API request or {work}, or " * (self.idle_timeout > 0)
        self.say(f"started {self.what} (pid {child.pid}, port {self.port}); it stops {idle}when its home is deleted")
        try:
            return self._watch(child)
        finally:
            with contextlib.suppress(OSError):
                localserver.unregister(self.registry, self.home, os.getpid())

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _watch(self, child: subprocess.Popen[bytes]) -> int:
        assert child.stdout is not None
        fd = child.stdout.fileno()
        pending = b""
        interval = tick(self.idle_timeout)
        next_look = time.monotonic() + interval
        while True:
            ready, _, _ = _select([fd], max(0.0, next_look - time.monotonic()))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:  # the server exited (crashed, or was stopped by a signal to the group)
                    self._forward(pending, final=True)
                    return child.wait()
                pending = self._forward(pending + chunk)
            if self.stopping:  # SIGTERM to the group: the server got it too; wait for it to end
                return self._wait_for(child)
            if time.monotonic() < next_look:
                continue
            next_look = time.monotonic() + interval
            if folder_identity(self.folder) != self.identity:
                self.say(f"the home {self.home} is gone: stopping {self.what} (pid {child.pid})")
                return self._stop(child)
            if self.last_request - self.recorded_request >= interval:
                self.register()  # `server list`'s "idle for"
            idle = time.time() - self.last_request
            if self.idle_timeout <= 0 or not self.serving or idle < self.idle_timeout:
                continue
            count = self.work_in_progress()
            if count:
                work = "a command uses it" if self.is_index else f"{count} run(s) in progress"
                self.say(f"idle for {idle:.0f} s but {work}: staying up")
                self.last_request = time.time()
            elif count is None:
                self.say(f"idle for {idle:.0f} s but the server does not say whether runs are in progress: staying up")
                self.last_request = time.time()
            elif self._idle_under_lock(fd):
                work = "no command using it" if self.is_index else "no run in progress"
                self.say(
                    f"no API request and {work} for {idle:.0f} s "
                    f"(WHEELFLOW_SERVER_IDLE_TIMEOUT={self.idle_timeout:g}): stopping {self.what}; "
                    f"the next command starts it again on port {self.port}"
                )
                return self._stop(child)

    def work_in_progress(self) -> int | None:
        """What keeps an idle server up: flow runs in progress (Prefect), commands holding the index."""
        if self.is_index:
            return index_in_use(self.folder)
        return runs_in_progress(f"http://127.0.0.1:{self.port}/api")

    def _idle_under_lock(self, fd: int) -> bool:
        """Take the home's start lock (a command starting the server waits for it, then starts a new one on
        the recorded port) and make sure no request came in meanwhile. Keeps the lock until we exit."""
        try:
            self.lock = open(self.folder / "server.lock", "a")  # noqa: SIM115 - released when we exit
            fcntl.flock(self.lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a command holds it: it is using or starting the server
        before = self.last_request
        while _select([fd], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._forward(chunk)
        if self.last_request != before or (self.is_index and not self._hold_index()):
            fcntl.flock(self.lock.fileno(), fcntl.LOCK_UN)
            return False
        state = localserver.read_state(self.folder)
        if state is not None and state.pid == os.getpid():
            (self.folder / "server.port").write_text(str(self.port))
            localserver.forget_state(self.folder)  # commands from now on start a new server (after our lock)
        return True

    def _hold_index(self) -> bool:
        """Take the index's in-use lock for good: a command that comes now waits for us to exit, then
        starts a new index. False when a command holds it."""
        try:
            handle = open(self.folder / IN_USE_LOCK, "a")  # noqa: SIM115 - kept (and locked) until we exit
        except OSError:
            return False
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self.in_use = handle
        return True

    def _forward(self, data: bytes, final: bool = False) -> bytes:
        *lines, rest = data.split(b"\n")
        if final and rest:
            lines.append(rest)
            rest = b""
        kept = []
        for raw in lines:
            line = raw.decode(errors="replace")
            if not self.serving and SERVING in line:
                self.serving, self.last_request = True, time.time()
            if line.startswith(RESPONSE):
                continue
            if REQUEST.search(line):
                if OWN_REQUEST not in line:
                    self.last_request = time.time()
                if '"WebSocket ' not in line:
                    continue  # access lines only say "a request came": not kept
            kept.append(raw + b"\n")
        with contextlib.suppress(OSError):
            self.log.write(b"".join(kept))
        return rest

    def _stop(self, child: subprocess.Popen[bytes]) -> int:
        self.stopping = True
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        return self._wait_for(child)

    def _wait_for(self, child: subprocess.Popen[bytes]) -> int:
        """Wait for the stopping server, reading its last output meanwhile (a full pipe would block it);
        SIGKILL after STOP_GRACE seconds."""
        assert child.stdout is not None
        fd, pending = child.stdout.fileno(), b""
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline:
            if _select([fd], max(0.0, deadline - time.monotonic()))[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                pending = self._forward(pending + chunk)
        self._forward(pending, final=True)
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        self.say(f"{self.what} (pid {child.pid}) stopped")
        return 0


def _select(fds: list[int], timeout: float) -> tuple[list[int], list[int], list[int]]:
    try:
        return select.select(fds, [], [], timeout)
    except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for signal handlers that raise
        return [], [], []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wheelflow.adapters.serverwatch")
    parser.add_argument("--home", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle-timeout", type=float, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--service", choices=SERVICES, default="prefect")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    return Watchdog(args).run()


if __name__ == "__main__":
    sys.exit(main())
