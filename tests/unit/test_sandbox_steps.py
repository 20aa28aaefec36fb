"""The sandbox a build backend, a smoke command and an install check run in: nothing they start
outlives the step, wheelflow's processes are invisible to them, the compile has no network; where
namespaces are unavailable, the step's session is killed when it ends."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

import pytest
from conftest import running_with

from wheelflow.core import sandbox
from wheelflow.core.sandbox import BWRAP, SESSION, run_step_captured

needs_bwrap = pytest.mark.skipif(sandbox.protection() != BWRAP, reason="bwrap cannot make namespaces here")
MODES = [pytest.param(BWRAP, marks=needs_bwrap), SESSION]
SLEEPER = "import time; time.sleep(3600)"  # a process that lives until killed; its marker is its argument


def _daemon_script(marker: str, ready: Path) -> str:
    """A step that starts a setsid daemon (a sleeper with a marker in its command line) and exits:
    what a hostile setup.py does to outlive its build."""
    return (
        "import subprocess, sys, os\n"
        f"d = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}, {marker!r}], start_new_session=True)\n"
        f"open({str(ready)!r}, 'w').write(str(d.pid))\n"
        "print('daemon started', flush=True)\n"
    )


@pytest.mark.case(
    "secret",
    "a build step forks a setsid daemon that keeps the output pipe open, with and without namespaces",
    "the step returns when its main process ends, and no process of it survives",
)
@pytest.mark.parametrize("mode", MODES)
def test_a_setsid_daemon_does_not_outlive_its_step(tmp_path: Path, mode: str) -> None:
    marker = f"wheelflow-test-daemon-{os.getpid()}-{mode}"
    result, output = run_step_captured(
        [sys.executable, "-c", _daemon_script(marker, tmp_path / "ready")],
        env=dict(os.environ),
        cwd=tmp_path,
        writable=[tmp_path],
        network=False,
        timeout=120,
        mode=mode,
    )
    assert result.code == 0 and not result.timed_out
    assert "daemon started" in output
    assert (tmp_path / "ready").is_file()  # the daemon was started
    assert running_with(marker) == []


@pytest.mark.parametrize("mode", MODES)
def test_a_daemon_that_leaves_the_session_and_keeps_the_marker_is_killed_too(tmp_path: Path, mode: str) -> None:
    """setsid() in a grandchild: not in the step's session, still the step's (its marker, or the namespace)."""
    marker = f"wheelflow-test-grandchild-{os.getpid()}-{mode}"
    script = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', {SLEEPER!r}, {marker!r}])\n"
        "    os._exit(0)\n"
        "os.wait()\n"
    )
    result, _ = run_step_captured(
        [sys.executable, "-c", script], env=dict(os.environ), cwd=tmp_path, timeout=120, mode=mode
    )
    assert result.code == 0
    assert running_with(marker) == []


@needs_bwrap
@pytest.mark.case(
    "secret",
    "a build step lists /proc to find wheelflow's processes (and their start environments)",
    "it sees only the processes of its own step",
)
def test_a_step_sees_only_its_own_processes(tmp_path: Path) -> None:
    script = (
        "import os\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "print('pids', *pids)\n"
        "for pid in pids:\n"
        "    try: line = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
        "    except OSError: continue\n"
        "    if b'py' + b'test' in line: print('found the test runner')\n"
    )
    result, output = run_step_captured([sys.executable, "-c", script], env=dict(os.environ), cwd=tmp_path)
    assert result.code == 0, output
    pids = output.splitlines()[0].split()[1:]
    assert str(os.getpid()) not in pids  # this process's pid is not there
    assert "found the test runner" not in output  # nor its command line
    assert len(pids) <= 3  # bwrap's init and the step


@needs_bwrap
@pytest.mark.case(
    "fault",
    "a compile step connects to a server on this machine's loopback (a setup.py downloading a prebuilt wheel)",
    "the connection fails: the compile has no network; with network allowed it connects",
)
def test_the_compile_has_no_network_unless_allowed(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    thread.start()
    script = (
        "import socket, sys\n"
        f"try: socket.create_connection(('127.0.0.1', {port}), timeout=10)\n"
        "except OSError as exc: print('refused', exc); sys.exit(3)\n"
        "print('connected')\n"
    )
    try:
        closed, output = run_step_captured(
            [sys.executable, "-c", script], env=dict(os.environ), cwd=tmp_path, network=False, timeout=60
        )
        assert closed.code == 3, output
        assert accepted == []
        opened, output = run_step_captured(
            [sys.executable, "-c", script], env=dict(os.environ), cwd=tmp_path, network=True, timeout=60
        )
        assert opened.code == 0, output
        thread.join()
        assert len(accepted) == 1
    finally:
        for conn in accepted:
            conn.close()
        server.close()


@needs_bwrap
def test_only_the_work_folders_and_a_private_temporary_folder_are_writable(tmp_path: Path) -> None:
    work, other = tmp_path / "work", tmp_path / "other"
    work.mkdir()
    other.mkdir()
    script = (
        "import os, tempfile\n"
        f"open({str(work / 'a')!r}, 'w').write('x')\n"
        "open(os.path.join(tempfile.gettempdir(), 't'), 'w').write('x')\n"
        f"try: open({str(other / 'b')!r}, 'w')\n"
        "except OSError: print('other is read-only')\n"
    )
    result, output = run_step_captured(
        [sys.executable, "-c", script], env=dict(os.environ), cwd=tmp_path, writable=[work]
    )
    assert result.code == 0, output
    assert (work / "a").is_file() and "other is read-only" in output
    assert not (other / "b").exists()


@pytest.mark.parametrize("mode", MODES)
def test_a_step_past_its_timeout_is_stopped_with_everything_it_started(tmp_path: Path, mode: str) -> None:
    marker = f"wheelflow-test-timeout-{os.getpid()}-{mode}"
    script = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {SLEEPER!r}, {marker!r}], start_new_session=True)\n"
        "print('waiting', flush=True)\n"
        "import time; time.sleep(3600)\n"
    )
    result, output = run_step_captured(
        [sys.executable, "-c", script], env=dict(os.environ), cwd=tmp_path, timeout=15, mode=mode
    )
    assert result.timed_out
    assert "waiting" in output
    assert running_with(marker) == []


def test_output_is_passed_line_by_line_with_the_last_unterminated_line(tmp_path: Path) -> None:
    lines: list[str] = []
    result = sandbox.run_step(
        ["/bin/sh", "-c", "printf 'one\\ntwo\\nthree'; echo four >&2"],
        env=dict(os.environ),
        cwd=tmp_path,
        on_line=lines.append,
    )
    assert result.code == 0
    assert lines == ["one", "two", "threefour"]  # one pipe for both streams, in order


def test_without_bwrap_the_protection_is_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.protection.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        assert sandbox.protection() == SESSION
        assert "session kill only" in sandbox.protection_label(SESSION)
    finally:
        sandbox.protection.cache_clear()


@needs_bwrap
def test_a_step_sees_the_host_s_devices(tmp_path: Path) -> None:
    """A smoke test on a GPU cell opens /dev/nvidia*: the sandbox has the host's /dev, not a minimal one."""
    minimal = {"null", "zero", "full", "random", "urandom", "tty", "console", "ptmx", "pts", "shm", "fd", "core"}
    minimal |= {"stdin", "stdout", "stderr", "mqueue", "hugepages"}
    host = sorted(set(os.listdir("/dev")) - minimal)
    if not host:
        pytest.skip("this host has no device beyond a minimal /dev")
    result, output = run_step_captured(
        [sys.executable, "-c", "import os; print(*sorted(os.listdir('/dev')))"], env=dict(os.environ), cwd=tmp_path
    )
    assert result.code == 0, output
    assert set(host) <= set(output.split())


def test_without_namespaces_a_survivor_holding_the_output_pipe_does_not_hold_the_step(tmp_path: Path) -> None:
    """What remains without namespaces: a process that leaves the session and clears its environment
    survives the step. The step still returns when its main process ends (no wait for an EOF the
    survivor holds back), with the output printed until then."""
    marker = f"wheelflow-test-survivor-{os.getpid()}"
    script = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execve(sys.executable, [sys.executable, '-c', {SLEEPER!r}, {marker!r}], {{}})\n"
        "print('main done', flush=True)\n"
    )
    try:
        result, output = run_step_captured(
            [sys.executable, "-c", script], env=dict(os.environ), cwd=tmp_path, timeout=120, mode=SESSION
        )
        assert result.code == 0 and not result.timed_out
        assert "main done" in output
    finally:
        for pid in running_with(marker):
            os.kill(pid, 9)


@pytest.mark.parametrize("ending", ["exits", "times out"])
def test_without_namespaces_the_session_is_killed_before_its_id_can_be_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """The fallback kills the step's session by its id, the main process's PID. Were the main process
    reaped first, on a busy machine another program could get that PID (and lead a session of that
    id) before the kill: the kill would hit it. So the main process is reaped only after the kill."""
    states: list[str] = []
    kill = sandbox.kill_session

    def recording_kill(session: int, marker: str) -> None:
        stat = Path(f"/proc/{session}/stat").read_text()  # raises if the PID were already free
        states.append(stat.rpartition(")")[2].split()[0])
        kill(session, marker)

    monkeypatch.setattr(sandbox, "kill_session", recording_kill)
    script = "import time; time.sleep(3600)" if ending == "times out" else "print('done')"
    result, _ = run_step_captured(
        [sys.executable, "-c", script],
        env=dict(os.environ),
        cwd=tmp_path,
        timeout=5 if ending == "times out" else 120,
        mode=SESSION,
    )
    assert result.timed_out == (ending == "times out")
    assert result.code == (-9 if ending == "times out" else 0)
    # at the kill, the main process was still there: an unreaped zombie, or alive until the timeout's kill
    assert len(states) == 1 and states[0] in (("Z",) if ending == "exits" else ("S", "R"))
