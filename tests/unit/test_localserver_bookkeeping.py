"""The local server's bookkeeping: which Prefect a command uses, stale PIDs, the lock, the one-line
reasons. No Prefect server starts here (tests/e2e/test_localserver.py starts real ones)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wheelflow.adapters import localserver
from wheelflow.adapters.localserver import ServerState, classify
from wheelflow.core.errors import ExitCode, ServerUnavailable, SpecError


def test_a_users_prefect_api_url_wins_then_ephemeral_then_the_local_server(tmp_path: Path) -> None:
    empty = {"PREFECT_HOME": str(tmp_path)}
    assert localserver.connection_mode(empty) == "local"
    assert localserver.connection_mode({**empty, "WHEELFLOW_EPHEMERAL": "1"}) == "ephemeral"
    assert localserver.connection_mode({**empty, "WHEELFLOW_EPHEMERAL": "0"}) == "local"
    assert (
        localserver.connection_mode({**empty, "WHEELFLOW_EPHEMERAL": "1", "PREFECT_API_URL": "http://h:1/api"})
        == "user"
    )
    assert localserver.connection_mode({**empty, "PREFECT_API_URL": " "}) == "local"


def test_a_prefect_api_url_in_the_active_profile_counts_as_the_users(tmp_path: Path) -> None:
    (tmp_path / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://prefect.example.invalid/api"\n[profiles.other]\n'
    )
    env = {"PREFECT_HOME": str(tmp_path)}
    assert localserver.user_api_url(env) == "http://prefect.example.invalid/api"
    assert localserver.connection_mode(env) == "user"
    assert localserver.user_api_url({**env, "PREFECT_PROFILE": "other"}) is None


def test_the_client_defaults_raise_retries_and_the_ephemeral_startup_deadline() -> None:
    local = localserver.client_defaults("local", 180)
    assert int(local["PREFECT_CLIENT_MAX_RETRIES"]) >= 7  # 2 + 4 + ... + 128 s: minutes of outage bridged
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in local
    assert localserver.client_defaults("ephemeral", 240)["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "240"
    assert localserver.start_timeout({}) >= 120
    assert localserver.start_timeout({"WHEELFLOW_SERVER_START_TIMEOUT": "300"}) == 300
    for bad in ("soon", "0", "-5"):
        with pytest.raises(SpecError, match="WHEELFLOW_SERVER_START_TIMEOUT"):
            localserver.start_timeout({"WHEELFLOW_SERVER_START_TIMEOUT": bad})
    with pytest.raises(SpecError, match="WHEELFLOW_SERVER_PORT"):
        localserver.requested_port({"WHEELFLOW_SERVER_PORT": "70000"})


def test_state_round_trips_and_a_torn_file_reads_as_nothing(tmp_path: Path) -> None:
    state = ServerState(pid=123, port=4567, started_at=1.5)
    localserver.write_state(tmp_path, state)
    assert localserver.read_state(tmp_path) == state
    assert (tmp_path / "server.pid").read_text() == "123"  # Prefect's own `prefect server stop` reads it
    (tmp_path / "server.json").write_text('{"pid": 1')
    assert localserver.read_state(tmp_path) is None
    localserver.forget_state(tmp_path)
    assert not (tmp_path / "server.json").exists() and not (tmp_path / "server.pid").exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_recorded_pid_that_is_gone_is_stale() -> None:
    state = ServerState(pid=_dead_pid(), port=1, started_at=0)
    assert not localserver.pid_alive(state.pid)
    assert classify(state) == "stale"
    assert classify(None) == "absent"


def test_a_recorded_pid_reused_by_another_program_is_stale() -> None:
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert localserver.pid_alive(other.pid) and not localserver.is_prefect_server(other.pid)
        assert classify(ServerState(pid=other.pid, port=1, started_at=0)) == "stale"
    finally:
        other.communicate(b"")


def test_a_zombie_counts_as_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    # Not reaped: a zombie until wait(); poll /proc until it exits (bounded).
    deadline = time.monotonic() + 30
    while localserver.pid_alive(proc.pid):
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.05)  # polling the child's state, bounded by the deadline
    proc.wait()


def test_a_live_server_is_running_when_it_answers_and_starting_when_not() -> None:
    state = ServerState(pid=1, port=1, started_at=0)
    alive = {"alive": lambda pid: True, "is_server": lambda pid: True}
    assert classify(state, answering=lambda url: True, **alive) == "running"
    assert classify(state, answering=lambda url: False, **alive) == "starting"
    assert classify(state, alive=lambda pid: True, is_server=lambda pid: False, answering=lambda url: True) == "stale"


def test_the_lock_lets_one_command_start_the_server_and_the_other_wait(tmp_path: Path) -> None:
    lock = tmp_path / "server.lock"
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with localserver.locked(lock, timeout=5):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(30)
    with pytest.raises(ServerUnavailable) as err:
        with localserver.locked(lock, timeout=0.3):
            pass
    assert "another wheelflow command" in str(err.value) and "fix: " in str(err.value)
    assert err.value.exit_code == ExitCode.NO_SERVER
    release.set()
    thread.join()
    with localserver.locked(lock, timeout=5):  # free again once the holder is done
        pass


def test_the_lock_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    lock = tmp_path / "server.lock"
    code = (
        "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f.fileno(), fcntl.LOCK_EX); "
        "print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ServerUnavailable):
        with localserver.locked(lock, timeout=0.2):
            pass
    holder.kill()
    holder.wait()
    with localserver.locked(lock, timeout=5):
        pass


def test_a_port_held_by_another_program_is_named_with_the_fix(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert not localserver.port_free(port)
        with pytest.raises(ServerUnavailable) as err:
            localserver.ensure_server(tmp_path / "home", timeout=5, port=port)
    assert str(err.value) == (
        f"the local Prefect server cannot listen on 127.0.0.1:{port}: another program holds that port; fix: "
        "stop that program, or set WHEELFLOW_SERVER_PORT to a free port (unset, wheelflow picks one)"
    )


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("ERROR: [Errno 98] error while attempting to bind: address already in use", "another program holds"),
        ("sqlite3.OperationalError: database or disk is full", "is full"),
        ("OSError: [Errno 28] No space left on device", "is full"),
        ("sqlite3.OperationalError: attempt to write a readonly database", "cannot write its database"),
        ("sqlite3.OperationalError: unable to open database file", "cannot write its database"),
        (
            "sqlalchemy.exc.DatabaseError: (sqlite3.DatabaseError) file is not a database\n"
            "ERROR:    Application startup failed. Exiting.\n",
            "exited with code 3 before it answered: sqlalchemy.exc.DatabaseError: (sqlite3.DatabaseError) file is not",
        ),
    ],
)
def test_a_server_that_exits_is_diagnosed_from_its_log(tmp_path: Path, log: str, expected: str) -> None:
    err = localserver.diagnose(log, 3, tmp_path, 4200)
    assert expected in str(err) and "; fix: " in str(err) and "\n" not in str(err)
    assert err.exit_code == ExitCode.NO_SERVER


def test_stop_says_what_it_stopped_and_the_next_start_takes_the_same_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """UI links and a PREFECT_UI_API_URL someone set name the port: a restart keeps it."""
    import argparse

    from wheelflow.cli import server

    monkeypatch.setenv("WHEELFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    folder = localserver.state_dir(tmp_path)
    folder.mkdir(parents=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # a process that looks like `prefect server start` and never answers: a server still starting
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "prefect", "server", "start"], start_new_session=True
    )
    localserver.write_state(folder, ServerState(pid=sleeper.pid, port=port, started_at=time.time()))

    assert server.run(argparse.Namespace(action="stop", json=False)) == 0
    assert sleeper.wait(30) is not None
    out = capsys.readouterr().out
    assert f"(pid {sleeper.pid}, port {port})" in out and f"starts it on port {port} again" in out
    assert localserver.read_state(folder) is None and localserver.last_port(folder) == port
    assert localserver._choose_port(None, localserver.last_port(folder)) == port

    assert server.run(argparse.Namespace(action="stop", json=False)) == 0
    assert "no local Prefect server was running" in capsys.readouterr().out
