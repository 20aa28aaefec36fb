"""What a release run shows on its Prefect page: the failed step in the final state message, artifacts
that lead with the outcome, and no artifacts for a run that never knew its project (issue 28, item 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_project
from uipage import rendered_text


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


@pytest.mark.case(
    "fault",
    "a release fails in its smoke test on staging after the upload; its run page is opened in the UI",
    "the final state message names the step; the run is renamed after the failed step and its error, so the run page's header "
    "shows them without hovering (rendered in headless Chromium); "
    "the rolled-back uploads are not drawn Completed (green) but Cancelled, named 'Rolled back'",
)
def test_a_failed_release_names_its_step_where_a_user_looks_and_its_rollback_in_the_graph(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from wheelflow.flows.release import release

    smoke = "python -c 'raise SystemExit(\"the kernel returned garbage\")'"
    project = make_project(tmp_path / "proj", index_url=index.simple_url, smoke=smoke)
    state = release(project=str(project), builder="local", return_state=True)
    assert state.is_failed()
    run_id = state.state_details.flow_run_id
    report = json.loads((home / "reports" / f"{run_id}.json").read_text())
    step = next(c["check"] for c in report["checks"] if c["status"] == "failed")
    assert {f["upload"] for f in report["files"]} == {"rolled back"}, report["files"]
    assert list(index.packages.iterdir()) == []
    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(run_id).state.message or ""
    # the message the server keeps (`status`, `trigger`, the alert; the UI's state badge on hover)
    assert f"{step} failed: " in stored and "the kernel returned garbage" in stored, stored

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    uploads = {r.name: (r.state.type.value, r.state.name) for r in runs if r.name.startswith("upload[")}
    assert set(uploads) == {f"upload[{f['filename']}→{f['target']}]" for f in report["files"]}, uploads
    assert set(uploads.values()) == {("CANCELLED", "Rolled back")}, uploads  # grey in the run graph, not green
    with get_client(sync_client=True) as client:
        renamed = client.read_flow_run(run_id).name
    verdict = f"{step} failed: {report['error']}"
    assert renamed.endswith(f": {verdict}"), renamed

    # the page as a person opens it (the PNG stays under tmp_path): the header, above the tabs, says it
    page = rendered_text(f"{prefect_api.removesuffix('/api')}/runs/flow-run/{run_id}", tmp_path / "failed-run.png")
    header = page[: page.index("Task Runs")]  # the first tab's label ends the header (and graph)
    assert "Failed" in header, header  # the state badge
    assert renamed in header, header


def test_a_run_that_never_knew_its_project_writes_no_artifacts(tmp_path: Path, home: Path, prefect_api) -> None:
    from wheelflow.flows.release import release

    (tmp_path / "not-a-project").mkdir()
    state = release(project=str(tmp_path / "not-a-project"), builder="local", return_state=True)
    assert state.is_failed()
    assert "release failed: " in (state.message or "") and "pyproject.toml" in state.message, state.message
    assert run_artifacts(state.state_details.flow_run_id) == {}  # no "release-unknown" checklist of None None
