"""Stopping a run when it is asked to (SIGTERM, SIGINT): what must end at once, whatever it waits for.

A signal is delivered to one thread of this process only, and Python runs its handler in the main
thread. Work in other threads (uploads, install checks, cells built at once) and in child processes
(compilers, pip, smoke commands) would go on for as long as it takes. So asking to stop:

- sets one process-wide flag (:func:`requested`) that loops and retry conditions read;
- runs the callbacks registered with :func:`on_stop` (an upload shuts its sockets, so a server that
  never answers cannot hold it);
- kills the child processes this run started, with their process groups (a compiler's children too),
  at this level, above however each step starts its processes; :func:`spare` exempts a service the
  run still needs afterwards (the embedded index its rollback reads);
- raises :class:`RunCancelled` in the main thread (see :func:`stopping_on_signals`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

_lock = threading.RLock()
_stop = threading.Event()
_reason: str | None = None
_callbacks: dict[int, Callable[[], None]] = {}
_spared: set[int] = set()
_next_id = 0


class RunCancelled(BaseException):  # noqa: N818 (a cancellation, like KeyboardInterrupt, not an error)
    """The run was asked to stop. A BaseException, as KeyboardInterrupt is: no ``except Exception`` on
    the way out may take it for a step's failure and carry on."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def requested() -> str | None:
    """Why this process was asked to stop (e.g. "SIGTERM received"), or None."""
    return _reason if _stop.is_set() else None


def request_stop(reason: str) -> bool:
    """Ask everything of this run to stop now: callbacks, then child processes. True the first time."""
    global _reason
    with _lock:
        if _stop.is_set():
            return False
        _reason = reason
        _stop.set()
        callbacks = list(_callbacks.values())
    for callback in callbacks:
        with contextlib.suppress(Exception):  # one failing callback must not keep the others from running
            callback()
    kill_children()
    return True


def reset() -> None:
    """Forget a stop request (a process that runs more than one run, and tests)."""
    global _reason
    with _lock:
        _stop.clear()
        _reason = None


@contextlib.contextmanager
def on_stop(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` (quick, never blocking: it may run in a signal handler) if a stop is requested
    while the block runs; at once if one already was."""
    global _next_id
    with _lock:
        _next_id += 1
        key = _next_id
        _callbacks[key] = callback
        already = _stop.is_set()
    if already:
        callback()
    try:
        yield
    finally:
        with _lock:
            _callbacks.pop(key, None)


def spare(pid: int) -> None:
    """Leave the child ``pid`` (and what it started) running on a stop: a service this run still needs."""
    with _lock:
        _spared.add(pid)


def unspare(pid: int) -> None:
    with _lock:
        _spared.discard(pid)


def _process_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, process group) of every process this one can see."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
        table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def descendants(root: int | None = None, *, exclude: set[int] | frozenset[int] = frozenset()) -> dict[int, int]:
    """pid → process group of every descendant of ``root`` (default: this process), not descending into
    ``exclude``."""
    root = os.getpid() if root is None else root
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, queue = {}, list(children.get(root, []))
    while queue:
        pid = queue.pop()
        if pid in exclude or pid in found:
            continue
        found[pid] = table[pid][1]
        queue += children.get(pid, [])
    return found


def kill_children() -> list[int]:
    """SIGKILL every child process of this one but the spared ones, each with its process group when it
    leads one of its own (a build backend's compilers, a smoke command's children). Returns the pids."""
    with _lock:
        spared = set(_spared)
    own_group = os.getpgrp()
    spared_groups = set()
    for pid in spared:
        with contextlib.suppress(OSError):  # one that ended meanwhile
            spared_groups.add(os.getpgid(pid))
    found = descendants(exclude=spared)
    for pid, group in found.items():
        with contextlib.suppress(OSError):
            if group != own_group and group not in spared_groups:
                os.killpg(group, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
    return sorted(found)


SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stopping_on_signals(
    *, grace: float = 9.0, on_overrun: Callable[[str], None] | None = None, exit_code: int = 3
) -> Iterator[None]:
    """In the main thread: SIGTERM or SIGINT asks the run to stop (:func:`request_stop`) and raises
    :class:`RunCancelled` where the main thread is. The children present when the block starts (a
    Prefect server this command started) are spared. If the process still runs ``grace`` seconds after
    the signal (something did not let go), ``on_overrun(reason)`` records the cancel and the process
    exits with ``exit_code``: a cancelled run never outlives its grace. Outside the main thread, a
    no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    present = set(descendants())
    for pid in present:
        spare(pid)

    def overrun(reason: str) -> None:
        with contextlib.suppress(Exception):
            if on_overrun is not None:
                on_overrun(reason)
        os._exit(exit_code)

    def handler(signum: int, frame: object) -> None:
        reason = f"{signal.Signals(signum).name} received"
        if not request_stop(reason):
            return  # already stopping: the first signal's exception is on its way, the grace timer runs
        timer = threading.Timer(grace, overrun, args=(reason,))
        timer.daemon = True
        timer.start()
        raise RunCancelled(reason)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        for pid in present:
            unspare(pid)
