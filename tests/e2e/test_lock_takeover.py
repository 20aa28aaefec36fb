"""A release killed with SIGKILL while holding its lock (issue 27, item 6): the next run of that
version says the holder is dead, marks its flow run Crashed, and takes over within the lease; no
automation installed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from conftest import wait_for

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from prefect import flow
    from prefect.runtime import flow_run
    from wheelflow.adapters.prefect_api import held_alone

    @flow
    def holds(key: str, marker: str) -> None:
        with held_alone(key):
            Path(marker).write_text(str(flow_run.get_id()))
            sys.stdin.read()  # holds the lock until killed

    holds(sys.argv[1], sys.argv[2])
    """)


@pytest.mark.case(
    "fault",
    "a release holding its lock is killed with SIGKILL; no automation is installed",
    "the next run says the holder is dead, marks its flow run Crashed and takes over within the lease",
)
def test_the_next_holder_takes_over_from_a_dead_one_and_marks_it_crashed(tmp_path: Path, prefect_api: str) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    from wheelflow.adapters.prefect_api import LEASE, held_alone

    key = f"wheelflow-test-{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "holding"
    (tmp_path / "holder.py").write_text(HOLDER)
    holder = subprocess.Popen(
        [sys.executable, str(tmp_path / "holder.py"), key, str(marker)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "holder.log", "wb"),
        env={**os.environ, "PREFECT_API_URL": prefect_api},
    )
    wait_for(lambda: marker.exists() and marker.read_text(), 180, "the first run to hold the lock")
    dead_run = marker.read_text()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()

    said: list[str] = []

    @flow
    def takes_over() -> str:
        with held_alone(key, timeout=LEASE * 3, log=said.append):
            return "held"

    assert takes_over() == "held"
    assert any(
        f"flow run {dead_run} (process {holder.pid} on " in line and "is dead: its process" in line for line in said
    ), said
    assert any("marked it Crashed" in line for line in said), said
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(dead_run).state
    assert state.type.value == "CRASHED" and "took over" in (state.message or "")
