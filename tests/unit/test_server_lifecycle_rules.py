"""The home servers' lifecycle, without a Prefect server: the idle timeout setting, what the watchdog
counts as a request, the per-user registry (`server list`, `server stop --all`) and the test run's own
guard that no home server outlives it. tests/e2e/test_server_lifecycle.py runs real servers."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wheelflow.adapters import localserver, serverwatch
from wheelflow.adapters.localserver import RegistryEntry, ServerState
from wheelflow.core.errors import ExitCode, SpecError

TESTS = Path(__file__).resolve().parent.parent


def fake_server(*extra: str) -> subprocess.Popen[bytes]:
    """A process whose arguments look like a home server's watchdog running `prefect server start` (as
    is_prefect_server tells them apart from a reused PID); it never answers."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", *extra, "prefect", "server", "start"],
        start_new_session=True,
    )


def test_the_idle_timeout_defaults_to_hours_and_zero_means_never() -> None:
    assert localserver.idle_timeout({}) == 3 * 3600
    assert localserver.idle_timeout({"WHEELFLOW_SERVER_IDLE_TIMEOUT": "0"}) == 0
    assert localserver.idle_timeout({"WHEELFLOW_SERVER_IDLE_TIMEOUT": " 2.5 "}) == 2.5
    assert serverwatch.tick(0) == 2.0 and serverwatch.tick(3) == 0.75 and serverwatch.tick(10800) == 2.0


@pytest.mark.case(
    "bad input",
    "WHEELFLOW_SERVER_IDLE_TIMEOUT is not a number of seconds (abc, -5, nan)",
    "one line naming the variable and the fix, exit 2; no server is started",
)
@pytest.mark.parametrize("bad", ["abc", "-5", "nan"])
def test_an_idle_timeout_that_is_not_seconds_is_refused_before_a_server_starts(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SpecError) as caught:
        localserver.idle_timeout({"WHEELFLOW_SERVER_IDLE_TIMEOUT": bad})
    message = str(caught.value)
    assert "WHEELFLOW_SERVER_IDLE_TIMEOUT" in message and "; fix: " in message and "\n" not in message
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    monkeypatch.setenv("WHEELFLOW_SERVER_IDLE_TIMEOUT", bad)
    with pytest.raises(SpecError):
        localserver.ensure_server(tmp_path / "home", timeout=5)
    assert not (tmp_path / "home").exists()  # refused before anything was made or started


def test_an_api_request_is_activity_and_the_watchdogs_own_question_is_not() -> None:
    assert serverwatch.is_request('12:00:00.1 | INFO | uvicorn.access - 127.0.0.1:5 - "GET /api/health HTTP/1.1" 200')
    assert serverwatch.is_request('INFO:     127.0.0.1:53430 - "WebSocket /api/events/in" [accepted]')
    assert not serverwatch.is_request(
        '12:00 | INFO | uvicorn.access - 127.0.0.1:5 - "POST /api/flow_runs/count?wheelflow-watchdog=1 HTTP/1.1" 200'
    )
    assert not serverwatch.is_request("12:00:00.1 | INFO | uvicorn.error - Application startup complete.")


def test_the_registry_lists_running_servers_and_forgets_gone_ones(tmp_path: Path) -> None:
    registry = localserver.registry_dir({"XDG_RUNTIME_DIR": str(tmp_path / "run")})
    assert registry == tmp_path / "run" / "wheelflow" / "servers"
    assert localserver.registry_dir({"XDG_CACHE_HOME": str(tmp_path / "c")}) == tmp_path / "c" / "wheelflow" / "servers"
    alive = fake_server()
    not_a_server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        now = time.time()
        for name, pid in (("a", alive.pid), ("b", not_a_server.pid), ("c", gone.pid)):
            localserver.register(registry, RegistryEntry(str(tmp_path / name), pid, 4200, now - 60, now - 30))
        assert [e.home for e in localserver.running_servers(registry)] == [str(tmp_path / "a")]
        assert len(list(registry.glob("*.json"))) == 1  # the dead and the reused PIDs' entries are removed
        (entry,) = localserver.running_servers(registry)
        assert 29 <= entry.idle_for(now + 0.5) <= 31
        localserver.unregister(registry, tmp_path / "a", pid=alive.pid + 1)  # not its entry: kept
        assert localserver.running_servers(registry)
    finally:
        for proc in (alive, not_a_server):
            proc.kill()
            proc.wait()


def test_server_list_and_stop_all_cover_every_home_and_keep_each_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from wheelflow.cli import server

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    registry = localserver.registry_dir(os.environ)
    homes = {tmp_path / "one": 4301, tmp_path / "two": 4302}
    procs = []
    for home, port in homes.items():
        proc = fake_server()
        procs.append(proc)
        folder = localserver.state_dir(home)
        folder.mkdir(parents=True)
        localserver.write_state(folder, ServerState(pid=proc.pid, port=port, started_at=time.time()))
        localserver.register(registry, RegistryEntry(str(home), proc.pid, port, time.time(), time.time() - 125))
    try:
        # (a fake server ended by something else would be missing from the list for that reason)
        assert [proc.poll() for proc in procs] == [None, None], "a fake server ended before the list"
        assert server.run(argparse.Namespace(action="list", json=True, all=False)) == 0
        listed = json.loads(capsys.readouterr().out)["servers"]
        assert [(s["home"], s["port"], s["pid"]) for s in listed] == [
            (str(h), p, proc.pid) for (h, p), proc in zip(homes.items(), procs, strict=True)
        ]
        assert all(125 <= s["idle_for_s"] < 185 for s in listed)
        assert server.run(argparse.Namespace(action="list", json=False, all=False)) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["HOME", "PORT", "PID", "IDLE", "FOR"]
        assert table[1].split()[:3] == [str(tmp_path / "one"), "4301", str(procs[0].pid)] and "2 min" in table[1]

        assert server.run(argparse.Namespace(action="stop", json=False, all=True)) == 0
        out = capsys.readouterr().out
        for proc in procs:
            assert proc.wait(30) is not None and f"(pid {proc.pid}, port" in out
        for home, port in homes.items():  # each home's next start takes its port again
            assert localserver.read_state(localserver.state_dir(home)) is None
            assert localserver.last_port(localserver.state_dir(home)) == port
        assert server.run(argparse.Namespace(action="list", json=True, all=False)) == 0
        assert json.loads(capsys.readouterr().out) == {"servers": [], "indexes": []}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "two workers (-n 2)"])
def test_a_test_run_that_leaves_a_home_server_running_fails_and_stops_it(tmp_path: Path, workers: list[str]) -> None:
    """The guard conftest.py installs: a pytest run of its own leaks three servers (one registered, one
    watchdog and one Prefect server found among the processes by their home); the run fails naming each,
    and none runs after it. Under pytest-xdist the worker that found them makes the whole run fail."""
    pids = tmp_path / "pids"
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "test_leak.py").write_text(
        textwrap.dedent(f"""
        import os, subprocess, sys, time
        from pathlib import Path
        from wheelflow.adapters import localserver

        def leak(*extra):
            return subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(300)", *extra, "prefect", "server", "start"],
                start_new_session=True,
            ).pid

        def test_leaks_two_home_servers(tmp_path):
            registered = leak()
            registry = localserver.registry_dir(os.environ)
            localserver.register(
                registry, localserver.RegistryEntry("/elsewhere/home", registered, 1, time.time(), time.time())
            )
            unregistered = leak("-m", "wheelflow.adapters.serverwatch", "--home", str(tmp_path / "home"))
            (tmp_path / "home" / "prefect").mkdir(parents=True)
            unwatched = subprocess.Popen(  # a server whose watchdog is gone: found by its working folder
                [sys.executable, "-c", "import time; time.sleep(300)", "-m", "prefect", "server", "start"],
                cwd=tmp_path / "home" / "prefect",
                start_new_session=True,
            ).pid
            Path({str(pids)!r}).write_text(f"{{registered}} {{unregistered}} {{unwatched}}")
        """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "serverguard", "-p", "no:cacheprovider", "-q", *workers, "test_leak.py"],
        cwd=tmp_path / "inner",
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    leaked = [int(pid) for pid in pids.read_text().split()]
    try:
        assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:] + result.stderr[-3000:]
        assert "1 passed" in result.stdout
        if workers:  # the worker's own lines stay in the worker; the controller says which one found them
            assert re.search(r"home server\(s\) outlived worker popen-gw\d: stopped there", result.stdout)
        else:
            assert "3 home server(s) outlived this test run" in result.stdout
            for pid in leaked:
                assert f"(pid {pid}) still ran at the end of the run" in result.stdout
        for pid in leaked:
            assert not localserver.pid_alive(pid)
    finally:
        for pid in leaked:
            if localserver.pid_alive(pid):
                os.killpg(pid, 9)


def test_a_test_run_that_leaves_a_home_index_running_fails_and_stops_it(tmp_path: Path) -> None:
    """The guard covers home indexes too: a pytest run of its own starts the real index of a home outside
    its temporary folder (found through the indexes' registry) and leaves it running; the run fails naming
    it, and it runs no more."""
    from wheelflow.index.localindex import is_index_watchdog, read_index_state

    home = tmp_path / "outside-home"
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "test_leak.py").write_text(
        textwrap.dedent(f"""
        from pathlib import Path
        from wheelflow.index.localindex import LocalIndex

        def test_leaves_the_index_running():
            with LocalIndex(Path({str(home)!r})):
                pass
        """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "serverguard", "-p", "no:cacheprovider", "-q", "test_leak.py"],
        cwd=tmp_path / "inner",
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout[-3000:] + result.stderr[-3000:]
    found = re.search(rf"of home {re.escape(str(home))} \(pid (\d+)\) still ran at the end of the run", result.stdout)
    pid = int(found.group(1)) if found else None
    try:
        assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
        assert pid is not None, output
        assert not is_index_watchdog(pid)
        assert read_index_state(home / "index") is None  # stopped through its home: its port is kept
        assert (home / "index" / "server.port").exists()
    finally:
        if pid is not None and is_index_watchdog(pid):
            os.killpg(pid, 9)
