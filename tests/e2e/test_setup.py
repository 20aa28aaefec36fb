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
            for name in (
                "release/release",
                "release/nightly",
                "sync-monitor/sync-monitor",
                "backfill/backfill",
                "upstream-check/upstream-check",
                "build-cell/build-cell",
            ):
                try:
                    client.delete_deployment(client.read_deployment_by_name(name).id)
                except Exception:
                    pass  # not registered: nothing to remove
