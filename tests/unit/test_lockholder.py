"""Telling a dead lock holder from a live one (issue 27, item 6): the record a holder leaves, and
its process on this host."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from wheelflow.ops.lockholder import RELEASED, Holder, dead_reason, parse_holder, process_started, this_holder


def test_a_record_names_its_holder_and_a_released_lock_names_none() -> None:
    me = this_holder("run-1")
    assert parse_holder(me.json()) == me
    assert me.host == socket.gethostname() and me.pid == os.getpid() and me.started
    assert parse_holder("run-0") == Holder("run-0")  # the older record: a bare flow run id
    assert parse_holder(RELEASED) is None and parse_holder(None) is None


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_a_holder_whose_process_is_gone_is_dead_and_a_live_one_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = Holder("run-2", socket.gethostname(), child.pid, "1")
    assert dead_reason(gone) == f"its process {child.pid} on {socket.gethostname()} is gone"
    assert dead_reason(this_holder("run-3")) is None  # this very process: alive
    assert process_started(os.getpid()) is not None


def test_a_reused_pid_or_another_host() -> None:
    holder = Holder("run-4", "here", 1234, "500")
    assert dead_reason(holder, host="here", started=lambda pid: "900") == (
        "its process 1234 on here is gone (the pid now belongs to another process)"
    )
    assert dead_reason(holder, host="here", started=lambda pid: "500") is None
    assert dead_reason(holder, host="elsewhere", started=lambda pid: None) is None  # cannot tell from here
    assert dead_reason(Holder("run-5"), host="here", started=lambda pid: None) is None
