"""What a failed, crashed or cancelled release tells people: the failing step and cell, each failed
task's attempts with time and error, and the rollback runbook when files stayed published."""

from __future__ import annotations

import json
import logging

from prefect.logging.handlers import APILogWorker

from wheelflow.adapters.prefect_api import (
    emit_alert_sent,
    name_run_after_verdict,
    read_cancel_reason,
    read_secret,
    run_histories,
    ui_url,
)
from wheelflow.core.deadline import Deadline
from wheelflow.core.home import wheelflow_home
from wheelflow.core.report import proven_targets
from wheelflow.ops.alerts import Alert, configured_channels, send_alert
from wheelflow.ops.runhistory import describe_attempts


def failed_task_attempts(flow_run_id, settle: float = 10.0, drain: float = 5.0) -> tuple[list[str], list[dict]]:
    """The failed tasks of this run with each attempt (time and error), read back from the Prefect API.
    ``settle``: how long to wait for task states still on their way to the server; ``drain``: for the logs."""
    try:
        APILogWorker.drain_all(timeout=drain)  # the retried attempts' errors are in this run's logs, maybe still queued
        histories = run_histories(flow_run_id, settle=settle)
    except Exception as exc:  # the alert must go out even when the API cannot be read
        return [f"(retry history unavailable: {type(exc).__name__})"], []
    lines, failed = [], []
    for history in histories:
        if history.state in ("Failed", "Crashed", "TimedOut") or history.attempts > 1:
            lines.append(f"{history.name}: {history.state} after {history.attempts} attempt(s)")
            lines += [f"  {line}" for line in describe_attempts(history)]
            failed.append(history.json())
    return lines, failed


def still_published(report: dict) -> list[str]:
    """What this unfinished release left published, file by file: proven (served with its sha256, and
    its target's install + smoke test passed) or "published, not proven" (e.g. cancelled during the
    smoke test). Rolled-back files are not listed: they are gone."""
    proven = proven_targets((c["check"], c["status"]) for c in report.get("checks", []))
    lines = []
    for f in report.get("files", []):
        if f.get("upload") not in ("uploaded", "already present"):
            continue
        label = (
            "published, proven" if f.get("status") == "verified" and f["target"] in proven else "published, not proven"
        )
        lines.append(f"{label}: {f['filename']} on {f['target']}")
    return lines


def alert_release_problem(flow, flow_run, state, deadline: Deadline | None = None) -> None:
    """on_failure / on_crashed / on_cancellation hook of the release flow. ``deadline``: when all of it
    must be done (a cancelled run's), else the alert's own (WHEELFLOW_ALERT_TIMEOUT)."""
    report_path = wheelflow_home() / "reports" / f"{flow_run.id}.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    cancelled = state.is_cancelling() or state.is_cancelled()
    if cancelled and flow_run.start_time is None and not report:
        # Cancelled before it started (Pending): it did nothing, so nobody is paged (docs/monitor-and-alerts.md).
        # The event still goes out: the release-problem automation, opened at Cancelling, then stays quiet too.
        logging.getLogger("wheelflow").info("%s was cancelled before it started: no alert", flow_run.id)
        emit_alert_sent(flow_run, flow.name, 0)
        return
    failed = [c for c in report.get("checks", []) if c["status"] == "failed"]
    failed_cells = [c for c in report.get("cells", []) if c["state"] == "failed"]
    project = report.get("name") or str(flow_run.parameters.get("project"))
    error = report.get("error") or state.message or state.name
    if cancelled and not str(report.get("error") or "").startswith("cancelled"):
        # the process was gone before it wrote why (or the state says only Prefect's "Flow run was
        # cancelled."): the reason its canceller gave, from the run's states
        error = f"cancelled: {read_cancel_reason(flow_run.id)}"
    if state.is_failed() and failed:
        # the UI shows a state's message only on hover: the run's name (its header, run lists) says it
        name_run_after_verdict(flow_run.id, f"{failed[0]['check']} failed: {error}")
    summary = f"release of {project} {report.get('version') or ''} {state.name.lower()}: {error}"
    # A cancelled or crashed run's tasks were killed mid-run: their states never become final, so
    # waiting for them only delays the alert past the automation's dedup window (a second page).
    attempt_lines, task_runs = failed_task_attempts(
        flow_run.id,
        settle=10.0 if state.is_failed() else 0.0,
        drain=5.0 if deadline is None else min(5.0, deadline.remaining() / 2),
    )
    lines = [f"failed step: {c['check']}: {c['detail']}" for c in failed]
    lines += [f"failed cell: {c['cell']}" for c in failed_cells]
    lines += attempt_lines
    lines += still_published(report)
    if report.get("runbook"):
        lines += ["rollback runbook:", *report["runbook"]]
    alert = Alert(
        event="release-failed",
        project=project,
        version=report.get("version"),
        summary=" ".join(summary.split()),
        flow_run_id=str(flow_run.id),
        flow_run_url=ui_url(str(flow_run.id)),
        details={
            "state": state.name,
            "failed_checks": failed,
            "files": report.get("files", []),
            "failed_cells": failed_cells,
            "task_runs": task_runs,
        },
        lines=tuple(lines),
    )
    delivered = send_alert(
        alert,
        configured_channels(read_secret=read_secret),
        log=logging.getLogger("wheelflow.ops.alerts").warning,
        deadline=deadline,
    )
    if delivered:  # the server's release-problem automation then stays quiet: one alert per problem
        emit_alert_sent(flow_run, flow.name, delivered)
