"""What a cancelled release says (issue 33, item 4): the reason its canceller gave is its final message
in `status`, `trigger` and the alert; what stays published is named, proven or not; a run cancelled
before it started pages nobody."""

from __future__ import annotations

import json
from types import SimpleNamespace
from uuid import uuid4

import pytest

from wheelflow.ops.orchestration import NO_CANCEL_REASON, cancel_reason, run_status

RUNNER_FINAL = ("CANCELLED", "Flow run was cancelled successfully.")
KILLED_TASK = {
    "name": "install-and-smoke",
    "state": "Crashed",
    "history": [{"name": "Crashed", "message": "Execution was aborted by a termination signal."}],
}


def test_the_cancel_reason_is_the_canceller_s_not_the_runner_s() -> None:
    states = [
        ("SCHEDULED", None),
        ("RUNNING", None),
        ("CANCELLING", "cancelled by wheelflow trigger (SIGTERM)"),
        RUNNER_FINAL,
    ]
    assert cancel_reason(states) == "cancelled by wheelflow trigger (SIGTERM)"
    # the UI's Cancel gives no message: say so rather than Prefect's "cancelled successfully"
    assert cancel_reason([("RUNNING", None), ("CANCELLING", None), RUNNER_FINAL]) == NO_CANCEL_REASON


@pytest.mark.case(
    "fault",
    "a release started by a runner is cancelled while a task runs (its process gets SIGTERM)",
    "status's reason is the cancel's reason, not the killed task's crash",
)
def test_a_cancelled_run_is_explained_by_its_cancel_not_by_the_task_it_interrupted() -> None:
    status = run_status("a", "n", "Cancelled", "CANCELLED", "cancelled by wheelflow trigger (SIGTERM)", [KILLED_TASK])
    assert status["reason"] == "cancelled by wheelflow trigger (SIGTERM)"
    assert "termination signal" not in json.dumps({k: status[k] for k in ("message", "reason")})
    # a crash is still explained by its task
    crashed = run_status("a", "n", "Crashed", "CRASHED", "Execution was aborted", [KILLED_TASK])
    assert crashed["reason"].startswith("install-and-smoke: Crashed")


def _report(tmp_path, run_id, **content) -> None:
    reports = tmp_path / "reports"
    reports.mkdir(exist_ok=True)
    (reports / f"{run_id}.json").write_text(json.dumps(content))


@pytest.fixture
def hook(monkeypatch, tmp_path):
    """The release hook with what it sends captured: no channel, server or UI exists in a unit test."""
    import flows.hooks as hooks

    sent: dict[str, list] = {"alerts": [], "events": []}
    monkeypatch.setenv("WHEELFLOW_HOME", str(tmp_path))
    monkeypatch.setattr(hooks, "failed_task_attempts", lambda *a, **k: ([], []))
    monkeypatch.setattr(hooks, "configured_channels", lambda **k: ["webhook"])
    monkeypatch.setattr(hooks, "send_alert", lambda alert, *a, **k: sent["alerts"].append(alert) or 1)
    monkeypatch.setattr(hooks, "emit_alert_sent", lambda run, flow, n: sent["events"].append(n))
    monkeypatch.setattr(hooks, "read_cancel_reason", lambda run_id: "cancelled from the UI")
    monkeypatch.setattr(hooks, "ui_url", lambda run_id: None)
    return hooks, sent


def _run(started: bool):
    return SimpleNamespace(
        id=uuid4(), name="brave-fox", flow_id=uuid4(), parameters={"project": "p"}, start_time=started or None
    )


def _cancelling():
    from prefect.states import Cancelling

    return Cancelling(message="Flow run was cancelled.")  # what the runner hands its cancellation hook


@pytest.mark.case(
    "fault",
    "a release is cancelled while Pending (it never ran)",
    "no alert; the hook's event keeps the release-problem automation quiet too",
)
def test_a_run_cancelled_before_it_started_pages_nobody(hook) -> None:
    hooks, sent = hook
    hooks.alert_release_problem(SimpleNamespace(name="release"), _run(started=False), _cancelling())
    assert sent == {"alerts": [], "events": [0]}


@pytest.mark.case(
    "fault",
    "a running release is cancelled after its upload, during its smoke test",
    "the alert gives the cancel's reason and lists what stays published, not proven, with the runbook",
)
def test_the_cancel_alert_names_the_reason_and_what_stays_published(hook, tmp_path) -> None:
    hooks, sent = hook
    run = _run(started=True)
    _report(
        tmp_path,
        run.id,
        name="hello",
        version="1.0.0",
        error=None,  # the process was killed before it wrote why
        checks=[{"check": "install + smoke on staging", "status": "not run", "detail": ""}],
        files=[
            {"filename": "hello-1.0.0.tar.gz", "target": "staging", "upload": "rolled back", "status": "removed"},
            {
                "filename": "hello-1.0.0-py3-none-any.whl",
                "target": "staging",
                "upload": "uploaded",
                "status": "verified",
            },
        ],
        runbook=["remove hello-1.0.0-py3-none-any.whl from staging: ..."],
    )
    hooks.alert_release_problem(SimpleNamespace(name="release"), run, _cancelling())
    [alert] = sent["alerts"]
    assert "cancelled: cancelled from the UI" in alert.summary
    assert "published, not proven: hello-1.0.0-py3-none-any.whl on staging" in alert.lines
    assert not any("tar.gz" in line for line in alert.lines if line.startswith("published"))  # rolled back
    assert "rollback runbook:" in alert.lines
    assert sent["events"] == [1]


def test_files_whose_target_passed_its_smoke_test_are_published_and_proven() -> None:
    from flows.hooks import still_published

    report = {
        "checks": [{"check": "install + smoke on staging", "status": "passed"}],
        "files": [
            {"filename": "a.whl", "target": "staging", "upload": "uploaded", "status": "verified"},
            {"filename": "a.whl", "target": "production", "upload": "uploaded", "status": "verified"},
        ],
    }
    assert still_published(report) == [
        "published, proven: a.whl on staging",
        "published, not proven: a.whl on production",
    ]


def test_files_a_rollback_could_not_remove_are_reported_published_not_proven() -> None:
    """An index that keeps what the rollback asked it to remove: the report says what stays, and that
    nothing proved it (the release ended before its install + smoke test on that target)."""
    from flows.publishing import account_for_rollback
    from wheelflow.core.report import FileReport, ReleaseReport

    report = ReleaseReport(project="p", name="hello", version="1.0.0")
    report.files = [
        FileReport("hello-1.0.0.tar.gz", "0" * 64, "staging", "sdist", upload="uploaded", status="verified"),
        FileReport("hello-1.0.0-py3-none-any.whl", "1" * 64, "staging", "wheel", upload="uploaded", status="verified"),
    ]
    report.add("install + smoke on staging", False, "cancelled: cancelled from the UI")
    from wheelflow.index.removal import runbook

    keeps_the_wheel = SimpleNamespace(
        still_served=lambda ctx, stage, files: {"hello-1.0.0-py3-none-any.whl"},
        rollback_runbook=lambda ctx, stage, stayed: runbook("hello", "1.0.0", "staging", stayed, False),
    )
    stage = SimpleNamespace(target=SimpleNamespace(name="staging"), publisher=keeps_the_wheel)
    ctx = SimpleNamespace(report=report, spec=SimpleNamespace(name="hello"), version="1.0.0")
    account_for_rollback(ctx, [stage])
    assert report.file("hello-1.0.0.tar.gz", "staging").upload == "rolled back"
    [kept] = [c for c in report.checks if c.check == "rolled back staging" and c.status == "failed"]
    assert kept.detail == "still served (published, not proven): hello-1.0.0-py3-none-any.whl"
    assert any("hello-1.0.0-py3-none-any.whl" in line for line in report.runbook)
