"""Server-side alerting with Prefect Automations, against a real `prefect server`, real `wheelflow serve`
processes, a real pypiserver and a real webhook receiver: a worker killed with SIGKILL, a failed
release (exactly one alert across the hook and the automation), and a schedule that stops firing.

Windows are the smallest the server allows: Prefect refuses heartbeats more often than every 30 s and
proactive windows under 10 s, and evaluates proactive triggers every 5 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import (
    INDEX_PASSWORD,
    INDEX_USER,
    SLEEPING_SMOKE,
    WebhookReceiver,
    git,
    kill_process_tree,
    make_project,
    run_cli,
    wait_for,
)
from projects import make_matrix_project

HEARTBEAT = 30  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY's minimum
ZOMBIE_WINDOW = 35  # a little over one heartbeat period: the test's kill is the only silence


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module", autouse=True)
def remove_automations_afterwards(prefect_api):
    """The automations act on every run of the session's server: take them away after this module."""
    yield
    from wheelflow.adapters.prefect_api import install_automations

    install_automations([], [])


@contextmanager
def serving(root: Path, receiver: WebhookReceiver, *args: str, env: dict[str, str] | None = None):
    """A `wheelflow serve` process that registered the automations; SIGTERM at the end unless killed."""
    log_path = root / "serve.log"
    environ = {
        **os.environ,
        "WHEELFLOW_HOME": str(root / "home"),
        "WHEELFLOW_ALERT_WEBHOOK": receiver.url,
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT),
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "WHEELFLOW_STAGING_USERNAME": INDEX_USER,
        "WHEELFLOW_STAGING_PASSWORD": INDEX_PASSWORD,
        **(env or {}),
    }
    exe = str(Path(sys.executable).with_name("wheelflow"))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [exe, "serve", "--zombie-window", str(ZOMBIE_WINDOW), *args],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )

    def started():
        if proc.poll() is not None:
            pytest.fail(f"wheelflow serve exited: {log_path.read_text()[-3000:]}")
        return "wheelflow: serving" in log_path.read_text()

    wait_for(started, 60, "wheelflow serve to install its automations and serve")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        assert receiver.url.split("/")[-1] not in log_path.read_text()  # the webhook's token is never logged


def _start_release(project: Path) -> str:
    result = run_cli("trigger", "release", "--param", f"project={project}", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)["flow_run_id"]


def _run_state(run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def _events(name: str, resource: str) -> list[dict]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        answer = client.request(
            "POST",
            "/events/filter",
            json={"filter": {"event": {"name": [name]}, "resource": {"id": [resource]}}, "limit": 50},
        )
    return answer.json()["events"]


def _alerts_about(receiver: WebhookReceiver, run_id: str) -> list[dict]:
    return [a for a in receiver.received if run_id in json.dumps(a)]


def _kill_after_first_heartbeat(proc: subprocess.Popen, run_id: str) -> None:
    """SIGKILL the serving process and the flow run's process (a dead machine), once the server has the
    run's first heartbeat: that is what a silence is measured from."""
    wait_for(
        lambda: _events("prefect.flow-run.heartbeat", f"prefect.flow-run.{run_id}"),
        120,
        "the run's first heartbeat",
    )
    kill_process_tree(proc)


@pytest.mark.case(
    "fault",
    "the worker running a release is killed with SIGKILL",
    "the server marks the run Crashed within the heartbeat window; exactly one alert",
)
def test_a_killed_worker_s_run_becomes_crashed_and_alerts_once(prefect_api, index, receiver, tmp_path: Path) -> None:
    project = _slow_project(tmp_path / "slow", index, "1.0.1")
    with serving(tmp_path, receiver, "--only", "release", "--alert-dedup-window", "10") as proc:
        run_id = _start_release(project)
        _kill_after_first_heartbeat(proc, run_id)
        killed_at = time.monotonic()
        assert _run_state(run_id).name == "Running"  # nobody left to say otherwise

        crashed = wait_for(
            lambda: (s := _run_state(run_id)).name == "Crashed" and s,
            ZOMBIE_WINDOW + 30,
            "the zombie automation to mark the run Crashed",
        )
        assert "no heartbeat for 35 s" in crashed.message
        alert = wait_for(lambda: _alerts_about(receiver, run_id), 40, "the server's alert")
    assert time.monotonic() - killed_at < ZOMBIE_WINDOW + 10 + 30  # heartbeat window + dedup window + evaluation
    (only,) = alert
    assert only["source"] == "prefect-automation" and "crashed" in only["summary"]
    assert f"({run_id})" in only["text"] and "state: Crashed: no heartbeat for 35 s" in only["text"]
    assert f"project: {project}" in only["text"]


@pytest.mark.case(
    "fault",
    "a worker is killed with SIGKILL mid-release, then the automations are installed again (what the crash "
    "message tells the user to do), with the same options or a changed zombie window",
    "the run is still marked Crashed and exactly one alert arrives: an unchanged automation is left alone, a "
    "changed one is re-armed for the run it was waiting on",
)
@pytest.mark.parametrize("reinstall", ["same options", "changed zombie window"])
def test_installing_the_automations_again_mid_zombie_still_crashes_the_run_and_alerts_once(
    prefect_api, index, receiver, tmp_path: Path, reinstall: str
) -> None:
    project = _slow_project(
        tmp_path / "slow", index, {"same options": "1.0.4", "changed zombie window": "1.0.5"}[reinstall]
    )
    zombie_window = {"same options": ZOMBIE_WINDOW, "changed zombie window": ZOMBIE_WINDOW + 5}[reinstall]
    with serving(tmp_path, receiver, "--only", "release", "--alert-dedup-window", "10") as proc:
        run_id = _start_release(project)
        _kill_after_first_heartbeat(proc, run_id)
    reinstalled = run_cli(
        "automations",
        "install",
        "--zombie-window",
        str(zombie_window),
        "--alert-dedup-window",
        "10",
        env={"WHEELFLOW_ALERT_WEBHOOK": receiver.url, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT)},
    )
    assert reinstalled.returncode == 0, reinstalled.stderr[-3000:]
    installed_at = time.monotonic()
    if reinstall == "same options":
        assert "wheelflow-zombie-runs (unchanged)" in reinstalled.stderr, reinstalled.stderr
        assert "(updated" not in reinstalled.stderr and "(created" not in reinstalled.stderr
    else:
        assert "wheelflow-zombie-runs (updated, re-armed for 1 run(s))" in reinstalled.stderr, reinstalled.stderr
    assert _run_state(run_id).name == "Running"

    crashed = wait_for(
        lambda: (s := _run_state(run_id)).name == "Crashed" and s,
        zombie_window + 30,
        "the zombie automation to mark the run Crashed",
    )
    assert f"no heartbeat for {zombie_window} s" in crashed.message
    (alert,) = wait_for(lambda: _alerts_about(receiver, run_id), 40, "the server's alert")
    assert _no_second_alert(receiver, run_id, 10) == [alert]
    assert time.monotonic() - installed_at < zombie_window + 10 + 45  # window + dedup + evaluation
    assert alert["source"] == "prefect-automation" and "crashed" in alert["summary"]
    assert f"({run_id})" in alert["text"]
    # the run's page, at the address the installing command reached the server (the server itself knows none)
    assert f"flow run page: {prefect_api.removesuffix('/api')}/runs/flow-run/{run_id}" in alert["text"]


@pytest.mark.case(
    "fault",
    "a release fails with the server-side automation installed too",
    "exactly one alert: the rich one from the run's hook; the automation stays quiet",
)
def test_a_failed_release_alerts_exactly_once(prefect_api, index, receiver, tmp_path: Path) -> None:
    project = make_project(tmp_path / "bad", index_url=index.simple_url)
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace("answer() == 42", "answer() == 41"))
    dedup = 20
    with serving(tmp_path, receiver, "--only", "release", "--alert-dedup-window", str(dedup)):
        run_id = _start_release(project)
        wait_for(lambda: _run_state(run_id).is_final(), 300, "the release to end")
        assert _run_state(run_id).name == "Failed"
        wait_for(lambda: _alerts_about(receiver, run_id), 60, "the hook's alert")
        # The automation would notify once its window has passed and the server evaluated it (every 5 s):
        # there is no event for "decided not to fire", so watch the receiver until then.
        deadline = time.monotonic() + dedup + 15
        while time.monotonic() < deadline and len(_alerts_about(receiver, run_id)) == 1:
            time.sleep(0.5)  # watching for a second alert up to the automation's deadline
    alerts = _alerts_about(receiver, run_id)
    assert [a["event"] for a in alerts] == ["release-failed"]  # the rich one, not the automation's
    assert any("install + smoke on staging" in line for line in alerts[0]["lines"])
    assert _events("wheelflow.alert.sent", f"prefect.flow-run.{run_id}")


def _slow_project(root: Path, index, version: str) -> Path:
    """A release that stays Running (its smoke test sleeps) until something ends it. Each test releases
    its own version: a run killed or cancelled by an earlier test may hold its version's lock until the
    lease lapses, and a run waiting for it would measure that wait, not what the test is about."""
    return make_project(root, version=version, index_url=index.simple_url, smoke=SLEEPING_SMOKE)


def _no_second_alert(receiver: WebhookReceiver, run_id: str, window: float) -> list[dict]:
    """The alerts about ``run_id`` once the automation's window has passed and the server evaluated it
    (every 5 s): there is no event for "decided not to fire", so watch the receiver until then."""
    deadline = time.monotonic() + window + 15
    while time.monotonic() < deadline and len(_alerts_about(receiver, run_id)) <= 1:
        time.sleep(0.5)  # watching for a second alert up to the automation's deadline
    return _alerts_about(receiver, run_id)


@pytest.mark.case(
    "fault",
    "a running release is cancelled (UI / prefect flow-run cancel: Cancelling; trigger --wait's SIGTERM)",
    "exactly one alert: the hook's, sent at Cancelling; the automation does not page again at Cancelled",
)
@pytest.mark.parametrize("how", ["api", "sigterm"])
def test_a_cancelled_release_alerts_exactly_once(prefect_api, index, receiver, tmp_path: Path, how: str) -> None:
    project = _slow_project(tmp_path / "slow", index, {"api": "1.0.2", "sigterm": "1.0.3"}[how])
    dedup = 20
    with serving(tmp_path, receiver, "--only", "release", "--alert-dedup-window", str(dedup)):
        if how == "api":  # what the UI's Cancel and `prefect flow-run cancel` do, while CI follows the run
            exe = str(Path(sys.executable).with_name("wheelflow"))
            follower_out, follower_err = tmp_path / "follower.json", tmp_path / "follower.log"
            with open(follower_out, "w") as stdout, open(follower_err, "w") as stderr:
                follower = subprocess.Popen(
                    [exe, "trigger", "release", "--param", f"project={project}", "--wait", "--json"],
                    stdout=stdout,
                    stderr=stderr,
                )
            try:
                wait_for(lambda: ": Running" in follower_err.read_text(), 300, "the release to run")
                run_id = follower_err.read_text().split("(", 1)[1].split(")", 1)[0]
                wait_for(
                    lambda: list(index.packages.iterdir()), 300, "the upload to staging"
                )  # cancelled in its smoke test
                from prefect.client.orchestration import get_client
                from prefect.states import Cancelling

                with get_client(sync_client=True) as client:
                    client.set_flow_run_state(run_id, Cancelling(message="cancelled from the UI"), force=True)
                assert follower.wait(120) == 3
            finally:
                if follower.poll() is None:
                    follower.kill()
            # trigger --wait ends with the canceller's reason, not the killed smoke test's crash
            followed = json.loads(follower_out.read_text())
            assert (followed["state"], followed["message"], followed["reason"]) == (
                "Cancelled",
                "cancelled from the UI",
                "cancelled from the UI",
            ), followed
            assert "Cancelled: cancelled from the UI" in follower_err.read_text()
        else:  # the CI job running `wheelflow trigger --wait` is cancelled
            exe = str(Path(sys.executable).with_name("wheelflow"))
            out = tmp_path / "trigger.log"
            with open(out, "w") as log:
                proc = subprocess.Popen(
                    [exe, "trigger", "release", "--param", f"project={project}", "--wait"], stdout=log, stderr=log
                )
            try:
                wait_for(lambda: ": Running" in out.read_text(), 300, "the release to run")
                wait_for(lambda: list(index.packages.iterdir()), 300, "the upload to staging")
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(60) == 3
            finally:
                if proc.poll() is None:
                    proc.kill()
            run_id = out.read_text().split("(", 1)[1].split(")", 1)[0]
        wait_for(lambda: _run_state(run_id).name == "Cancelled", 120, "the runner to cancel the run")
        wait_for(lambda: _alerts_about(receiver, run_id), 60, "the hook's alert")
        alerts = _no_second_alert(receiver, run_id, dedup)
    assert [a["event"] for a in alerts] == ["release-failed"], alerts  # the hook's rich alert, once
    reason = {"api": "cancelled from the UI", "sigterm": "cancelled by wheelflow trigger (SIGTERM)"}[how]
    # the reason its canceller gave, not the crash of the smoke test the cancel interrupted
    assert f"cancelled: {reason}" in alerts[0]["summary"], alerts[0]["summary"]
    assert "termination signal" not in alerts[0]["summary"]
    # a cancelled release ends like a failed one: what it uploaded to staging is rolled back
    report = json.loads((tmp_path / "home" / "reports" / f"{run_id}.json").read_text())
    assert report["files"] and {f["upload"] for f in report["files"]} == {"rolled back"}, report["files"]
    assert sorted(p.name for p in index.packages.iterdir()) == []
    assert not [line for line in alerts[0]["lines"] if line.startswith("published")]  # nothing stays published
    status = run_cli("status", run_id, "--json")
    assert status.returncode == 3, status.stderr[-2000:]
    verdict = json.loads(status.stdout)
    assert (verdict["state"], verdict["message"], verdict["reason"]) == ("Cancelled", reason, reason)


@pytest.mark.case(
    "fault",
    "the CI job running `wheelflow trigger --wait` is cancelled while its run is still Scheduled (no runner yet)",
    "the run goes straight to Cancelled and pages nobody: neither the hook nor the automation",
)
def test_a_release_cancelled_before_it_started_pages_nobody(prefect_api, index, receiver, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", version="1.0.6", index_url=index.simple_url)
    dedup = 20
    with serving(tmp_path, receiver, "--only", "release", "--alert-dedup-window", str(dedup)):
        pass  # registers the release deployment and the automations; once it stops, no runner picks the run up
    exe = str(Path(sys.executable).with_name("wheelflow"))
    out = tmp_path / "trigger.log"
    with open(out, "w") as log:
        proc = subprocess.Popen(
            [exe, "trigger", "release", "--param", f"project={project}", "--wait"], stdout=log, stderr=log
        )
    try:
        wait_for(lambda: ": Scheduled" in out.read_text(), 120, "trigger to follow the scheduled run")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
    run_id = out.read_text().split("(", 1)[1].split(")", 1)[0]
    wait_for(lambda: _run_state(run_id).name == "Cancelled", 30, "the server to cancel the run")
    assert _no_second_alert(receiver, run_id, dedup) == []  # what docs/deployments-and-ci.md promises


def _timed_out_project(root: Path, index) -> Path:
    """A one-cell matrix whose build takes 60 s under a 2 s cell timeout (local builder)."""
    project = make_matrix_project(root, cells=1, concurrency=1, seconds=60)
    text = (project / "pyproject.toml").read_text().replace("concurrency = 1", "concurrency = 1\ntimeout = 2")
    text = text.replace("[tool.wheelflow]\n", '[tool.wheelflow]\nbuilder = "local"\n')
    (project / "pyproject.toml").write_text(
        text + f'\n[tool.wheelflow.targets.staging]\nindex = "{index.simple_url}"\nverify-timeout = 5\n'
    )
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "release")
    git(project, "tag", "v1.0.0")
    return project


def _unapproved_project(root: Path, index) -> Path:
    """Staging, then production behind a manual approval nobody gives within 3 s."""
    project = make_project(root, index_url=index.simple_url)
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        text.replace("[tool.wheelflow]\n", '[tool.wheelflow]\napproval = "manual"\napproval-timeout = 3\n')
        + f'\n[tool.wheelflow.targets.production]\nindex = "{index.simple_url}"\nverify-timeout = 5\n'
    )
    return project


@pytest.mark.case(
    "fault",
    "a release ends badly without crashing: a cell stopped by its timeout; an approval nobody gives in time",
    "exactly one alert each: the hook's, naming the timeout; the automation stays quiet",
)
@pytest.mark.parametrize("how", ["timed out", "paused too long"])
def test_a_timed_out_or_unapproved_release_alerts_exactly_once(
    prefect_api, index, receiver, tmp_path: Path, how: str
) -> None:
    if how == "timed out":
        project, expected = _timed_out_project(tmp_path / "slow-build", index), "stopped by its 2 s timeout"
    else:
        project, expected = (
            _unapproved_project(tmp_path / "unapproved", index),
            "no decision to publish to production within 3 s",
        )
    dedup = 20
    env = {"WHEELFLOW_PRODUCTION_USERNAME": INDEX_USER, "WHEELFLOW_PRODUCTION_PASSWORD": INDEX_PASSWORD}
    with serving(tmp_path, receiver, "--only", "release", "--alert-dedup-window", str(dedup), env=env):
        run_id = _start_release(project)
        wait_for(lambda: _run_state(run_id).is_final(), 300, "the release to end")
        assert _run_state(run_id).name == "Failed"
        wait_for(lambda: _alerts_about(receiver, run_id), 60, "the hook's alert")
        alerts = _no_second_alert(receiver, run_id, dedup)
    assert [a["event"] for a in alerts] == ["release-failed"], alerts  # the hook's rich alert, once
    assert expected in alerts[0]["summary"], alerts[0]["summary"]


@pytest.mark.case(
    "fault",
    "sync-monitor's schedule stops firing (deployment paused)",
    "the proactive automation alerts once, naming the deployment",
)
def test_a_silent_sync_monitor_is_noticed_by_the_server(prefect_api, index, receiver, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git(repo, "commit", "-q", "--allow-empty", "-m", "first")
    git(repo, "tag", "v0.1.0")  # just tagged: within its grace period, so each monitor run completes
    projects = tmp_path / "monitored.json"
    projects.write_text(json.dumps([{"name": "just-tagged", "repo": str(repo), "indexes": [index.simple_url]}]))
    # The automation waits two intervals (40 s): on a loaded 2-core machine a run every 8 s left gaps
    # close to a 16 s window, and it rightly fired while the monitor still ran.
    interval = 20

    def completed_runs():
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["sync-monitor"]))
            )
        return [r for r in runs if r.state and r.state.is_completed()]

    def silent_alerts():
        return [a for a in receiver.received if "sync-monitor" in a.get("summary", "")]

    with serving(
        tmp_path,
        receiver,
        "--only",
        "sync-monitor",
        "--monitor-projects",
        str(projects),
        "--monitor-interval",
        str(interval),
    ):
        wait_for(lambda: len(completed_runs()) >= 2, 150, "two scheduled sync-monitor runs to complete")
        assert silent_alerts() == []  # while it runs, no alert
        with get_client(sync_client=True) as client:
            client.pause_deployment(client.read_deployment_by_name("sync-monitor/sync-monitor").id)
        try:
            (alert,) = wait_for(silent_alerts, 120, "the silent-monitor automation's alert")
        finally:
            with get_client(sync_client=True) as client:
                client.resume_deployment(client.read_deployment_by_name("sync-monitor/sync-monitor").id)
    assert alert["summary"] == "deployment sync-monitor finished no run in 40 s (two intervals)"
    assert "schedule of sync-monitor may have stopped firing" in alert["text"]
