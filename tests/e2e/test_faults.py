"""Faults on real sockets: an index whose listing lags behind its uploads."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import make_project, run_cli
from faultproxy import FaultProxy

WHEEL = "tiny_pkg-1.0.0-py3-none-any.whl"


@pytest.mark.case(
    "fault",
    "the listing hides a new file for 10 s (cache lag)",
    "verification waits, re-reading at most 2 s apart, and passes",
)
def test_a_listing_that_lags_10_s_behind_the_upload_is_waited_for(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    project = make_project(tmp_path / "p")
    with FaultProxy(index.url) as proxy:
        proxy.lag[WHEEL] = 10.0
        (project / "pyproject.toml").write_text(
            (project / "pyproject.toml").read_text()
            + textwrap.dedent(f"""
            [tool.wheelflow.targets.staging]
            index = "{proxy.url}simple/"
            verify-timeout = 60
            """)
        )
        result = run_cli("release", str(project), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {f["status"] for f in json.loads(result.stdout)["files"]} == {"verified"}
    first_upload = next(i for i, (method, _, _) in enumerate(proxy.seen) if method == "POST")
    listings_after = [p for m, p, _ in proxy.seen[first_upload:] if m == "GET" and p.startswith("/simple/")]
    assert len(listings_after) >= 5  # it kept reading while the file was hidden (about 10 s at ≤ 2 s apart)


def _release_through(proxy: FaultProxy, project: Path) -> tuple[int, dict, str]:
    (project / "pyproject.toml").write_text(
        (project / "pyproject.toml").read_text()
        + textwrap.dedent(f"""
        [tool.wheelflow.targets.staging]
        index = "{proxy.url}simple/"
        verify-timeout = 30
        """)
    )
    result = run_cli("release", str(project), "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


@pytest.mark.case(
    "fault",
    "the connection is reset during an upload",
    "read back, retried where needed: each file uploaded once, release verified",
)
@pytest.mark.parametrize("when", ["before the file landed", "after the file landed"])
def test_a_connection_reset_during_upload_ends_with_each_file_uploaded_once(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api, when: str
) -> None:
    from faultproxy import Rule

    landed = when.startswith("after")

    with FaultProxy(index.url) as proxy:
        proxy.rules.append(Rule("POST", 0, reset=True, forward_first=landed))
        code, report, stderr = _release_through(proxy, make_project(tmp_path / "p"))
    assert code == 0, stderr[-3000:]
    assert [(f["upload"], f["status"]) for f in report["files"]] == [("uploaded", "verified")] * 2
    assert proxy.statuses("POST") == ([0, 200] if landed else [0, 200, 200])  # a landed file is not sent again
    assert sorted(p.name for p in index.packages.iterdir()) == sorted([WHEEL, "tiny_pkg-1.0.0.tar.gz"])


@pytest.mark.case(
    "fault",
    "the index serves truncated files (with a consistent length)",
    "the byte proof's own download fails the sha256 check, naming the file, before pip runs; "
    "the release fails: never a false success",
)
def test_a_truncated_download_fails_the_byte_proof_and_the_release(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    from faultproxy import Rule

    with FaultProxy(index.url) as proxy:
        proxy.rules.append(Rule("GET", 200, truncate=True, path_prefix="/packages/", times=100))
        code, report, _ = _release_through(proxy, make_project(tmp_path / "p"))
    assert code == 1 and report["ok"] is False
    failed = [c for c in report["checks"] if c["status"] == "failed"]
    assert failed[0]["check"] == f"served {WHEEL} on staging"
    assert failed[0]["detail"].startswith(f"{WHEEL}: the index lists sha256 ")
    assert "but the downloaded bytes have sha256 " in failed[0]["detail"]
    assert not any(c["check"].startswith("install + smoke") for c in report["checks"])  # caught before pip ran


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB tmpfs: a real full disk for $WHEELFLOW_HOME."""
    import subprocess

    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], capture_output=True)


@pytest.mark.case(
    "fault", "the artifact directory is full", "the build fails naming the disk and the fix; nothing is uploaded"
)
def test_a_full_artifact_directory_fails_clearly_and_uploads_nothing(
    tmp_path: Path, index, index_credentials, prefect_api, small_disk: Path, monkeypatch
) -> None:
    import os

    monkeypatch.setenv("WHEELFLOW_HOME", str(small_disk / "home"))
    project = make_project(tmp_path / "p", index_url=index.simple_url)
    (project / "src" / "tiny_pkg" / "blob.bin").write_bytes(os.urandom(400_000))  # more than the disk holds
    text = (
        (project / "pyproject.toml")
        .read_text()
        .replace(
            "[tool.setuptools.packages.find]",
            '[tool.setuptools.package-data]\ntiny_pkg = ["*.bin"]\n\n[tool.setuptools.packages.find]',
        )
    )
    (project / "pyproject.toml").write_text(text)
    result = run_cli("release", str(project), "--json")
    assert result.returncode == 1
    # the error line, then the UI link of the failed run
    error = [line for line in result.stderr.strip().splitlines() if line.startswith("wheelflow:")][-1]
    assert "No space left on device" in error
    assert f"fix: free space on the disk of {small_disk / 'home'}" in error
    assert list(index.packages.iterdir()) == []


@pytest.mark.case(
    "fault",
    "the release process is killed mid-matrix (a runner dies)",
    "a re-run resumes: finished cells come from the cache, the rest build, the release verifies",
)
def test_a_release_killed_mid_matrix_resumes_with_finished_cells_cached(
    tmp_path: Path, home: Path, prefect_api
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    hold = tmp_path / "hold-the-slow-cell"
    hold.touch()
    project = tmp_path / "matrix"
    (project / "src" / "cellpkg").mkdir(parents=True)
    (project / "src" / "cellpkg" / "__init__.py").write_text("")
    (project / "README.md").write_text("# cellpkg\n\nA two-cell matrix.\n")
    (project / "setup.py").write_text(
        textwrap.dedent("""
        import os, time
        from setuptools import setup
        from setuptools.command.build_py import build_py

        class Hold(build_py):
            def run(self):
                # the "slow" cell blocks while the hold file exists: the runner dies meanwhile
                while os.environ.get("CELL") == "slow" and os.path.exists(os.environ["HOLD_FILE"]):
                    time.sleep(0.2)
                super().run()

        local = os.environ.get("WHEELFLOW_LOCAL_VERSION")
        setup(version="1.0.0" + (f"+{local}" if local else ""), cmdclass={"build_py": Hold})
        """)
    )
    (project / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "cellpkg"
        dynamic = ["version"]
        readme = "README.md"
        description = "two cells"

        [tool.setuptools.packages.find]
        where = ["src"]

        [tool.wheelflow]
        artifacts = ["wheel"]
        builder = "local"
        smoke = "python -c 'import cellpkg'"

        [tool.wheelflow.version]
        tag = "v{{version}}"

        [tool.wheelflow.matrix]
        axes = {{ python = ["3.11"], speed = ["fast", "slow"] }}
        env = {{ CELL = "{{speed}}", HOLD_FILE = "{hold}" }}
        local-version = "{{speed}}"
        concurrency = 2
        """)
    )
    exe = str(Path(sys.executable).with_name("wheelflow"))
    first = subprocess.Popen(
        [exe, "release", str(project), "--version", "1.0.0", "--json"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cells = home / "builds" / "cellpkg" / "1.0.0" / "cells"
    deadline = time.monotonic() + 300
    while not list(cells.glob("py3.11-speedfast/*/manifest.json")):
        assert first.poll() is None and time.monotonic() < deadline, "the fast cell never finished"
        time.sleep(0.5)  # polling the build cache for the finished cell, bounded by the deadline
    os.killpg(first.pid, signal.SIGKILL)  # the runner dies: flow process, builder and build together
    first.wait()

    hold.unlink()
    result = run_cli("release", str(project), "--version", "1.0.0", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert {c["cell"]: c["cached"] for c in report["cells"]} == {"py3.11-speedfast": True, "py3.11-speedslow": False}
    assert {f["status"] for f in report["files"]} == {"verified"}


@pytest.mark.case(
    "bad input",
    "path-traversing names: a version file outside the project, an artifact named '..'",
    "refused with one line naming the key or the name; nothing is read or written outside",
)
def test_path_traversing_names_are_refused(tmp_path: Path) -> None:
    from wheelflow.config.spec import parse_spec
    from wheelflow.core.errors import SpecError
    from wheelflow.index import artifactstore

    (tmp_path / "secret.txt").write_text('__version__ = "6.6.6"\n')
    project = tmp_path / "project"
    project.mkdir()
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "x", "version": {"file": "../secret.txt"}}, project)
    assert str(err.value) == (
        "spec error: tool.wheelflow.version.file: '../secret.txt' points outside the project; "
        "fix: give a path inside the project, relative to it"
    )
    with pytest.raises(artifactstore.ArtifactStoreError) as err:
        artifactstore.get((tmp_path / "store").as_uri() + "/ab/abc/..", tmp_path / "into", "0" * 64)
    assert str(err.value).startswith("refusing artifact name '..' from ")
    assert not err.value.transient and not (tmp_path / "into").exists()


@pytest.mark.case(
    "fault",
    "Prefect server restarted mid-release under load (two CPU-bound processes beside it)",
    "the client retries with backoff while the server is away: the run carries on and ends verified",
)
def test_a_prefect_server_restart_mid_release_carries_on_and_ends_verified(
    tmp_path: Path, home: Path, index, index_credentials, busy_cpus
) -> None:
    import subprocess
    import sys
    import time
    from urllib.parse import urlsplit

    from conftest import start_prefect_server

    hold = tmp_path / "hold-the-build"
    hold.touch()
    project = make_project(tmp_path / "p", index_url=index.simple_url)
    (project / "setup.py").write_text(
        textwrap.dedent(f"""
        import os, time
        from setuptools import setup
        while os.path.exists({str(hold)!r}):  # the build waits while the server restarts
            time.sleep(0.2)
        setup()
        """)
    )
    server_home = tmp_path / "prefect-home"
    server_home.mkdir()
    server, api = start_prefect_server(server_home)
    exe = str(Path(sys.executable).with_name("wheelflow"))
    release = subprocess.Popen(
        [exe, "release", str(project), "--json"],
        env={**__import__("os").environ, "PREFECT_API_URL": api},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (home / "builds").exists():  # the release reached its build step
            assert release.poll() is None and time.monotonic() < deadline, "the release never started building"
            time.sleep(0.2)  # polling for the build directory, bounded by the deadline
        server.terminate()
        server.wait(30)
        server, _ = start_prefect_server(server_home, port=urlsplit(api).port)  # same database, same address
        hold.unlink()
        out, err = release.communicate(timeout=300)
    finally:
        server.terminate()
        server.wait(30)
    # The client retries the API while the server is away: the run carries on and proves everything.
    assert release.returncode == 0, err[-3000:]
    report = json.loads(out)
    assert report["ok"] and {f["status"] for f in report["files"]} == {"verified"}
    assert sorted(p.name for p in index.packages.iterdir()) == sorted(f["filename"] for f in report["files"])


@pytest.mark.case(
    "fault",
    "the index answers 'File already exists' for a file it does not serve",
    "read back, not found: the release fails naming the file and the answer; nothing is reported uploaded",
)
def test_already_exists_for_a_file_that_is_not_served_fails_clearly(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    from faultproxy import Rule

    with FaultProxy(index.url) as proxy:
        proxy.rules.append(Rule("POST", 400, "File already exists."))  # answered without storing anything
        code, report, _ = _release_through(proxy, make_project(tmp_path / "p"))
    assert code == 1 and not report["ok"]
    assert report["error"].startswith(f"upload of {WHEEL} to {proxy.url} failed: HTTP 400 File already exists.; fix: ")
    assert [f["upload"] for f in report["files"]] == ["failed", "not run"]
    assert list(index.packages.iterdir()) == []


@pytest.mark.case(
    "bad input", "a target the spec does not name", "refused before anything runs, listing the known targets"
)
def test_an_unknown_target_is_refused_naming_the_known_ones(tmp_path: Path, home: Path) -> None:
    project = make_project(tmp_path / "p", index_url="http://127.0.0.1:9/simple/")
    result = run_cli("release", str(project), "--to", "prodution")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "wheelflow: error: spec error: --to: unknown target 'prodution'; fix: use one of: staging, local, pypi, testpypi, "
        "static-demo"
    )


@pytest.mark.case(
    "fault",
    "the index answers a listing later than the client waits (35 s > 30 s)",
    "the read times out, is retried with backoff, and the release completes",
)
def test_a_listing_slower_than_the_client_timeout_is_retried(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    from faultproxy import Rule

    with FaultProxy(index.url) as proxy:
        proxy.rules.append(Rule("GET", 200, delay=35.0, path_prefix="/simple/"))  # the first read, before uploads
        code, report, stderr = _release_through(proxy, make_project(tmp_path / "p"))
    assert code == 0, stderr[-3000:]
    assert {f["status"] for f in report["files"]} == {"verified"}
    assert "ReadTimeout" in stderr  # the timed-out attempt is in the run's log, then the retry
