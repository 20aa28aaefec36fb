"""The home's Prefect server stops itself, for real: after its idle timeout (never while a run is in
progress), and when its home is deleted; the next command starts it on the same port again; `server
list` and `server stop --all` cover every home of the user."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import wait_for

from wheelflow.adapters.localserver import pid_alive, state_dir, stop_server
from wheelflow.index.localindex import free_port

EXE = str(Path(sys.executable).with_name("wheelflow"))


def laptop_env(tmp_path: Path, home: Path, **extra: str) -> dict[str, str]:
    """No Prefect configured, as on a laptop; the port is wheelflow's choice unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "WHEELFLOW_SERVER_PORT"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), WHEELFLOW_HOME=str(home))
    env.update(extra)
    return env


def wheelflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=600)


def start(env: dict[str, str]) -> dict:
    result = wheelflow("server", "start", "--json", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_an_idle_server_stops_itself_but_not_during_a_run_and_the_next_command_restarts_it_on_its_port(
    tmp_path: Path, home: Path
) -> None:
    env = laptop_env(tmp_path, home, WHEELFLOW_SERVER_IDLE_TIMEOUT="3")
    first = start({**env, "WHEELFLOW_SERVER_PORT": str(free_port())})  # not 4200, which another run may want
    api, log = first["api_url"], state_dir(home) / "server.log"

    # a flow run in progress, as the engine reports one (a flow, a run in state Running), then quiet
    flow = httpx.post(f"{api}/flows/", json={"name": "lifecycle"}, timeout=30).json()["id"]
    run = httpx.post(
        f"{api}/flow_runs/", json={"flow_id": flow, "state": {"type": "RUNNING", "name": "Running"}}, timeout=30
    ).json()["id"]
    wait_for(lambda: "1 run(s) in progress: staying up" in log.read_text(), 120, "the watchdog to see the run")
    assert pid_alive(first["pid"]) and httpx.get(f"{api}/health", timeout=30).status_code == 200

    httpx.post(
        f"{api}/flow_runs/{run}/set_state",
        json={"state": {"type": "COMPLETED", "name": "Completed"}, "force": True},
        timeout=30,
    ).raise_for_status()
    wait_for(lambda: not pid_alive(first["pid"]), 120, "the idle server to stop itself")
    said = log.read_text()
    assert "no API request and no run in progress for" in said
    assert f"the next command starts it again on port {first['port']}" in said
    assert json.loads(wheelflow("server", "status", "--json", env=env).stdout)["status"] == "stopped"

    # no WHEELFLOW_SERVER_PORT now: the port the stopped server recorded; this one never stops when idle
    again = start({**env, "WHEELFLOW_SERVER_IDLE_TIMEOUT": "0"})
    assert again["status"] == "running" and again["pid"] != first["pid"]
    assert again["port"] == first["port"]  # UI links and bookmarks keep working

    # its watchdog killed without a word: the kernel stops the Prefect server it ran (no unwatched server)
    (server_pid,) = re.findall(
        r"started the Prefect server \(pid (\d+), port \d+\); it stops when its home", log.read_text()
    )
    assert pid_alive(int(server_pid))
    os.kill(again["pid"], signal.SIGKILL)
    wait_for(lambda: not pid_alive(int(server_pid)), 120, "the unwatched Prefect server to stop")


def test_server_list_and_stop_all_cover_every_home_and_a_deleted_home_takes_its_server_along(
    tmp_path: Path, home: Path
) -> None:
    other = tmp_path / "other-home"
    run_dir = tmp_path / "run"  # this test's own registry: only its two servers are listed
    envs = [
        laptop_env(tmp_path, h, XDG_RUNTIME_DIR=str(run_dir), WHEELFLOW_SERVER_PORT=str(free_port()))
        for h in (home, other)
    ]
    try:
        starting = [
            subprocess.Popen([EXE, "server", "start", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
            for e in envs
        ]
        results = [(p.communicate(timeout=600), p.returncode) for p in starting]
        assert [code for _, code in results] == [0, 0], [err[-2000:] for (_, err), _ in results]
        servers = [json.loads(out) for (out, _), _ in results]

        listed = json.loads(wheelflow("server", "list", "--json", env=envs[0]).stdout)["servers"]
        assert sorted((s["home"], s["port"], s["pid"]) for s in listed) == sorted(
            (s["home"], s["port"], s["pid"]) for s in servers
        )
        assert all(s["idle_for_s"] >= 0 for s in listed)
        table = wheelflow("server", "list", env=envs[0]).stdout
        assert all(str(s["pid"]) in table and s["home"] in table for s in servers)

        # the home is deleted: its server goes with it, whatever it was writing meanwhile
        wait_for(lambda: shutil.rmtree(other, ignore_errors=True) or not other.exists(), 60, "the home to go")
        wait_for(lambda: not pid_alive(servers[1]["pid"]), 120, "the deleted home's server to stop")
        listed = json.loads(wheelflow("server", "list", "--json", env=envs[0]).stdout)["servers"]
        assert [s["pid"] for s in listed] == [servers[0]["pid"]]

        stopped = wheelflow("server", "stop", "--all", "--json", env=envs[0])
        assert stopped.returncode == 0, stopped.stderr[-2000:]
        assert [s["pid"] for s in json.loads(stopped.stdout)["stopped"]] == [servers[0]["pid"]]
        assert not pid_alive(servers[0]["pid"])
        assert json.loads(wheelflow("server", "list", "--json", env=envs[0]).stdout) == {"servers": [], "indexes": []}
        assert (state_dir(home) / "server.port").read_text() == str(servers[0]["port"])  # kept for its next start
    finally:
        if other.exists():
            stop_server(other)
