"""Who holds a lock, and whether that holder is dead: what the next run of a release needs to take
over from a run killed with SIGKILL (issue 27, item 6).

The holder of a lock writes a record (its flow run, host, process id and that process's start
time) when it takes the lock, and clears it when it lets go. A record still there when the next run
takes the lock means the holder never let go: it stopped renewing its lease (no heartbeat). On the
same host, a holder whose process is gone (or whose pid now belongs to a younger process) is known
dead at once, before its lease even lapses.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: What a released lock's record says.
RELEASED = {"released": True}


@dataclass(frozen=True)
class Holder:
    flow_run: str
    host: str = ""
    pid: int = 0
    started: str = ""  # the process's start time (field 22 of /proc/PID/stat): tells a reused pid apart

    def json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        where = f" (process {self.pid} on {self.host})" if self.pid else ""
        return f"flow run {self.flow_run}{where}"


def parse_holder(value: Any) -> Holder | None:
    """The holder a record names; None for a released lock or no record. A bare flow run id (the
    record's older form) names a holder whose process is unknown."""
    if isinstance(value, str) and value:
        return Holder(value)
    if isinstance(value, Mapping) and value.get("flow_run"):
        return Holder(
            str(value["flow_run"]),
            str(value.get("host") or ""),
            int(value.get("pid") or 0),
            str(value.get("started") or ""),
        )
    return None


def process_started(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The start time of process ``pid`` (in clock ticks since boot), or None when there is no such
    process (or no /proc to ask)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def this_holder(flow_run: str, pid: int | None = None) -> Holder:
    pid = os.getpid() if pid is None else pid
    return Holder(flow_run, socket.gethostname(), pid, process_started(pid) or "")


def dead_reason(
    holder: Holder,
    *,
    host: str | None = None,
    started: Callable[[int], str | None] = process_started,
) -> str | None:
    """Why ``holder`` is known dead from this host, or None when that cannot be told from here (it
    runs on another host, or its process is alive)."""
    host = socket.gethostname() if host is None else host
    if not holder.pid or holder.host != host:
        return None
    now = started(holder.pid)
    if now is None:
        return f"its process {holder.pid} on {host} is gone"
    if holder.started and now != holder.started:
        return f"its process {holder.pid} on {host} is gone (the pid now belongs to another process)"
    return None
