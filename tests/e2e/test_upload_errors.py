"""Each index answer to an upload maps to one action; releases end verified or fail clearly.

The quoted answers are the public index's own messages, used as fixtures: its write API cannot be
reached from here, so a fault proxy in front of a real pypiserver speaks them.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import make_project, run_cli
from faultproxy import FaultProxy, Rule

from wheelflow.index.uploading import CHECK_THEN_FAIL, CHECK_THEN_RETRY, HARD, UploadAnswer, classify

WHEEL = "tiny_pkg-1.0.0-py3-none-any.whl"
SDIST = "tiny_pkg-1.0.0.tar.gz"


@pytest.mark.parametrize(
    ("status", "reason", "action"),
    [
        (400, "File already exists. See the index's help for more information.", CHECK_THEN_FAIL),
        (400, "Only one sdist may be uploaded per release.", HARD),
        (400, "The use of local versions in <Version('1.0.0+cu130')> is not allowed.", HARD),
        (400, "File too large. Limit for project 'tiny-pkg' is 100 MB.", HARD),
        (400, "Project size too large. Limit for project 'tiny-pkg' total size is 10 GB.", HARD),
        (403, "Invalid or non-existent authentication information.", HARD),
        (401, "Unauthorized", HARD),
        (503, "Service Unavailable", CHECK_THEN_RETRY),
        (502, "Bad Gateway", CHECK_THEN_RETRY),
        (429, "Too Many Requests", CHECK_THEN_RETRY),
        (None, "ConnectionError", CHECK_THEN_RETRY),
    ],
)
def test_each_answer_maps_to_one_action(status, reason, action) -> None:
    assert classify(UploadAnswer(status, reason))[0] == action


def _release(project: Path) -> tuple[int, dict, str]:
    result = run_cli("release", str(project), "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


@pytest.mark.parametrize(("status", "reason"), [(503, "Service Unavailable"), (400, "File already exists.")])
@pytest.mark.case(
    "fault",
    "the index answers with an error after storing the file",
    "read back: counted as uploaded once, release verified",
)
def test_an_error_answer_after_the_file_landed_ends_verified_with_one_upload(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api, status: int, reason: str
) -> None:
    with FaultProxy(index.url) as proxy:
        proxy.rules.append(Rule("POST", status, reason, forward_first=True))  # stored upstream, then the error
        code, report, stderr = _release(make_project(tmp_path / "p", index_url=proxy.url + "simple/"))
    assert code == 0, stderr[-3000:]
    assert [(f["filename"], f["upload"], f["status"]) for f in report["files"]] == [
        (WHEEL, "uploaded", "verified"),
        (SDIST, "uploaded", "verified"),
    ]
    assert proxy.statuses("POST") == [status, 200]  # the landed file was read back, not uploaded again
    assert sorted(p.name for p in index.packages.iterdir()) == sorted([SDIST, WHEEL])


@pytest.mark.case("fault", "the index refuses an upload for good", "no retry, the fix named, nothing more uploaded")
@pytest.mark.parametrize(
    ("status", "reason", "fix"),
    [
        (403, "Invalid or non-existent authentication information.", "check the target's credentials"),
        (400, "Only one sdist may be uploaded per release.", "upload a single sdist per release"),
    ],
)
def test_hard_answers_are_not_retried_and_name_the_fix(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api, status: int, reason: str, fix: str
) -> None:
    with FaultProxy(index.url) as proxy:
        proxy.rules.append(Rule("POST", status, reason))
        code, report, stderr = _release(make_project(tmp_path / "p", index_url=proxy.url + "simple/"))
    assert code == 1
    assert report["error"].startswith(f"upload of {WHEEL} to {proxy.url} failed: HTTP {status} {reason}; fix: {fix}")
    assert proxy.statuses("POST") == [status]  # one attempt, no retry, and the release stopped there
    assert list(index.packages.iterdir()) == []


@pytest.mark.case("bad input", "a release larger than the project's budget", "refused before the first upload")
def test_a_budget_smaller_than_the_release_is_refused_before_the_first_upload(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    with FaultProxy(index.url) as proxy:
        project = make_project(tmp_path / "p", index_url=proxy.url + "simple/")
        text = (project / "pyproject.toml").read_text() + 'project-budget = "1kB"\n'
        (project / "pyproject.toml").write_text(text)
        code, report, _ = _release(project)
    assert code == 1
    assert "[project-budget] this release adds" in report["error"] and "nothing was uploaded" in report["error"]
    assert proxy.statuses("POST") == []


def test_a_skipped_publish_step_fails_the_release_and_alerts(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api, webhook
) -> None:
    project = make_project(tmp_path / "p", index_url=index.simple_url)
    text = (project / "pyproject.toml").read_text() + 'artifacts = ["sdist"]\n'  # the wheel goes nowhere
    (project / "pyproject.toml").write_text(text)
    code, report, stderr = _release(project)
    assert code == 1
    assert report["error"] == (
        f"built but not published: {WHEEL} is routed to no target (staging); "
        'fix: add "wheel" to a target\'s artifacts, or stop building it'
    )
    assert list(index.packages.iterdir()) == []  # nothing half-published
    (alert,) = webhook.received
    assert alert["event"] == "release-failed" and alert["project"] == "tiny-pkg" and alert["version"] == "1.0.0"
    assert "built but not published" in alert["summary"] and alert["flow_run_id"] == report["flow_run_id"]
    assert "T0KEN-w3bh00k-s3cret" not in stderr + json.dumps(report)


@pytest.mark.case("fault", "an upload answered 503, then 403", "the alert lists each attempt with its time and error")
def test_a_failed_release_alert_carries_the_retry_history_of_the_failed_task(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api, webhook
) -> None:
    with FaultProxy(index.url) as proxy:
        proxy.rules += [
            Rule("POST", 503, "Service Unavailable"),
            Rule("POST", 403, "Invalid or non-existent authentication information."),
        ]
        code, report, _ = _release(make_project(tmp_path / "p", index_url=proxy.url + "simple/"))
    assert code == 1 and proxy.statuses("POST") == [503, 403]
    (alert,) = webhook.received
    task = f"upload[{WHEEL}→staging]"
    (failed,) = [t for t in alert["details"]["task_runs"] if t["name"] == task]
    assert (failed["state"], failed["attempts"]) == ("Failed", 2)
    lines = alert["lines"]
    start = lines.index(f"{task}: Failed after 2 attempt(s)")
    first, second = lines[start + 1 : start + 3]
    assert first.startswith("  attempt 1 at ") and "AwaitingRetry" in first and "HTTP 503 Service Unavailable" in first
    assert second.startswith("  attempt 2 at ") and "HTTP 403 Invalid or non-existent authentication" in second


@pytest.mark.case(
    "fault", "the index refuses the second file once", "the re-run completes: each file uploaded once over both runs"
)
def test_a_rerun_after_the_index_refused_the_second_file_completes_with_each_file_uploaded_once(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    project = make_project(tmp_path / "p")
    with FaultProxy(index.url) as proxy:
        text = (project / "pyproject.toml").read_text() + textwrap.dedent(f"""
            [tool.wheelflow.targets.staging]
            index = "{proxy.url}simple/"
            verify-timeout = 5
            """)
        (project / "pyproject.toml").write_text(text)
        proxy.rules += [
            Rule("POST", 200, forward_first=True),  # the wheel goes through
            Rule("POST", 403, "Invalid or non-existent authentication information."),
        ]
        code, report, _ = _release(project)
        assert code == 1 and proxy.statuses("POST") == [200, 403]
        assert [f["upload"] for f in report["files"]] == ["uploaded", "failed"]
        assert [p.name for p in index.packages.iterdir()] == [WHEEL]  # kept for the re-run, not rolled back

        code, report, stderr = _release(project)
    assert code == 0, stderr[-3000:]
    assert [(f["filename"], f["upload"], f["status"]) for f in report["files"]] == [
        (WHEEL, "already present", "verified"),
        (SDIST, "uploaded", "verified"),
    ]
    assert proxy.statuses("POST") == [200, 403, 200]  # over both runs: each file uploaded once
