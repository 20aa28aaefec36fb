"""Redaction as a guarantee: a secret registered once is masked in log records (through Prefect's
loggers and its API log handler, into a real Prefect server), errors, reports and alerts."""

from __future__ import annotations

import io
import json
import logging
import uuid
from pathlib import Path

import pytest

from wheelflow.core.redaction import MASK, redact, register_secret, register_url


def _secret(label: str) -> str:
    # A fresh value per test: the registry lives as long as the process.
    return f"{label}-{uuid.uuid4().hex}"


def _captured(logger_name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    return logger, stream, handler


@pytest.mark.parametrize(
    "logger_name", ["prefect.task_runs", "prefect.flow_runs", "prefect", "wheelflow.builds", "some.library"]
)
def test_a_registered_secret_is_masked_in_every_log_record(logger_name: str) -> None:
    import prefect  # noqa: F401  (its logging configuration, API log handler included, is in place)

    secret = _secret("pw")
    register_secret(secret)
    logger, stream, handler = _captured(logger_name)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        logger.info("in the message: %s", secret)
        logger.info(f"formatted in: {secret}")
        logger.info("in an argument's str(): %s", {"password": secret})
        try:
            raise RuntimeError(f"an exception quoting {secret}")
        except RuntimeError:
            logger.exception("with a traceback")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = stream.getvalue()
    assert secret not in text
    assert text.count(MASK) == 4, text


def test_short_values_are_not_registered() -> None:
    register_secret("ab")  # masking every "ab" would destroy the logs
    assert redact("tab stop") == "tab stop"


def test_errors_reports_and_alerts_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wheelflow.core.errors import UploadError, WheelflowError
    from wheelflow.core.report import CellReport, ReleaseReport
    from wheelflow.ops.alerts import Alert, configured_channels

    secret = _secret("index-pw")
    early = WheelflowError(f"quoting {secret}")  # made before the secret was known
    register_secret(secret)
    assert secret not in str(early) and secret not in str(UploadError(f"answer: {secret}", transient=False))

    hook = f"http://127.0.0.1:9/hooks/{_secret('T0KEN')}"
    monkeypatch.setenv("WHEELFLOW_ALERT_WEBHOOK", hook)
    assert [c.kind for c in configured_channels()] == ["webhook"]  # reading it registers it
    path = hook.split(":9", 1)[1]

    report = ReleaseReport(project="p", name="p", version="1", error=f"upload failed: {secret}")
    report.add("uploaded", False, f"index said {secret} via {hook}")
    report.cells.append(CellReport("py3.11", error=f"build printed {path}"))
    saved = report.save(tmp_path).read_text()
    texts = [saved, report.markdown(), json.dumps(report.table_rows()), json.dumps(report.cells[0].json())]
    alert = Alert("release-failed", "p", "1", f"failed: {secret}", lines=(f"hook {hook}", f"path {path}"))
    texts += [alert.text(), json.dumps(alert.payload())]
    for text in texts:
        assert secret not in text and hook not in text and path not in text, text
        assert MASK in text


def test_uploading_redact_still_masks_its_own_list_and_the_registry() -> None:
    from wheelflow.index.uploading import redact as upload_redact

    listed, registered = _secret("listed"), _secret("registered")
    register_secret(registered)
    assert upload_redact(f"{listed} {registered} plain", [listed]) == "*** *** plain"


def test_credentials_are_registered_when_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from wheelflow.config.spec import IndexTarget
    from wheelflow.index.indexes import load_credentials
    from wheelflow.index.localindex import LocalIndex

    password = _secret("staging")
    monkeypatch.setenv("WHEELFLOW_STAGING_PASSWORD", password)
    assert redact(password) == password
    load_credentials(IndexTarget(name="staging", index="http://127.0.0.1:9/simple/"))
    assert redact(password) == MASK
    local = LocalIndex(tmp_path).credentials().password
    assert redact(local) == MASK


def test_webhook_path_alone_is_masked() -> None:
    token = _secret("T0KEN")
    register_url(f"http://127.0.0.1:9/services/{token}")
    assert token not in redact(f"POST /services/{token} answered 500")


@pytest.mark.case(
    "secret",
    "a registered secret logged by a task and raised in an error, in a real flow run",
    "masked in the logs and the state message the Prefect server stored",
)
def test_secret_logged_in_a_flow_run_reaches_the_prefect_api_masked(prefect_api) -> None:
    from prefect import flow, get_run_logger, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    from wheelflow.core.errors import UploadError

    secret = _secret("api-pw")

    @task
    def leaky() -> None:
        get_run_logger().info("task logs %s", secret)
        raise UploadError(f"upload refused for {secret}", transient=False)

    @flow
    def leaky_flow() -> None:
        register_secret(secret)  # as reading a target's credentials does
        get_run_logger().info(f"flow logs {secret}")
        leaky()

    state = leaky_flow(return_state=True)
    APILogWorker.drain_all(timeout=30)  # the logs reach the server before they are read
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = [
            log.message for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        ]
        message = client.read_flow_run(run_id).state.message or ""
    assert any("task logs ***" in m for m in logs) and any("flow logs ***" in m for m in logs), logs
    assert [m for m in logs if secret in m] == []
    assert state.is_failed() and secret not in message
