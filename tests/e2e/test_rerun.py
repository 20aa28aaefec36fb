"""Re-runs from any runner, and one release at a time (issue 14, items 4 and 5).

The project here builds different bytes every time (its setup.py stamps a random build id), as a
compiled wheel rebuilt on another machine may: only the upload record on the Prefect server can
tell this release's files from someone else's. Real Prefect server, pypiserver, twine, pip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import make_project, run_cli
from faultproxy import FaultProxy, Rule

WHEEL, SDIST = "tiny_pkg-1.0.0-py3-none-any.whl", "tiny_pkg-1.0.0.tar.gz"


def unreproducible_project(root: Path, index_url: str, hold: Path | None = None) -> Path:
    """tiny-pkg whose every build differs; with ``hold``, the build waits while that file exists."""
    project = make_project(root, index_url=index_url)
    wait = f"while os.path.exists({str(hold)!r}):\n    time.sleep(0.2)\n" if hold else ""
    (project / "setup.py").write_text(
        textwrap.dedent("""
        import os, pathlib, time, uuid
        from setuptools import setup
        """)
        + wait
        + textwrap.dedent("""
        if os.path.isdir("src/tiny_pkg"):
            pathlib.Path("src/tiny_pkg/_build_id.py").write_text(f"BUILD = {uuid.uuid4().hex!r}\\n")
        setup()
        """)
    )
    return project


def release(project: Path, home: Path, *args: str) -> tuple[int, dict, str]:
    result = run_cli("release", str(project), "--json", *args, env={"WHEELFLOW_HOME": str(home)})
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


@pytest.mark.case(
    "fault",
    "a verified release re-run from a fresh runner (empty WHEELFLOW_HOME) whose rebuild differs",
    "exit 0, nothing uploaded: the served files match the upload record on the Prefect server",
)
def test_a_rerun_on_a_fresh_home_finds_its_files_by_the_servers_record(
    tmp_path: Path, index, index_credentials, prefect_api
) -> None:
    with FaultProxy(index.url) as proxy:
        project = unreproducible_project(tmp_path / "p", proxy.url + "simple/")
        code, first, stderr = release(project, tmp_path / "home-a")
        assert code == 0, stderr[-3000:]
        code, again, stderr = release(project, tmp_path / "home-b")
    assert code == 0, stderr[-3000:]
    assert sorted(proxy.forwarded_uploads()) == [WHEEL, SDIST]  # each uploaded once, by the first run
    assert {f["upload"] for f in again["files"]} == {"already present"}
    assert {(f["filename"], f["sha256"]) for f in again["files"]} == {
        (f["filename"], f["sha256"]) for f in first["files"]
    }
    assert {f["status"] for f in again["files"]} == {"verified"}
    adopted = [c for c in again["checks"] if c["check"].startswith("adopted ")]
    assert len(adopted) == 2 and all(first["flow_run_id"] in c["detail"] for c in adopted)


@pytest.mark.case(
    "fault",
    "a release that stopped after uploading half its files, re-run on a fresh home",
    "exit 0: the uploaded half is recognised from the server's record, the rest uploaded; each file once",
)
def test_a_release_stopped_half_way_finishes_from_a_fresh_home(
    tmp_path: Path, index, index_credentials, prefect_api
) -> None:
    with FaultProxy(index.url) as proxy:
        project = unreproducible_project(tmp_path / "p", proxy.url + "simple/")
        # Every attempt to upload the sdist is cut off: the run ends after the wheel landed.
        proxy.rules.append(Rule("POST", 0, reset=True, times=99, body_contains=SDIST.encode()))
        code, first, stderr = release(project, tmp_path / "home-a")
        assert code == 1 and {f["filename"]: f["upload"] for f in first["files"]}[WHEEL] == "uploaded", stderr[-3000:]
        proxy.rules.clear()
        code, again, stderr = release(project, tmp_path / "home-b")
    assert code == 0, stderr[-3000:]
    assert proxy.forwarded_uploads() == [WHEEL, SDIST]
    assert {f["filename"]: f["upload"] for f in again["files"]} == {WHEEL: "already present", SDIST: "uploaded"}


@pytest.mark.case(
    "fault",
    "two runs of the same version at once, on two homes (as two runners)",
    "one uploads; the other waits for it, saying for which run, then finds everything already present",
)
def test_two_runs_of_one_version_take_turns(tmp_path: Path, index, index_credentials, prefect_api) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    with FaultProxy(index.url) as proxy:
        project = unreproducible_project(tmp_path / "p", proxy.url + "simple/", hold=hold)
        exe = str(Path(sys.executable).with_name("wheelflow"))

        def start(home: str) -> tuple[subprocess.Popen, Path]:
            log = tmp_path / f"{home}.log"
            proc = subprocess.Popen(
                [exe, "release", str(project), "--json"],
                stdout=subprocess.PIPE,
                stderr=open(log, "wb"),
                text=True,
                env={**os.environ, "WHEELFLOW_HOME": str(tmp_path / home)},
            )
            return proc, log

        first, _ = start("home-a")
        deadline = time.monotonic() + 180
        while not list((tmp_path / "home-a").glob("tmp/*")):  # the first run is building, holding the release
            assert first.poll() is None and time.monotonic() < deadline, "the first run never started building"
            time.sleep(0.2)  # polling another process's progress, bounded by the deadline
        second, second_log = start("home-b")
        while "waiting up to" not in second_log.read_text():
            assert second.poll() is None and time.monotonic() < deadline, second_log.read_text()[-3000:]
            time.sleep(0.2)  # polling the second run's log for its wait, bounded by the deadline
        hold.unlink()
        out_a, _ = first.communicate(timeout=600)
        out_b, _ = second.communicate(timeout=600)
    report_a, report_b = json.loads(out_a), json.loads(out_b)
    assert first.returncode == 0 and second.returncode == 0, second_log.read_text()[-3000:]
    assert f"for flow run {report_a['flow_run_id']}" in second_log.read_text()
    assert sorted(proxy.forwarded_uploads()) == [WHEEL, SDIST]  # the index saw each file once
    assert {f["upload"] for f in report_b["files"]} == {"already present"}
