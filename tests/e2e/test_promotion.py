"""Staging → approval → production on real pypiserver and devpi-server indexes, with rollback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import INDEX_PASSWORD, INDEX_USER, make_project, run_cli
from devpi import PASSWORD as DEVPI_PASSWORD
from devpi import USER as DEVPI_USER
from devpi import DevpiServer

from wheelflow.index.indexes import public_index
from wheelflow.index.removal import runbook
from wheelflow.ops.approval import needs_person

FILES = ["tiny_pkg-1.0.0-py3-none-any.whl", "tiny_pkg-1.0.0.tar.gz"]


@pytest.fixture
def devpi(tmp_path: Path):
    with DevpiServer(tmp_path / "devpi", {"staging": True, "production": False}) as server:
        yield server


def promotion_project(
    root: Path, staging: tuple[str, str], production: tuple[str, str], policy: str = "manual", timeout: int = 300
) -> Path:
    """A project whose spec sends everything to staging, then (after approval) to production."""
    extra = textwrap.dedent(f"""
        approval = "{policy}"
        approval-timeout = {timeout}

        [tool.wheelflow.targets.staging]
        index = "{staging[0]}"
        upload-url = "{staging[1]}"
        verify-timeout = 10

        [tool.wheelflow.targets.production]
        index = "{production[0]}"
        upload-url = "{production[1]}"
        verify-timeout = 10
        """)
    project = make_project(root, extra="")
    text = (project / "pyproject.toml").read_text()
    # approval keys belong to [tool.wheelflow]: insert them right after its header
    head, tail = text.split("[tool.wheelflow]\n", 1)
    table, rest = extra.split("\n[tool.wheelflow.targets.staging]", 1)
    (project / "pyproject.toml").write_text(
        head + "[tool.wheelflow]\n" + table.strip() + "\n" + tail + "\n[tool.wheelflow.targets.staging]" + rest
    )
    return project


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch):
    def use(target: str, user: str, password: str) -> None:
        monkeypatch.setenv(f"WHEELFLOW_{target.upper()}_USERNAME", user)
        monkeypatch.setenv(f"WHEELFLOW_{target.upper()}_PASSWORD", password)

    return use


def pypiserver_then_devpi(root: Path, index, devpi: DevpiServer, credentials, timeout: int = 300) -> Path:
    """The usual pair: staging on the pypiserver, production on devpi's non-volatile index."""
    credentials("staging", INDEX_USER, INDEX_PASSWORD)
    credentials("production", DEVPI_USER, DEVPI_PASSWORD)
    return promotion_project(
        root,
        (index.simple_url, index.url),
        (devpi.simple_url("production"), devpi.upload_url("production")),
        timeout=timeout,
    )


def start_release(project: Path) -> subprocess.Popen[str]:
    exe = str(Path(sys.executable).with_name("wheelflow"))
    return subprocess.Popen(
        [exe, "release", str(project), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def paused_run(project: Path, proc: subprocess.Popen[str], timeout: float = 240) -> str:
    """The id of the release flow run for ``project`` once it waits for approval."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"release ended before asking for approval: {proc.stderr.read()[-3000:]}")
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"])))
            )
            for run in runs:
                if run.parameters.get("project") == str(project):
                    return str(run.id)
            time.sleep(0.5)  # polling the Prefect API for the pause, bounded by the deadline
    pytest.fail("the release never paused for approval")


def finish(proc: subprocess.Popen[str]) -> tuple[int, dict, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, json.loads(out) if out.strip() else {}, err


def test_the_approval_policies() -> None:
    assert needs_person("manual", earlier_verified=True)
    assert not needs_person("auto", earlier_verified=False)
    assert not needs_person("auto-if-staging-verified", earlier_verified=True)
    assert needs_person("auto-if-staging-verified", earlier_verified=False)


def test_staging_then_approval_by_wheelflow_approve_then_production(
    tmp_path: Path, home: Path, prefect_api, index, devpi, credentials
) -> None:
    credentials("staging", DEVPI_USER, DEVPI_PASSWORD)
    credentials("production", INDEX_USER, INDEX_PASSWORD)
    project = promotion_project(
        tmp_path / "p", (devpi.simple_url("staging"), devpi.upload_url("staging")), (index.simple_url, index.url)
    )
    proc = start_release(project)
    run_id = paused_run(project, proc)
    # Paused with staging verified and production untouched.
    assert devpi.files("staging", "tiny-pkg") == FILES and list(index.packages.iterdir()) == []
    approve = run_cli("approve", run_id, "--reason", "staging looks good")
    assert (
        approve.returncode == 0
        and approve.stderr.strip() == f"wheelflow: approved flow run {run_id}: staging looks good"
    )
    code, report, stderr = finish(proc)
    assert code == 0, stderr[-3000:]
    assert sorted((f["target"], f["filename"], f["status"]) for f in report["files"]) == sorted(
        [("staging", f, "verified") for f in FILES] + [("production", f, "verified") for f in FILES]
    )
    assert {
        "check": "approval to publish to production",
        "status": "passed",
        "detail": "approved: staging looks good",
    } in report["checks"]

    # The same command again: nothing to upload, nothing to decide, exit 0.
    again = run_cli("release", str(project), "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {f["upload"] for f in json.loads(again.stdout)["files"]} == {"already present"}


def test_an_approval_given_through_the_prefect_api(
    tmp_path: Path, home: Path, prefect_api, index, devpi, credentials
) -> None:
    from prefect.flow_runs import resume_flow_run

    project = pypiserver_then_devpi(tmp_path / "p", index, devpi, credentials)
    proc = start_release(project)
    resume_flow_run(paused_run(project, proc), run_input={"approve": True, "reason": "via the API"})
    code, report, stderr = finish(proc)
    assert code == 0, stderr[-3000:]
    assert devpi.files("production", "tiny-pkg") == FILES


@pytest.mark.parametrize("staging_server", ["pypiserver", "devpi"])
@pytest.mark.case("fault", "an approval rejected", "fails with the reason; staging files removed; production untouched")
def test_a_rejection_leaves_production_untouched_and_rolls_back_staging(
    tmp_path: Path, home: Path, prefect_api, index, devpi, credentials, staging_server: str, webhook
) -> None:
    if staging_server == "devpi":
        credentials("staging", DEVPI_USER, DEVPI_PASSWORD)
        credentials("production", INDEX_USER, INDEX_PASSWORD)
        staging = (devpi.simple_url("staging"), devpi.upload_url("staging"))
        production = (index.simple_url, index.url)
        project = promotion_project(tmp_path / "p", staging, production)
    else:
        project = pypiserver_then_devpi(tmp_path / "p", index, devpi, credentials)
    proc = start_release(project)
    run_id = paused_run(project, proc)
    staged = (
        devpi.files("staging", "tiny-pkg")
        if staging_server == "devpi"
        else sorted(p.name for p in index.packages.iterdir())
    )
    assert staged == FILES
    assert run_cli("approve", run_id, "--reject", "--reason", "changelog is wrong").returncode == 0
    code, report, stderr = finish(proc)
    assert code == 1
    assert (
        report["error"]
        == "publishing to production was rejected: changelog is wrong; nothing was published to production"
    )
    if staging_server == "devpi":  # production is the pypiserver: untouched; staging emptied by the rollback
        assert list(index.packages.iterdir()) == [] and devpi.files("staging", "tiny-pkg") == []
    else:
        assert devpi.files("production", "tiny-pkg") == [] and list(index.packages.iterdir()) == []
    assert {f["upload"] for f in report["files"] if f["target"] == "staging"} == {"rolled back"}
    assert report["runbook"] == []
    (alert,) = webhook.received
    assert "rejected: changelog is wrong" in alert["summary"]


@pytest.mark.case("fault", "an approval nobody gives", "timeout fails the release; production gets nothing")
def test_an_approval_nobody_gives_times_out_and_publishes_nothing_to_production(
    tmp_path: Path, home: Path, prefect_api, index, devpi, credentials
) -> None:
    project = pypiserver_then_devpi(tmp_path / "p", index, devpi, credentials, timeout=3)
    result = run_cli("release", str(project), "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["error"].startswith(
        "no decision to publish to production within 3 s: nothing was published to production"
    )
    assert devpi.files("production", "tiny-pkg") == []


def test_the_runbook_for_the_public_index_names_the_files_and_the_management_page() -> None:
    simple, _ = public_index()
    base = simple.split("/simple")[0]
    lines = runbook("tiny-pkg", "1.0.0", "production", FILES, public=True)
    assert lines[:3] == [
        "production: these files of tiny-pkg 1.0.0 stay published:",
        f"  - {FILES[0]}",
        f"  - {FILES[1]}",
    ]
    assert lines[3].startswith(f"  1. open {base}/manage/project/tiny-pkg/release/1.0.0/ and yank 1.0.0")
    assert "1.0.0.post1" in lines[4]


@pytest.mark.case(
    "fault",
    "a built file is changed on disk while the release waits for approval",
    "refused before its production upload (sha256 differs from build time); production gets nothing",
)
def test_a_file_changed_after_its_build_is_not_uploaded(
    tmp_path: Path, home: Path, prefect_api, index, devpi, credentials
) -> None:
    from prefect.flow_runs import resume_flow_run

    project = pypiserver_then_devpi(tmp_path / "p", index, devpi, credentials)
    proc = start_release(project)
    run_id = paused_run(project, proc)
    (wheel,) = home.glob(f"builds/tiny-pkg/1.0.0/*/{FILES[0]}")
    with open(wheel, "ab") as tampered:
        tampered.write(b"\0")  # the bytes differ from those built, checked and verified on staging
    resume_flow_run(run_id, run_input={"approve": True, "reason": "looks fine"})
    code, report, _ = finish(proc)
    assert code == 1
    assert report["error"].startswith(f"{FILES[0]} changed since it was built (sha256 ")
    assert devpi.files("production", "tiny-pkg") == []
