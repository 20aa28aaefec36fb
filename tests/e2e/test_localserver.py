"""The home's own Prefect server, for real: started once, reused, replaced when stale, one line when it
cannot start (a port another program holds, a full disk, a home that cannot be written, a crash)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import make_project

from wheelflow.adapters.localserver import pid_alive, read_state, state_dir
from wheelflow.index.localindex import free_port

EXE = str(Path(sys.executable).with_name("wheelflow"))


def laptop_env(tmp_path: Path, home: Path, **extra: str) -> dict[str, str]:
    """No Prefect configured, as on a laptop; the home's server on a free port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), WHEELFLOW_HOME=str(home))
    env.setdefault("WHEELFLOW_SERVER_PORT", str(free_port()))
    env.update(extra)
    return env


def wheelflow(*args: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=600, **kwargs)


def test_two_commands_at_once_start_one_server_and_a_killed_one_is_replaced(tmp_path: Path, home: Path) -> None:
    env = laptop_env(tmp_path, home)
    both = [
        subprocess.Popen([EXE, "server", "start", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    results = [(p.communicate(timeout=600), p.returncode) for p in both]
    assert [code for _, code in results] == [0, 0], [err[-2000:] for (_, err), _ in results]
    pids = {json.loads(out)["pid"] for (out, _), _ in results}
    assert len(pids) == 1  # the lock: one started it, the other waited and reused it
    starts = sum(b"starting the local Prefect server" in err for (_, err), _ in results)
    assert starts == 1
    (pid,) = pids
    status = json.loads(wheelflow("server", "status", "--json", env=env).stdout)
    assert status["status"] == "running" and status["pid"] == pid
    assert status["ui_url"] == f"http://127.0.0.1:{env['WHEELFLOW_SERVER_PORT']}"
    # the UI in a browser reads its data from PREFECT_UI_API_URL: set, it works on any port
    server_env = dict(
        line.split("=", 1) for line in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in line
    )
    assert server_env["PREFECT_UI_API_URL"] == f"http://127.0.0.1:{env['WHEELFLOW_SERVER_PORT']}/api"

    os.killpg(pid, signal.SIGKILL)  # the server dies without a word; its PID file stays behind
    assert read_state(state_dir(home)).pid == pid
    again = wheelflow("server", "start", "--json", env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"(pid {pid}) is gone: starting a new one" in again.stderr
    new_pid = json.loads(again.stdout)["pid"]
    assert new_pid != pid and json.loads(again.stdout)["status"] == "running"

    stopped = wheelflow("server", "stop", env=env)
    assert stopped.returncode == 0 and not pid_alive(new_pid)
    assert f"(pid {new_pid}, port {env['WHEELFLOW_SERVER_PORT']})" in stopped.stdout
    assert json.loads(wheelflow("server", "status", "--json", env=env).stdout)["status"] == "stopped"


def assert_one_line(result: subprocess.CompletedProcess[str], *, contains: str, code: int = 6) -> str:
    """Exit ``code`` (default 6, ExitCode.NO_SERVER), one line on stderr with why and the fix, the same in
    the --json object, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("wheelflow: error: ") and "; fix: " in lines[-1], result.stderr[-3000:]
    assert contains in lines[-1], lines[-1]
    report = json.loads(result.stdout)
    assert report == {"ok": False, "error": lines[-1].removeprefix("wheelflow: error: "), "exit_code": code}
    return lines[-1]


@pytest.mark.case(
    "fault",
    "no Prefect server can start: another program holds WHEELFLOW_SERVER_PORT",
    "one line naming the port and the fix, also under --json, exit 6, no traceback",
)
def test_a_port_another_program_holds_is_one_line(tmp_path: Path, home: Path) -> None:
    project = make_project(tmp_path / "p")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = wheelflow(
            "release", str(project), "--json", env=laptop_env(tmp_path, home, WHEELFLOW_SERVER_PORT=str(port))
        )
    line = assert_one_line(result, contains=f"cannot listen on 127.0.0.1:{port}: another program holds that port")
    assert "set WHEELFLOW_SERVER_PORT to a free port" in line


@pytest.mark.case(
    "fault",
    "no Prefect server can start: WHEELFLOW_HOME cannot be written (a non-root user, chmod 555)",
    "refused before any server starts: one line naming the folder and the fix, also under --json, exit 2",
)
def test_a_home_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    nobody = 65534
    root = Path(tempfile.mkdtemp(prefix="wheelflow-readonly-"))  # pytest's own tmp is private to root
    try:
        root.chmod(0o755)
        project = make_project(root / "p")
        home = root / "home"
        home.mkdir()
        for path in (root, *root.rglob("*")):
            os.chown(path, nobody, nobody)
        home.chmod(0o555)
        env = laptop_env(tmp_path, home, HOME=str(root), PREFECT_HOME=str(root / "prefect-home"))
        as_nobody = ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"]
        if os.geteuid() != 0:
            as_nobody = []  # already not root: chmod alone makes the home read-only
        result = subprocess.run(
            [*as_nobody, EXE, "release", str(project), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            cwd=root,
        )
        # the home is checked before anything starts (a bad-input refusal, exit 2), so no server is tried
        line = assert_one_line(result, contains=f"cannot write wheelflow's home {home}", code=2)
        assert "point WHEELFLOW_HOME at a writable folder" in line
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.case(
    "fault",
    "no Prefect server can start: the disk holding WHEELFLOW_HOME is full (a 1 MiB tmpfs)",
    "one line saying the disk is full, how much is free and the fix, also under --json, exit 6",
)
def test_a_full_disk_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "small-disk"
    home.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(home)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        result = wheelflow("release", str(make_project(tmp_path / "p")), "--json", env=laptop_env(tmp_path, home))
        line = assert_one_line(result, contains=f"the disk holding {home / 'prefect'} is full")
        assert "set WHEELFLOW_HOME to a folder on another disk" in line
    finally:
        subprocess.run(["umount", str(home)], check=True)


@pytest.mark.case(
    "fault",
    "no Prefect server can start: it crashes at startup (its SQLite database is not a database)",
    "one line with the server's own error, its log and the fix, also under --json, exit 6; the next command "
    "does not wait for the dead server",
)
def test_a_server_that_crashes_at_startup_is_one_line(tmp_path: Path, home: Path) -> None:
    folder = state_dir(home)
    folder.mkdir(parents=True)
    (folder / "prefect.db").write_bytes(b"this is not an SQLite database" * 1000)
    env = laptop_env(tmp_path, home)
    result = wheelflow("release", str(make_project(tmp_path / "p")), "--json", env=env)
    line = assert_one_line(result, contains="the local Prefect server exited with code ")
    assert "file is not a database" in line  # the server's own error, not only "startup failed"
    assert str(folder / "server.log") in line
    assert read_state(folder) is None  # nothing stale left for the next command to wait for


@pytest.mark.case(
    "fault",
    "machine's CPUs saturated at first contact (two CPU-bound processes, no Prefect server configured)",
    "the home's server gets its generous deadline: the release is verified and its output ends with the UI link",
)
def test_first_contact_on_a_saturated_machine_releases_and_links_the_run(tmp_path: Path, home: Path, busy_cpus) -> None:
    env = laptop_env(tmp_path, home)
    result = wheelflow("release", str(make_project(tmp_path / "p")), "--builder", "local", "--json", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["ok"] and {f["status"] for f in report["files"]} == {"verified"}
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"see it in the Prefect UI: http://127.0.0.1:{env['WHEELFLOW_SERVER_PORT']}/runs/flow-run/{report['flow_run_id']}"
    )


@pytest.mark.case(
    "fault",
    "PREFECT_API_URL names a server that does not answer (release, status)",
    "one line naming the URL and the fix, also under --json, exit 6, no traceback; nothing is started instead",
)
def test_a_users_server_that_does_not_answer_is_one_line(tmp_path: Path, home: Path) -> None:
    port = free_port()  # nothing listens there
    env = laptop_env(tmp_path, home, PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    for args in (("release", str(make_project(tmp_path / "p"))), ("status", "3f2b6a3e-0000-4000-8000-000000000000")):
        result = wheelflow(*args, "--json", env=env)
        line = assert_one_line(result, contains=f"the Prefect server at http://127.0.0.1:{port}/api did not answer")
        assert "point PREFECT_API_URL at a running server" in line
    assert not state_dir(home).exists()  # the user's setting wins: no local server was started
