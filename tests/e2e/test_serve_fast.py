"""`wheelflow serve` starts a triggered run when the server announces it, not at the runner's next poll:
with the poll set to an hour, triggered releases still run (and the run's states and retry history
are recorded as when the poll started it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import INDEX_PASSWORD, INDEX_USER, make_project, run_cli, stop_processes, wait_for
from faultproxy import FaultProxy, Rule

from wheelflow.index.localindex import PypiServer, ensure_htpasswd


@pytest.fixture
def staging(tmp_path: Path):
    ensure_htpasswd(tmp_path / "htpasswd", INDEX_USER, INDEX_PASSWORD)
    with PypiServer(tmp_path / "served", tmp_path / "htpasswd", log_file=tmp_path / "pypiserver.log") as server:
        yield server


@pytest.fixture
def served_polling_hourly(prefect_api, tmp_path: Path):
    """`wheelflow serve --only release` whose runner polls for scheduled runs once an hour: after its first
    poll at start, only the server's flow-run events can start a run within the test."""
    root = tmp_path / "serve"
    root.mkdir()
    env = {
        **os.environ,
        "WHEELFLOW_HOME": str(root / "home"),
        "WHEELFLOW_STAGING_USERNAME": INDEX_USER,
        "WHEELFLOW_STAGING_PASSWORD": INDEX_PASSWORD,
        "PREFECT_RUNNER_POLL_FREQUENCY": "3600",
    }
    exe = str(Path(sys.executable).with_name("wheelflow"))
    log = open(root / "serve.log", "wb")
    proc = subprocess.Popen(
        [exe, "serve", "--only", "release"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root
    )
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    def registered() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"wheelflow serve exited: {(root / 'serve.log').read_text()[-3000:]}")
        with get_client(sync_client=True) as client:
            try:
                return bool(client.read_deployment_by_name("release/release"))
            except ObjectNotFound:
                return False

    wait_for(registered, 120, "wheelflow serve to register its deployment")
    yield root
    stop_processes(proc)
    log.close()


def _trigger(project: Path) -> tuple[int, dict, str]:
    done = run_cli("trigger", "release", "--param", f"project={project}", "--wait", "--timeout", "180", "--json")
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def test_triggered_runs_start_without_waiting_for_the_runners_poll(
    served_polling_hourly: Path, staging, tmp_path: Path
) -> None:
    # The first run may still be found by the runner's first poll at start; the second cannot be.
    code, outcome, stderr = _trigger(make_project(tmp_path / "first", index_url=staging.simple_url))
    assert (code, outcome.get("state")) == (0, "Completed"), stderr[-3000:]

    with FaultProxy(staging.url) as proxy:
        proxy.rules.append(Rule("POST", 503, "Service Unavailable", times=2))  # the first two uploads fail
        project = make_project(tmp_path / "second", name="tiny-two", index_url=proxy.url + "simple/")
        code, outcome, stderr = _trigger(project)
    assert code == 0, f"exit {code} (4: the run never started within --timeout) {stderr[-3000:]}"
    assert outcome["state"] == "Completed"

    # Started by the event, the run is the runner's own as before: Pending before Running, each retry kept.
    status = run_cli("status", outcome["flow_run_id"], "--json")
    assert status.returncode == 0, status.stderr
    verdict = json.loads(status.stdout)
    assert (verdict["state"], verdict["exit_code"]) == ("Completed", 0)
    uploads = [t for t in verdict["tasks"] if t["name"].startswith("upload[") and t["name"].endswith("→staging]")]
    assert uploads and all(t["state"] == "Completed" for t in uploads)
    assert sum(t["attempts"] for t in uploads) == len(uploads) + 2
    retries = [s for t in uploads for s in t["history"] if s["name"] == "AwaitingRetry"]
    assert len(retries) == 2 and all("HTTP 503 Service Unavailable" in s["message"] for s in retries)

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        names = [s.name for s in client.read_flow_run_states(outcome["flow_run_id"])]
    assert names[:2] == ["Scheduled", "Pending"] and "Running" in names and names[-1] == "Completed", names
