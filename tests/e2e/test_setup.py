"""`wheelflow setup` and `wheelflow doctor` against the session's real Prefect server: what the README's
worker path lacked (the Variables and the Secret block of prefect.yaml's pull step, strict parameter
schemas, quiet schedules) is there after one command, and doctor finds nothing missing on the server."""

from __future__ import annotations

import json

import httpx
from conftest import run_cli


def test_setup_prepares_the_server_for_workers_and_doctor_agrees(prefect_api, tmp_path) -> None:
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    before = run_cli("doctor", "--json")
    assert before.returncode in (0, 1)
    result = run_cli(
        "setup", "--code-repository", "file:///srv/git/wheelflow.git", "--code-ref", "v1", "--no-automations"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wheelflow: sync-monitor: schedule registered inactive until configured: set the Prefect Variable" in (
        result.stderr
    )
    assert Variable.get("wheelflow_code_repository") == "file:///srv/git/wheelflow.git"
    assert Variable.get("wheelflow_code_ref") == "v1"
    assert Secret.load("wheelflow-git-token").get() == ""  # a public repository: an empty token
    with get_client(sync_client=True) as client:
        deployments = {n: client.read_deployment_by_name(n) for n in ("release/release", "sync-monitor/sync-monitor")}
        try:
            assert [p.name for p in client.read_work_pools()] >= ["wheelflow-control", "wheelflow-gpu"]
            assert [
                s.active for s in client.read_deployment_schedules(deployments["sync-monitor/sync-monitor"].id)
            ] == [False]
            answer = httpx.post(
                f"{prefect_api}/deployments/{deployments['release/release'].id}/create_flow_run",
                json={"parameters": {"project": str(tmp_path), "versoin": "1.0"}},
            )
            assert answer.status_code == 409 and "versoin" in answer.text  # strict, as served deployments are
            doctor = run_cli("doctor", "--json")
            server_checks = [
                f for f in json.loads(doctor.stdout) if f["check"].split()[0] in ("work", "Variable", "Secret")
            ]
            assert server_checks and all(f["ok"] for f in server_checks), server_checks
        finally:  # other modules serve deployments under these names
            _remove_deployments(client)


DEPLOYMENTS = (
    "release/release",
    "release/nightly",
    "sync-monitor/sync-monitor",
    "backfill/backfill",
    "upstream-check/upstream-check",
    "build-cell/build-cell",
)


def _remove_deployments(client) -> None:
    for name in DEPLOYMENTS:
        try:
            client.delete_deployment(client.read_deployment_by_name(name).id)
        except Exception:
            pass  # not registered: nothing to remove


def test_setup_run_again_keeps_a_configured_nightly_and_says_so(prefect_api, tmp_path) -> None:
    """Issue 33: a re-run of setup put nightly back to wheelflow's demo project and switched its
    schedule off; it keeps what was configured on the server now (as a person does it in the UI)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    setup = ("setup", "--code-repository", "file:///srv/git/wheelflow.git", "--no-automations")
    with get_client(sync_client=True) as client:
        try:
            first = run_cli(*setup)
            assert first.returncode == 0, first.stderr[-3000:]
            nightly = client.read_deployment_by_name("release/nightly")
            (schedule,) = client.read_deployment_schedules(nightly.id)
            assert nightly.parameters["project"] == "examples/hello-cuda" and not schedule.active
            assert "wheelflow: nightly: schedule registered inactive until configured" in first.stderr
            # what the waiting line tells a person to do in the UI
            client.update_deployment(
                nightly.id, DeploymentUpdate(parameters={"project": str(tmp_path / "ext"), "dev": True})
            )
            client.update_deployment_schedule(nightly.id, schedule.id, active=True)

            again = run_cli(*setup)
            assert again.returncode == 0, again.stderr[-3000:]
            assert "wheelflow: nightly: kept the parameters set on the server: project" in again.stderr, again.stderr
            assert "nightly: schedule registered inactive" not in again.stderr
            nightly = client.read_deployment_by_name("release/nightly")
            assert nightly.parameters == {"project": str(tmp_path / "ext"), "dev": True}
            assert [s.active for s in client.read_deployment_schedules(nightly.id)] == [True]
            release = client.read_deployment_by_name("release/release")
            assert release.parameters == {"project": "examples/hello-cuda"}  # untouched: nothing says kept
            assert "release: kept" not in again.stderr
        finally:  # other modules serve deployments under these names
            _remove_deployments(client)
