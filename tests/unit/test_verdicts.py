"""Verdicts CI can parse: exit codes (one table: errors.py, docs, trigger, status, the CI step),
`status --json`'s flow-run fields, unknown deployments, argument-parser errors under --json, and the
message after exhausted retries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from wheelflow.cli import main
from wheelflow.core.errors import EXIT_CODES, ExitCode, UploadError, WheelflowError
from wheelflow.ops.orchestration import RunOutcome, deployment_not_found, run_status

REPO = Path(__file__).resolve().parents[2]
KNOWN = ["release/release", "release/nightly", "sync-monitor/sync-monitor", "backfill/backfill"]


def _outcome(state_type: str) -> int:
    return RunOutcome("id", "release", state_type.title(), state_type, None).exit_code


@pytest.mark.parametrize("state_type", ["SCHEDULED", "PENDING", "RUNNING", "PAUSED"])
def test_a_run_still_going_has_its_own_exit_code(state_type: str) -> None:
    assert _outcome(state_type) == ExitCode.RUNNING
    assert ExitCode.RUNNING not in (ExitCode.OK, ExitCode.FAILED, ExitCode.CANCELLED, ExitCode.TIMED_OUT)
    assert [_outcome(t) for t in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")] == [0, 1, 3, 3]


def test_status_json_carries_the_flow_run_state_message_and_reason_without_tasks() -> None:
    """A run that crashed before its first task: no task runs, yet the verdict says why."""
    message = "Flow run could not start: Block not found: 'wheelflow-git-token'; fix: run `wheelflow setup`"
    status = run_status("abc", "brave-fox", "Crashed", "CRASHED", message, [])
    assert status["state"] == "Crashed" and status["final"] is True
    assert status["message"] == message and status["reason"] == message
    assert status["tasks"] == [] and status["exit_code"] == ExitCode.CANCELLED


def test_a_run_that_crashed_in_its_pull_step_is_explained_by_its_first_logged_error() -> None:
    """The worker's state message says only that the process exited; the run's ERROR logs say why."""
    worker = "Flow run infrastructure exited with non-zero status code 1."
    logged = [
        "Block not found: 'wheelflow-git-token'",
        "Unexpected exception encountered when trying to load flow",
    ]
    status = run_status("abc", "brave-fox", "Crashed", "CRASHED", worker, [], error_logs=logged[::-1])
    assert status["reason"] == "crashed before its first task: Block not found: 'wheelflow-git-token'"
    assert status["message"] == worker
    # a run whose tasks ran is explained by its tasks, never by a stray log line
    tasks = [{"name": "resolve-version", "state": "Completed", "history": []}]
    assert run_status("a", "n", "Crashed", "CRASHED", worker, tasks, error_logs=logged)["reason"] == worker


def test_status_reason_names_the_failed_task_and_its_last_error() -> None:
    tasks = [
        {"name": "build-sdist", "state": "Completed", "history": []},
        {
            "name": "upload[a.whl→staging]",
            "state": "Failed",
            "history": [
                {"name": "AwaitingRetry", "message": "HTTP 503"},
                {"name": "Failed", "message": "gave up after 5 attempts: HTTP 503; fix: check the index"},
            ],
        },
    ]
    status = run_status("abc", "brave-fox", "Failed", "FAILED", "Flow run encountered an exception", tasks)
    assert status["reason"] == "upload[a.whl→staging]: Failed: gave up after 5 attempts: HTTP 503; fix: check the index"
    checks = [{"check": "install + smoke on staging", "detail": "exit 1"}]
    assert (
        run_status("a", "n", "Failed", "FAILED", "m", tasks, checks)["reason"] == "install + smoke on staging: exit 1"
    )
    running = run_status("a", "n", "Running", "RUNNING", None, [])
    assert (running["final"], running["reason"], running["exit_code"]) == (False, None, ExitCode.RUNNING)


def test_an_unknown_deployment_is_bad_input_with_a_did_you_mean() -> None:
    error = deployment_not_found("relase", KNOWN)
    assert error.exit_code == ExitCode.BAD_INPUT
    assert str(error) == (
        "spec error: DEPLOYMENT: no deployment 'relase' on this Prefect server; fix: did you mean 'release'?"
    )
    assert "did you mean 'sync-monitor/sync-monitor'?" in str(deployment_not_found("sync-montor/sync-monitor", KNOWN))
    assert "use one of: " in str(deployment_not_found("zzz", KNOWN))
    assert "wheelflow setup" in str(deployment_not_found("release", []))


@pytest.mark.parametrize(
    "argv",
    [["trigger", "--json"], ["status", "--json"], ["trigger", "release", "--json", "--bogus"], ["frob", "--json"]],
)
def test_argument_parser_errors_are_one_line_and_json_under_json(argv: list[str], capsys) -> None:
    assert main(argv) == ExitCode.BAD_INPUT
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert answer["ok"] is False and answer["exit_code"] == 2 and answer["error"].startswith("usage error: ")
    assert "; fix: see `wheelflow " in answer["error"]
    assert err.strip().splitlines() == [f"wheelflow: error: {answer['error']}"]  # no usage block, no traceback


def test_argument_parser_errors_without_json_are_one_line(capsys) -> None:
    assert main(["trigger"]) == ExitCode.BAD_INPUT
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [
        "wheelflow: error: usage error: wheelflow trigger: the following arguments are required: deployment; "
        "fix: see `wheelflow trigger --help`"
    ]


def test_a_step_that_exhausts_its_retries_says_it_gave_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from wheelflow.tasks import retry

    error = UploadError(
        "upload of a.whl to http://i/ failed: HTTP 503 Service Unavailable; fix: the index had trouble; "
        "wheelflow reads it and retries with backoff",
        transient=True,
    )

    def upload() -> None:
        raise error

    wrapped = retry.gives_up(upload)
    monkeypatch.setattr(retry, "attempt_numbers", lambda: (2, 5))  # retries remain: the error as it is
    with pytest.raises(UploadError):
        wrapped()
    monkeypatch.setattr(retry, "attempt_numbers", lambda: (5, 5))  # the last attempt
    with pytest.raises(WheelflowError) as raised:
        wrapped()
    message = str(raised.value)
    assert message.startswith(
        "gave up after 5 attempts: upload of a.whl to http://i/ failed: HTTP 503 Service Unavailable; fix: "
    )
    assert "retries with backoff" not in message and raised.value.transient is False
    assert message.count("; fix: ") == 1 and "re-run the release" in message

    def refused() -> None:
        raise UploadError("HTTP 403; fix: check the credentials", transient=False)

    with pytest.raises(UploadError, match="HTTP 403"):  # not retried: nothing to give up on
        retry.gives_up(refused)()


def _doc_table() -> dict[int, str]:
    text = (REPO / "docs" / "deployments-and-ci.md").read_text().split("## Exit codes", 1)[1]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| ([^|]+) \|", text, re.M)}


def test_one_exit_code_table_matches_errors_trigger_status_and_the_ci_step() -> None:
    table = _doc_table()
    assert set(table) == {int(code) for code in EXIT_CODES} == {int(code) for code in ExitCode}
    # The CI step's verdicts are trigger --wait's, state by state.
    workflow = yaml.safe_load((REPO / "examples" / "ci" / "github-actions-release.yml").read_text())
    (job,) = workflow["jobs"].values()
    (script,) = [s["run"] for s in job["steps"] if "run" in s]
    arms = re.findall(r"^\s*([A-Z|]+)\)[^\n]*exit (\d+) ;;", script, re.M)
    assert {s for states, _ in arms for s in states.split("|")} == {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
    for states, code in arms:
        for state in states.split("|"):
            assert _outcome(state) == int(code), state
    assert {int(code) for code in re.findall(r"\bexit (\d+)", script)} <= set(table)
    assert "exit 3' TERM INT" in script  # cancelled by CI: the run is cancelled, as trigger does on SIGTERM
