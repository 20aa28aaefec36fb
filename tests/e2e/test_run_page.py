"""What a release run shows on its Prefect page: the failed step in the final state message, artifacts
that lead with the outcome, and no artifacts for a run that never knew its project (issue 28, item 6)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_project


def run_artifacts(flow_run_id) -> dict[str, list[dict]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    # keyed artifacts only: Prefect's own result records have no key
    return {a.key: json.loads(a.data) if a.type == "table" else a.data for a in artifacts if a.key}


def test_the_files_table_leads_with_the_outcome(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    from wheelflow.flows.release import release

    project = make_project(tmp_path / "proj", index_url=index.simple_url)
    state = release(project=str(project), builder="local", return_state=True)
    assert state.is_completed(), state.message
    files = run_artifacts(state.state_details.flow_run_id)["release-tiny-pkg-files"]
    assert files and all(list(row)[:5] == ["file", "target", "upload", "proof", "sha256"] for row in files)
    assert {(row["upload"], row["proof"]) for row in files} == {("uploaded", "verified")}


def test_a_failed_release_names_its_step_in_the_final_state_message(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    from prefect.client.orchestration import get_client

    from wheelflow.flows.release import release

    smoke = "python -c 'raise SystemExit(\"the kernel returned garbage\")'"
    project = make_project(tmp_path / "proj", index_url=index.simple_url, smoke=smoke)
    state = release(project=str(project), builder="local", return_state=True)
    assert state.is_failed()
    run_id = state.state_details.flow_run_id
    report = json.loads((home / "reports" / f"{run_id}.json").read_text())
    step = next(c["check"] for c in report["checks"] if c["status"] == "failed")
    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(run_id).state.message or ""
    # the message the server keeps (the run's header in the UI, `status`, `trigger`)
    assert f"{step} failed: " in stored and "the kernel returned garbage" in stored, stored
    assert list(index.packages.iterdir()) == []


def test_a_run_that_never_knew_its_project_writes_no_artifacts(tmp_path: Path, home: Path, prefect_api) -> None:
    from wheelflow.flows.release import release

    (tmp_path / "not-a-project").mkdir()
    state = release(project=str(tmp_path / "not-a-project"), builder="local", return_state=True)
    assert state.is_failed()
    assert "release failed: " in (state.message or "") and "pyproject.toml" in state.message, state.message
    assert run_artifacts(state.state_details.flow_run_id) == {}  # no "release-unknown" checklist of None None
