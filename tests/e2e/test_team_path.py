"""The team path exactly as docs/deployments-and-ci.md tells it, on a fresh Prefect server:
`wheelflow setup`, `wheelflow doctor`, a process worker on the control pool that fetches wheelflow's
code with prefect.yaml's pull step, and releases triggered by the example CI step (curl only).

The first trigger meets a typo in the code ref: the worker's run crashes in its pull step, before its
first task, and `status` and `trigger` say why (the worker's own state message says only that a
process exited). Once the Variable is corrected, as prefect.yaml's comment says to, the same step
releases the tag and exits 0. GitHub is the one part that cannot exist here: its runner is this
machine's bash with the GITHUB_* variables of a tag push, its server a bare repository on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cistep import ci_step, tagged_repository
from conftest import INDEX_PASSWORD, INDEX_USER, run_cli, stop_processes, wheelflow_code_remote


def test_the_readme_team_path_releases_a_pushed_tag_and_explains_a_crash_before_the_first_task(
    fresh_prefect_server, tmp_path: Path, index
) -> None:
    from prefect.variables import Variable

    code = wheelflow_code_remote(tmp_path / "wheelflow-code")
    setup = run_cli("setup", "--code-repository", code.as_uri(), "--code-ref", "mian", "--no-automations")
    assert setup.returncode == 0, setup.stderr[-3000:]

    machine = tmp_path / "control-machine"
    machine.mkdir()
    worker_env = {
        **os.environ,
        "WHEELFLOW_HOME": str(machine / "home"),
        "WHEELFLOW_STAGING_USERNAME": INDEX_USER,
        "WHEELFLOW_STAGING_PASSWORD": INDEX_PASSWORD,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    doctor = subprocess.run(
        [str(Path(sys.executable).with_name("wheelflow")), "doctor", "--pool", "wheelflow-control", "--json"],
        env=worker_env,
        capture_output=True,
        text=True,
        cwd=machine,
    )
    missing = [f for f in json.loads(doctor.stdout) if not f["ok"] and f.get("required", True)]
    assert doctor.returncode == 0 and not missing, doctor.stdout[-3000:] + doctor.stderr[-2000:]
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "wheelflow-control"],
        env=worker_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=machine,
    )
    try:
        command, env = ci_step(**tagged_repository(tmp_path / "github", index, "1.0"))
        env["POLL_SECONDS"] = "1"
        crashed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert crashed.returncode == 3, crashed.stdout[-3000:] + crashed.stderr[-3000:]  # CRASHED
        run_id = crashed.stdout.split("started flow run ")[1].split()[0]
        status = run_cli("status", run_id, "--json")
        verdict = json.loads(status.stdout)
        assert status.returncode == 3 and verdict["state"] == "Crashed" and verdict["tasks"] == []
        # the state message the server keeps, not only a log line: the UI's header shows it too
        assert verdict["message"].startswith(
            "crashed before its first task: cannot fetch wheelflow's code at 'mian': Failed to clone repository"
        ), verdict
        assert "fix: check the Variables wheelflow_code_repository and wheelflow_code_ref" in verdict["message"]
        assert verdict["reason"] == verdict["message"]
        assert "crashed before its first task: cannot fetch wheelflow's code at 'mian'" in crashed.stdout  # the CI log
        assert list(index.packages.iterdir()) == []

        Variable.set("wheelflow_code_ref", "main", overwrite=True)  # "edit it in the UI", as prefect.yaml says
        released = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert released.returncode == 0, released.stdout[-3000:] + released.stderr[-3000:]
        run_id = released.stdout.split("started flow run ")[1].split()[0]
        assert f"flow run {run_id}: Completed" in released.stdout
        status = json.loads(run_cli("status", run_id, "--json").stdout)
        assert status["exit_code"] == 0 and status["tasks"], status
    finally:
        stop_processes(worker)
    assert sorted(p.name for p in index.packages.iterdir()) == ["ci_pkg-1.0-py3-none-any.whl", "ci_pkg-1.0.tar.gz"]
