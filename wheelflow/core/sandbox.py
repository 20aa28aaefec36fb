"""Contain code we do not control: a build backend's setup.py, a smoke command, an install check.

Each such step runs in its own PID namespace (bubblewrap, ``bwrap``): it sees only its own processes
in ``/proc`` (never wheelflow's, whose start environments may hold credentials), and every process
it starts, a ``setsid`` daemon included, ends when the step's main process does, because the
namespace ends with its first process. The compile also gets a network namespace of its own (no
network; ``[tool.wheelflow.build] network = true`` keeps it): a ``setup.py`` that would download a
prebuilt wheel instead of compiling cannot. The file system is read-only but for the step's work
folders and a private temporary folder.

Where namespaces are unavailable (bwrap missing, or a runner without the privilege to make them),
each step runs in its own session, and when its main process ends every process of that session,
and every process still carrying the step's marker variable, is killed: a process that leaves the
session *and* clears its environment survives that (docs/security.md says what remains).

Either way the step's output is read until its main process has ended and its processes are gone,
never until an EOF that a surviving daemon holding the pipe would keep away.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import functools
import os
import secrets
import select
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BWRAP = "bwrap"
SESSION = "session"
#: Set in a fallback step's environment: the processes carrying it are the step's, wherever they went.
STEP_MARKER = "WHEELFLOW_STEP_ID"


@dataclass(frozen=True)
class StepResult:
    code: int  # the main process's exit status (negative: the signal that ended it)
    timed_out: bool  # the timeout stopped it


@functools.cache
def protection() -> str:
    """How steps are contained on this machine, asked once per process: BWRAP where bubblewrap makes
    PID and network namespaces here, else SESSION."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return SESSION
    try:
        probe = subprocess.run(
            [bwrap, *_namespace_args(network=False), "--", "true"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return SESSION
    return BWRAP if probe.returncode == 0 else SESSION


def protection_label(mode: str, *, network: bool = True) -> str:
    """What protected a step, as the run's log line and the report say it."""
    if mode == BWRAP:
        return "bwrap (pid+net namespace)" if not network else "bwrap (pid namespace)"
    return "session kill only (no namespaces: bwrap missing or not permitted here)"


def _namespace_args(*, network: bool) -> list[str]:
    return [
        "--ro-bind",
        "/",
        "/",
        # the host's devices: a smoke test on a GPU cell needs /dev/nvidia*, which a minimal /dev lacks
        "--dev-bind",
        "/dev",
        "/dev",
        "--proc",
        "/proc",
        "--unshare-pid",
        "--die-with-parent",
        *([] if network else ["--unshare-net"]),
    ]


#: Where a step sees its private temporary folder under bwrap, whichever folder holds it here: nvcc
#: compiles from temporary files whose path a debug build (``-g``) keeps in the object, so a path that
#: differs per step would make two builds of one commit differ (docs/reproducible-builds.md).
SCRATCH_INSIDE = Path("/tmp/wheelflow-step")


def _scratch_mount_point() -> Path | None:
    """SCRATCH_INSIDE, made here as an empty folder for bwrap to mount over (bwrap cannot create it
    in the read-only root), or None where it cannot be a folder."""
    with contextlib.suppress(OSError):
        SCRATCH_INSIDE.mkdir(mode=0o755, exist_ok=True)
    return SCRATCH_INSIDE if SCRATCH_INSIDE.is_dir() and not SCRATCH_INSIDE.is_symlink() else None


def wrap(
    cmd: Sequence[str], *, writable: Sequence[Path], network: bool, mode: str, scratch: Path | None = None
) -> list[str]:
    """``cmd`` as it runs under ``mode``: inside bwrap's namespaces with ``writable`` bound read-write,
    and ``scratch`` (when given) read-write at SCRATCH_INSIDE."""
    if mode != BWRAP:
        return list(cmd)
    binds: list[str] = []
    for folder in dict.fromkeys(str(Path(w).resolve()) for w in writable):
        binds += ["--bind", folder, folder]
    if scratch is not None:
        binds += ["--bind", str(scratch), str(SCRATCH_INSIDE)]
    return [shutil.which("bwrap") or BWRAP, *_namespace_args(network=network), *binds, "--", *cmd]


# Sessions of fallback steps still running: killed when wheelflow exits on an error or Ctrl-C, which
# the step's own clean-up would not see from a worker thread.
_LIVE_SESSIONS: dict[int, str] = {}
_LIVE_LOCK = threading.Lock()


@atexit.register
def _kill_live_sessions() -> None:
    with _LIVE_LOCK:
        live = dict(_LIVE_SESSIONS)
    for session, marker in live.items():
        kill_session(session, marker)


def _processes() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _stat_field(pid: int, index: int) -> int | None:
    """A number from /proc/PID/stat after the command name: 1 the parent, 3 the session."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[index]) if len(fields) > index else None


def _session_of(pid: int) -> int | None:
    return _stat_field(pid, 3)


def _stop(proc: subprocess.Popen, mode: str) -> None:
    """Stop a step now, with everything it started, and return when all of it is gone. Under bwrap its
    namespace's first process (bwrap's child) is killed: the kernel then ends every process of the
    namespace before that one's end is reported, and bwrap exits with it. Killing bwrap itself would
    return at once while the namespace still ends (--die-with-parent), a moment later."""
    if mode == BWRAP:
        inits = [pid for pid in _processes() if _stat_field(pid, 1) == proc.pid]
        for pid in inits:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if inits:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(60)  # bounded: the kernel's tear-down of the namespace
                return
    proc.kill()
    proc.wait()


def _carries(pid: int, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return f"{STEP_MARKER}={marker}".encode() in environ.read().split(b"\0")
    except OSError:
        return False


def step_processes(session: int, marker: str) -> list[int]:
    """The processes of a fallback step: those of its session, and those carrying its marker. The
    session's leader (the step's main process, whose PID is the session's id) is not listed: it is
    killed with the session's group, and an ended one stays unreaped until the kill is done."""
    own = os.getpid()
    return [
        pid
        for pid in _processes()
        if pid not in (own, session) and (_session_of(pid) == session or _carries(pid, marker))
    ]


def _wait_unreaped(proc: subprocess.Popen, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds for the step's main process to end, leaving it unreaped (a
    zombie). True once it has ended. While the zombie is there its PID, which is the id of the step's
    session and process group, cannot be given to another process, so the session kill that follows
    cannot hit an unrelated program that got a reused PID (on a busy machine the PIDs wrap within
    minutes)."""
    if timeout is not None:
        try:
            handle = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # no pidfd here: wait, reaping (the old way)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        try:
            if not select.select([handle], [], [], timeout)[0]:
                return False
        finally:
            os.close(handle)
    with contextlib.suppress(ChildProcessError):  # reaped meanwhile (by the fallback above)
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    return True


def kill_session(session: int, marker: str) -> None:
    """SIGKILL every process of the step until none is left (a fork loop makes new ones meanwhile).
    Called while the session's leader is alive or unreaped, so that ``session`` is still the step's."""
    with contextlib.suppress(OSError):
        os.killpg(session, signal.SIGKILL)
    for _ in range(50):  # each round kills what the last one missed; a bound, not a wait
        found = step_processes(session, marker)
        if not found:
            return
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def run_step(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    on_line: Callable[[str], None],
    writable: Sequence[Path] = (),
    network: bool = True,
    timeout: float | None = None,
    mode: str | None = None,
    on_start: Callable[[int], None] | None = None,
) -> StepResult:
    """Run ``cmd`` contained (``mode``: BWRAP or SESSION, default this machine's ``protection()``),
    passing each line of its output (stdout and stderr together) to ``on_line``. ``writable``: the
    folders it may write besides a private temporary folder (its TMPDIR, removed after; under BWRAP
    always seen at SCRATCH_INSIDE);
    ``network``: False gives it none (under BWRAP). Returns once the step and everything it started
    are gone. ``on_start`` gets the step's PID as seen from here (under BWRAP: bwrap's; the step's
    processes are its descendants in this /proc)."""
    mode = mode or protection()
    scratch = Path(tempfile.mkdtemp(prefix="wheelflow-step-"))
    marker = secrets.token_hex(8)
    # Under bwrap the step sees its temporary folder at one path, build after build (see SCRATCH_INSIDE).
    mount_point = _scratch_mount_point() if mode == BWRAP else None
    seen_as = str(mount_point or scratch)
    child_env = {**env, "TMPDIR": seen_as, "TEMP": seen_as, "TMP": seen_as}
    if mode != BWRAP:
        child_env[STEP_MARKER] = marker
    wake_read, wake_write = os.pipe()
    try:
        proc = subprocess.Popen(
            wrap(
                cmd,
                writable=writable if mount_point else [*writable, scratch],
                network=network,
                mode=mode,
                scratch=scratch if mount_point else None,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env,
            cwd=cwd,
            start_new_session=True,  # the fallback's unit of killing; under bwrap, no terminal signals
        )
    except BaseException:
        os.close(wake_read)
        os.close(wake_write)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if on_start is not None:
        on_start(proc.pid)
    if mode != BWRAP:
        with _LIVE_LOCK:
            _LIVE_SESSIONS[proc.pid] = marker
    outcome: dict[str, bool] = {"timed_out": False}

    def end_of_step() -> None:
        """Wait for the main process (killing it at the timeout), make sure nothing of the step is
        left, then wake the reader: it stops at this, not at an EOF."""
        try:
            if mode == BWRAP:
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    outcome["timed_out"] = True
                    _stop(proc, mode)
            else:
                outcome["timed_out"] = not _wait_unreaped(proc, timeout)
                kill_session(proc.pid, marker)  # the main process too, when the timeout stopped it
                with _LIVE_LOCK:
                    _LIVE_SESSIONS.pop(proc.pid, None)
                proc.wait()  # reaped only now: see _wait_unreaped
        finally:
            os.write(wake_write, b"x")

    waiter = threading.Thread(target=end_of_step, name=f"step-{proc.pid}", daemon=True)
    waiter.start()
    assert proc.stdout is not None
    out_fd = proc.stdout.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""

    def feed(data: bytes, final: bool = False) -> None:
        nonlocal pending
        pending += decoder.decode(data, final)
        *lines, pending = pending.split("\n")
        for line in lines:
            on_line(line.rstrip("\r"))
        if final and pending:
            on_line(pending.rstrip("\r"))
            pending = ""

    try:
        with selectors.DefaultSelector() as selector:
            selector.register(out_fd, selectors.EVENT_READ)
            selector.register(wake_read, selectors.EVENT_READ)
            ended = False
            while not ended:
                for key, _ in selector.select():
                    if key.fd == wake_read:
                        ended = True
                    elif not _read_into(out_fd, feed):
                        selector.unregister(out_fd)
            # The step is over and its processes are gone: read what they left in the pipe, without
            # waiting for an EOF a process that escaped the fallback could hold back.
            with selectors.DefaultSelector() as drain:
                drain.register(out_fd, selectors.EVENT_READ)
                while drain.select(timeout=0) and _read_into(out_fd, feed):
                    pass
            feed(b"", final=True)
    finally:
        if proc.poll() is None:  # the reader itself failed (on_line raised): the step ends with it
            _stop(proc, mode)
        waiter.join()
        proc.stdout.close()
        os.close(wake_read)
        os.close(wake_write)
        with _LIVE_LOCK:
            _LIVE_SESSIONS.pop(proc.pid, None)
        shutil.rmtree(scratch, ignore_errors=True)
    return StepResult(proc.returncode, outcome["timed_out"])


def _read_into(fd: int, feed: Callable[[bytes], None]) -> bool:
    """Read what is there into ``feed``; False at EOF."""
    data = os.read(fd, 65536)
    if not data:
        return False
    feed(data)
    return True


def run_step_captured(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    writable: Sequence[Path] = (),
    network: bool = True,
    timeout: float | None = None,
    mode: str | None = None,
) -> tuple[StepResult, str]:
    """``run_step`` with its output returned as one text."""
    lines: list[str] = []
    result = run_step(
        cmd, env=env, cwd=cwd, on_line=lines.append, writable=writable, network=network, timeout=timeout, mode=mode
    )
    return result, "\n".join(lines)
