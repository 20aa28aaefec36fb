"""The home's embedded index stays up after the command that started it (issue 34, item 3): the install
command a release ends with works once the release has exited, later commands reuse the index, and it
stops itself (idle, home deleted) or on `wheelflow server stop`, as the home's Prefect server does."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import make_project, run_cli

from wheelflow.index.localindex import LocalIndex, index_status, is_index_watchdog, read_index_state

WAIT = 60.0  # bounds every wait on a condition below (a busy 2-core machine), never a synchronisation


def until(condition, what: str):
    """Poll ``condition`` until it holds (bounded by WAIT); it is what the test waits for, not a time."""
    deadline = time.monotonic() + WAIT
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def refuses(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_the_install_command_a_release_ends_with_installs_after_the_release_exited(
    tmp_path: Path, home: Path, prefect_api
) -> None:
    project = make_project(tmp_path / "proj")  # no target: the embedded index (`local`)
    done = run_cli("release", str(project), "--builder", "local")
    assert done.returncode == 0, done.stderr[-3000:]
    command = done.stdout.strip().splitlines()[-1]  # the release's last line: what a user pastes
    match = re.fullmatch(r"pip install --index-url (http://127\.0\.0\.1:(\d+)/simple/) tiny-pkg==1\.0\.0", command)
    assert match, done.stdout[-2000:]
    state = read_index_state(home / "index")
    assert state is not None and state.port == int(match.group(2))
    report = json.loads(next((home / "reports").glob("*.json")).read_text())
    assert report["install"] == [command]

    # the release has exited: the user pastes the command into a fresh environment
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "user")], check=True, capture_output=True)
    pasted = subprocess.run(
        ["bash", "-c", f". {shlex.quote(str(tmp_path / 'user' / 'bin' / 'activate'))} && {command}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("PIP_")},  # no pip configuration of ours
    )
    assert pasted.returncode == 0, pasted.stderr[-3000:]
    answer = subprocess.run(
        [str(tmp_path / "user" / "bin" / "python"), "-c", "import tiny_pkg; print(tiny_pkg.answer())"],
        capture_output=True,
        text=True,
    )
    assert answer.stdout.strip() == "42", answer.stderr

    # a later command reuses it; `server status` shows it and `server stop` stops it, keeping its port
    with LocalIndex(home) as endpoints:
        assert endpoints.simple_url == match.group(1)
    assert read_index_state(home / "index") == state
    status = json.loads(run_cli("server", "status", "--json").stdout)
    assert status["index"]["status"] == "running" and status["index"]["pid"] == state.pid
    stopped = run_cli("server", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped: the local index of {home} (pid {state.pid}, port {state.port})" in stopped.stdout
    assert not is_index_watchdog(state.pid) and refuses(match.group(1))
    assert index_status(home)["status"] == "stopped"
    with LocalIndex(home) as endpoints:  # started again on the same port
        assert endpoints.simple_url == match.group(1)


@pytest.mark.case(
    "fault",
    "the home's embedded index is left idle (WHEELFLOW_SERVER_IDLE_TIMEOUT), or its home is deleted",
    "it stays up while a command uses it, then stops itself; the next command starts it on the same port",
)
def test_the_index_stops_itself_when_idle_never_under_a_command_and_when_its_home_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHEELFLOW_SERVER_IDLE_TIMEOUT", "1")
    home = tmp_path / "home"
    log = home / "index" / "pypiserver.log"
    with LocalIndex(home) as endpoints:
        state = read_index_state(home / "index")
        assert state is not None
        until(lambda: "a command uses it: staying up" in log.read_text(), "the watchdog to see the index in use")
        assert is_index_watchdog(state.pid) and not refuses(endpoints.simple_url)
    until(lambda: not is_index_watchdog(state.pid), "the idle index to stop")
    assert "no command using it" in log.read_text() and refuses(endpoints.simple_url)

    monkeypatch.setenv("WHEELFLOW_SERVER_IDLE_TIMEOUT", "0")  # never idle: only the home's deletion stops it
    with LocalIndex(home) as again:
        assert again.simple_url == endpoints.simple_url  # the port it had
    state = read_index_state(home / "index")
    assert state is not None and is_index_watchdog(state.pid)
    shutil.rmtree(home)
    until(lambda: not is_index_watchdog(state.pid), "the index of a deleted home to stop")
    assert refuses(endpoints.simple_url)
