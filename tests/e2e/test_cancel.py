"""Total deadlines on a real release: an upload attempt ends by upload-timeout; SIGTERM stops a
`wheelflow release` within its grace in any phase (here: an upload to an index that never answers,
and a build whose backend hangs with a child of its own), exit 3, the run Cancelled with the reason;
a failed install check does not roll the release back while its siblings still run.

Each test waits for a marker (the request arrived, the backend wrote its file), never a sleep; the
subprocess timeouts are guards only.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from conftest import INDEX_PASSWORD, INDEX_USER, make_project, run_cli, wait_for
from stalling import StallingServer

GUARD = 300  # seconds: a guard against a hang, not a timing assert


def _release(project: Path) -> subprocess.Popen[str]:
    exe = str(Path(sys.executable).with_name("wheelflow"))
    return subprocess.Popen(
        [exe, "release", str(project), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _assert_cancelled(proc: subprocess.Popen[str], signame: str) -> None:
    out, err = proc.communicate(timeout=GUARD)  # ended (the guard only keeps a hang from blocking the suite)
    assert proc.returncode == 3, err[-3000:]
    report = json.loads(out)
    assert report["ok"] is False
    assert report["error"].startswith(f"cancelled: {signame} received"), report["error"]
    assert f"wheelflow: release cancelled: {signame} received" in err
    status = run_cli("status", report["flow_run_id"], "--json")
    run = json.loads(status.stdout)
    assert run["state"] == "Cancelled", run
    assert run["message"].startswith(f"cancelled: {signame} received"), run


@pytest.mark.case(
    "fault",
    "the upload endpoint accepts the POST and never answers (a release with upload-timeout = 2)",
    "each attempt ends at 2 s, the index is read back, the upload retried; then one line naming the target, "
    "the deadline and upload-timeout; exit 1",
)
def test_an_upload_that_is_never_answered_ends_by_upload_timeout(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    with StallingServer("silent") as server:
        extra = f'upload-url = "{server.url}"\nupload-timeout = 2\n'
        result = run_cli(
            "release", str(make_project(tmp_path / "p", index_url=index.url + "simple/", extra=extra)), "--json"
        )
    assert result.returncode == 1, result.stderr[-3000:]
    error = json.loads(result.stdout)["error"]
    line = next(x for x in result.stderr.splitlines() if x.startswith("wheelflow: release failed"))
    assert error in line
    assert "no complete answer within the upload deadline (2 s)" in error
    assert "raise upload-timeout (now 2 s) of [tool.wheelflow.targets.staging]" in error
    assert server.requests >= 2  # retried after the index was read back
    assert list(index.packages.iterdir()) == []


@pytest.mark.case(
    "fault",
    "SIGTERM while an upload waits for an index that never answers (upload-timeout an hour)",
    "the release stops at once: exit 3, the run Cancelled with the reason, nothing retried",
)
def test_sigterm_during_a_hanging_upload_cancels_the_run(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    with StallingServer("silent") as server:
        extra = f'upload-url = "{server.url}"\nupload-timeout = 3600\n'
        proc = _release(make_project(tmp_path / "p", index_url=index.url + "simple/", extra=extra))
        try:
            server.wait_for_request(timeout=GUARD)  # the upload is in flight
            proc.send_signal(signal.SIGTERM)
            _assert_cancelled(proc, "SIGTERM")
        finally:
            proc.kill()
            proc.communicate()
        assert server.requests == 1  # not retried after the cancel


HANGING_BACKEND = """\
import subprocess, sys, time

def _hang(*args, **kwargs):
    # a compiler of its own, then a build that never ends
    # (seen from the test in /proc: the backend runs in a sandbox whose files outside its work folders are read-only)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{token}"])
    time.sleep(600)

get_requires_for_build_sdist = get_requires_for_build_wheel = lambda *a, **k: []
build_sdist = build_wheel = _hang
"""


def _processes_with(token: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if token.encode() in cmdline.read_bytes():
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


@pytest.mark.case(
    "fault",
    "SIGINT while the build backend hangs, with a child process of its own",
    "the release stops at once: exit 3, the run Cancelled with the reason, no build process left",
)
def test_sigint_during_a_hanging_build_cancels_the_run_and_ends_the_build(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    project = make_project(tmp_path / "p", index_url=index.url + "simple/")
    token = f"wheelflow-test-compiler-{uuid.uuid4().hex}"
    (project / "hang_backend.py").write_text(HANGING_BACKEND.format(token=token))
    pyproject = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        pyproject.replace(
            'requires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"',
            'requires = []\nbuild-backend = "hang_backend"\nbackend-path = ["."]',
        )
    )
    proc = _release(project)
    try:
        wait_for(
            lambda: _processes_with(token) or proc.poll() is not None, GUARD, "the build backend's compiler to start"
        )
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGINT)
        _assert_cancelled(proc, "SIGINT")
    finally:
        proc.kill()
        proc.communicate()
    assert _processes_with(token) == []


@pytest.mark.case(
    "fault",
    "SIGTERM while the release waits for a person's approval before production",
    "the release stops at once: exit 3, the run Cancelled with the reason, production untouched",
)
def test_sigterm_while_waiting_for_approval_cancels_the_run(
    tmp_path: Path, home: Path, index, prefect_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_promotion import paused_run, promotion_project

    from wheelflow.index.localindex import PypiServer

    for target in ("STAGING", "PRODUCTION"):
        monkeypatch.setenv(f"WHEELFLOW_{target}_USERNAME", INDEX_USER)
        monkeypatch.setenv(f"WHEELFLOW_{target}_PASSWORD", INDEX_PASSWORD)
    with PypiServer(tmp_path / "production", index.htpasswd, log_file=tmp_path / "production.log") as production:
        project = promotion_project(
            tmp_path / "p", (index.simple_url, index.url), (production.simple_url, production.url)
        )
        proc = _release(project)
        try:
            paused_run(project, proc, timeout=GUARD)  # waiting for a decision
            proc.send_signal(signal.SIGTERM)
            _assert_cancelled(proc, "SIGTERM")
        finally:
            proc.kill()
            proc.communicate()
        assert list(production.packages.iterdir()) == []


# -- the rollback waits for sibling checks; the first cause is reported ---------------------------------

_first_failed, _submitted = threading.Event(), threading.Event()


def test_a_failed_check_rolls_back_only_after_its_siblings_and_the_first_cause_is_reported(prefect_api) -> None:
    """A check that fails (a full disk) while a sibling still installs: the release's rollback (which
    removes the files) waits for the sibling, and the error reported is the full disk, not what the
    sibling said later."""
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect.transactions import transaction

    from wheelflow.flows.futures import all_settled, outside_transaction

    events: list[str] = []

    @task
    def disk_full() -> str:
        try:
            raise OSError(28, "No space left on device")
        finally:
            _first_failed.set()

    @task
    def sibling() -> str:
        assert _first_failed.wait(GUARD) and _submitted.wait(GUARD)
        first.wrapped_future.result(GUARD)  # the first check's run has ended: failed, and done with
        events.append("sibling done" + (" after the rollback" if "rolled back" in events else ""))
        raise RuntimeError("Could not find a version that satisfies the requirement tiny-pkg==1.0.0")

    @flow
    def checks() -> None:
        nonlocal first
        with transaction() as txn:
            txn.on_rollback_hooks.append(lambda _: events.append("rolled back"))
            with outside_transaction(), ThreadPoolTaskRunner(max_workers=2) as runner:
                later = runner.submit(sibling, {})  # first in submission order, last in time
                first = runner.submit(disk_full, {})
                _submitted.set()
                _, cause = all_settled([later, first], lambda message: RuntimeError(message))
            assert cause is not None
            raise cause

    first = None
    _first_failed.clear()
    _submitted.clear()
    with pytest.raises(OSError, match="No space left on device"):
        checks()
    assert events == ["sibling done", "rolled back"]
