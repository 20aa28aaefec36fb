"""The team path exactly as README and docs/deployments-and-ci.md tell it, on a fresh Prefect server,
from the README's install (`pip install .`, not editable, into a virtual environment of its own):
`wheelflow setup` run inside a wheelflow checkout, `wheelflow doctor`, a process worker on the control
pool that fetches wheelflow's code with the pull step, and releases triggered by the example CI step
(curl only).

The first trigger meets a typo in the code ref: the worker's run crashes in its pull step, before its
first task, and `status` and `trigger` say why; `setup` is run again while the server waits for the
run's own alert, and exactly one alert still arrives. A branch whose flows/context.py raises at import
then fails the run: the run executes the wheelflow it pulled, all of it, not the worker's installed
copy. Once the Variable names main, the same step releases the tag and exits 0, and the run's summary
names the commit that ran it. Last, the worker's machine dies mid-release (SIGKILL) and `setup` is
run again while the run still shows Running: the server marks it Crashed within the zombie window and
exactly one alert arrives. GitHub is the one part that cannot exist here: its runner is this
machine's bash with the GITHUB_* variables of a tag push, its server a bare repository on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from cistep import ci_step, tagged_repository
from conftest import (
    INDEX_PASSWORD,
    INDEX_USER,
    SLEEPING_SMOKE,
    WebhookReceiver,
    git,
    kill_process_tree,
    make_project,
    stop_processes,
    wait_for,
    wheelflow_code_remote,
)

DEDUP = 60  # long enough for `setup` to run again inside it on a loaded machine
HEARTBEAT = 30  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY's minimum, on the worker
ZOMBIE = 35  # a little over one heartbeat period: the test's kill is the only silence


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment where wheelflow is installed as the README says (`pip install .`): a wheel
    of this working tree, not an editable install. Its dependencies come from the test environment (a
    .pth file added after the install: pip sees no other wheelflow)."""
    root = tmp_path_factory.mktemp("readme-install")
    tree = wheelflow_code_remote(root / "tree")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(root / "dist"),
            str(tree),
        ],
        check=True,
        capture_output=True,
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (wheel,) = (root / "dist").glob("wheelflow-*.whl")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    (site,) = (venv / "lib").glob("python*/site-packages")
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for program in Path(sys.executable).parent.iterdir():  # the dependencies' programs (uv, twine...)
        if not (venv / "bin" / program.name).exists():
            (venv / "bin" / program.name).symlink_to(program)
    return venv / "bin"


def _cli(bin_dir: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "wheelflow"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def _run_logs(run_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(log.message for log in logs)


def _broken_branch(code: Path) -> str:
    """A branch of wheelflow's code whose flows/release.py prints a marker and whose flows/context.py
    raises at import: the worker's installed copy has neither."""
    git(code, "checkout", "-q", "-b", "broken")
    release = code / "flows" / "release.py"
    release.write_text(release.read_text() + '\nprint("MARKER-from-the-broken-branch", flush=True)\n')
    context = code / "flows" / "context.py"
    context.write_text(context.read_text() + '\nraise RuntimeError("context of the broken branch")\n')
    git(code, "commit", "-q", "-am", "broken")
    git(code, "checkout", "-q", "main")
    return git(code, "rev-parse", "main").strip()


@pytest.mark.case(
    "fault",
    "the team path from `pip install .`: setup run inside a checkout, a crash before the first task with setup "
    "run again inside the alert window, a code ref whose flows/context.py raises at import, then the worker "
    "killed (SIGKILL) mid-release and setup run again while the run still shows Running",
    "setup works from any folder; exactly one alert for the crash; the raising ref fails the run (it runs the "
    "code it pulled, all of it); the released run's summary names the commit that ran it; the killed run is "
    "marked Crashed within the zombie window and pages exactly once",
)
def test_the_readme_team_path_releases_a_pushed_tag_and_explains_a_crash_before_the_first_task(
    fresh_prefect_server, tmp_path: Path, index, installed: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    code = wheelflow_code_remote(tmp_path / "wheelflow-code")
    main_commit = _broken_branch(code)
    receiver = WebhookReceiver()
    alerting = {"WHEELFLOW_ALERT_WEBHOOK": receiver.url}
    setup_args = (
        "setup",
        "--code-repository",
        code.as_uri(),
        "--code-ref",
        "mian",
        "--alert-dedup-window",
        str(DEDUP),
        "--zombie-window",
        str(ZOMBIE),
    )
    # Inside a checkout, whose wheelflow/ folder lacks flows/ (pyproject maps it from the top level).
    shadow = subprocess.run(
        [str(installed / "python"), "-c", "import wheelflow.flows.release"], cwd=code, capture_output=True, text=True
    )
    assert shadow.returncode == 0, shadow.stderr[-2000:]
    setup = _cli(installed, *setup_args, cwd=code, env=alerting)
    assert setup.returncode == 0, setup.stderr[-3000:]
    with get_client(sync_client=True) as client:
        release = client.read_deployment_by_name("release/release")
    assert release.entrypoint == "wheelflow.flows.release.release" and release.work_pool_name == "wheelflow-control"

    machine = tmp_path / "control-machine"
    machine.mkdir()
    worker_env = {
        **os.environ,
        "WHEELFLOW_HOME": str(machine / "home"),
        "WHEELFLOW_STAGING_USERNAME": INDEX_USER,
        "WHEELFLOW_STAGING_PASSWORD": INDEX_PASSWORD,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT),
    }
    doctor = subprocess.run(
        [str(installed / "wheelflow"), "doctor", "--pool", "wheelflow-control", "--json"],
        env=worker_env,
        capture_output=True,
        text=True,
        cwd=machine,
    )
    missing = [f for f in json.loads(doctor.stdout) if not f["ok"] and f.get("required", True)]
    assert doctor.returncode == 0 and not missing, doctor.stdout[-3000:] + doctor.stderr[-2000:]
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [str(installed / "python"), "-m", "prefect", "worker", "start", "--pool", "wheelflow-control"],
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
        # What the crash tells the user to do, while the server waits for the run's own alert (none comes).
        again = _cli(installed, *setup_args, cwd=tmp_path, env=alerting)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "wheelflow-release-problem (unchanged)" in again.stderr, again.stderr
        assert [a for a in receiver.received if run_id in json.dumps(a)] == []  # setup ran inside the window
        status = _cli(installed, "status", run_id, "--json", cwd=tmp_path)
        verdict = json.loads(status.stdout)
        assert status.returncode == 3 and verdict["state"] == "Crashed" and verdict["tasks"] == []
        assert verdict["message"].startswith(
            "crashed before its first task: cannot fetch wheelflow's code at 'mian': Failed to clone repository"
        ), verdict
        assert "fix: check the Variables wheelflow_code_repository and wheelflow_code_ref" in verdict["message"]
        assert verdict["reason"] == verdict["message"]
        assert "crashed before its first task: cannot fetch wheelflow's code at 'mian'" in crashed.stdout  # the CI log
        assert list(index.packages.iterdir()) == []
        crash_id = run_id
        (crash_alert,) = wait_for(lambda: _alerts_about(receiver, crash_id), DEDUP + 60, "the crash's one alert")
        assert crash_alert["source"] == "prefect-automation" and "crashed" in crash_alert["summary"]

        Variable.set("wheelflow_code_ref", "broken", overwrite=True)  # "edit it in the UI", as prefect.yaml says
        broken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert broken.returncode in (1, 3), broken.stdout[-3000:] + broken.stderr[-3000:]  # not released
        broken_id = broken.stdout.split("started flow run ")[1].split()[0]
        logs = _run_logs(broken_id)
        assert 'RuntimeError("context of the broken branch")' in logs, logs[-3000:]
        assert "MARKER-from-the-broken-branch" not in (tmp_path / "worker.log").read_text()
        assert "this worker's installed wheelflow 0.1.0" in logs and "differs from it" in logs, logs[-3000:]
        assert list(index.packages.iterdir()) == []

        Variable.set("wheelflow_code_ref", "main", overwrite=True)
        released = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert released.returncode == 0, released.stdout[-3000:] + released.stderr[-3000:]
        run_id = released.stdout.split("started flow run ")[1].split()[0]
        assert f"flow run {run_id}: Completed" in released.stdout
        status = json.loads(_cli(installed, "status", run_id, "--json", cwd=tmp_path).stdout)
        assert status["exit_code"] == 0 and status["tasks"], status
        assert "the same as this worker's installed copy" in _run_logs(run_id)
        with get_client(sync_client=True) as client:
            (summary,) = [
                a for a in client.read_artifacts() if a.key == "release-ci-pkg-summary" and str(a.flow_run_id) == run_id
            ]
        assert f"wheelflow 0.1.0 at commit {main_commit[:12]} (ref main, fetched by the worker)" in summary.data
        assert sorted(p.name for p in index.packages.iterdir()) == [
            "ci_pkg-1.0-py3-none-any.whl",
            "ci_pkg-1.0.tar.gz",
        ]

        # The worker's machine dies mid-release (SIGKILL: worker and run), and `setup` is run again while
        # the run still shows Running, a zombie to be: the server still marks it Crashed within the
        # zombie window, and exactly one alert arrives (a re-run of setup used to disarm the automations).
        slow = make_project(tmp_path / "slow", "slow-pkg", "2.0.0", index_url=index.simple_url, smoke=SLEEPING_SMOKE)
        started = _cli(installed, "trigger", "release", "--param", f"project={slow}", "--json", cwd=tmp_path)
        assert started.returncode == 0, started.stderr[-3000:]
        zombie_id = json.loads(started.stdout)["flow_run_id"]
        wait_for(lambda: _heartbeats(zombie_id), 300, "the release's first heartbeat on the worker")
        kill_process_tree(worker)
        again = _cli(installed, *setup_args[:4], "main", *setup_args[5:], cwd=tmp_path, env=alerting)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "wheelflow-zombie-runs (unchanged)" in again.stderr, again.stderr
        assert _state(zombie_id).name == "Running"  # setup ran while the run was a zombie to be
        set_up_at = time.monotonic()
        crashed = wait_for(
            lambda: (s := _state(zombie_id)).name == "Crashed" and s, ZOMBIE + 30, "the run to be marked Crashed"
        )
        assert f"no heartbeat for {ZOMBIE} s" in crashed.message, crashed.message
        (alert,) = wait_for(lambda: _alerts_about(receiver, zombie_id), DEDUP + 60, "the zombie's one alert")
        assert time.monotonic() - set_up_at < ZOMBIE + DEDUP + 45  # window + dedup + evaluation
        assert alert["source"] == "prefect-automation" and "crashed" in alert["summary"]
        # the automation would notify again once its window had passed and the server evaluated it
        # (every 5 s): there is no event for "decided not to fire", so watch the receiver until then
        deadline = time.monotonic() + DEDUP + 15
        while time.monotonic() < deadline and len(_alerts_about(receiver, zombie_id)) == 1:
            time.sleep(0.5)  # watching for a second alert up to the automation's deadline
        assert _alerts_about(receiver, zombie_id) == [alert]
        # minutes after its window closed, the crash before the first task still paged once
        assert _alerts_about(receiver, crash_id) == [crash_alert]
    finally:
        stop_processes(worker)
        receiver.close()


def _heartbeats(run_id: str) -> list[dict]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        answer = client.request(
            "POST",
            "/events/filter",
            json={
                "filter": {
                    "event": {"name": ["prefect.flow-run.heartbeat"]},
                    "resource": {"id": [f"prefect.flow-run.{run_id}"]},
                },
                "limit": 5,
            },
        )
    return answer.json()["events"]


def _state(run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def _alerts_about(receiver: WebhookReceiver, run_id: str) -> list[dict]:
    return [a for a in receiver.received if run_id in json.dumps(a)]
