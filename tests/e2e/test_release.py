"""End to end against real parts: Prefect server, pypiserver with htpasswd, twine, pip."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
import time
import zipfile
from pathlib import Path
from uuid import UUID

import pytest
from conftest import REPO, git, make_project, run_cli
from faultproxy import FaultProxy, Rule

from wheelflow.core.distributions import sha256_of

WHEEL = "tiny_pkg-1.0.0-py3-none-any.whl"
SDIST = "tiny_pkg-1.0.0.tar.gz"


def release_json(*args: str) -> tuple[int, dict, str]:
    result = run_cli("release", *args, "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def test_release_uploads_each_file_once_and_a_rerun_changes_nothing(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    with FaultProxy(index.url) as proxy:  # no faults: it only counts what reaches the index
        project = make_project(tmp_path / "proj", index_url=proxy.url + "simple/")
        code, report, stderr = release_json(str(project))
        assert code == 0, stderr[-3000:]
        assert report["ok"] and report["name"] == "tiny-pkg" and report["version"] == "1.0.0"
        assert UUID(report["flow_run_id"])
        files = {f["filename"]: f for f in report["files"]}
        assert set(files) == {WHEEL, SDIST}
        for filename, entry in files.items():
            assert (entry["upload"], entry["status"]) == ("uploaded", "verified")
            assert sha256_of(index.packages / filename) == entry["sha256"]  # the bytes built are the bytes served
        checks = {c["check"]: c for c in report["checks"]}
        assert checks["install + smoke on staging"]["status"] == "passed"
        for installer in ("pip", "uv pip"):  # the command its users type, with both installers: a wheel, not the sdist
            row = checks[
                f"install check on staging: {installer} install tiny-pkg==1.0.0 --index-url {proxy.url}simple/ "
                "(this-python)"
            ]
            assert (row["status"], row["detail"]) == (
                "passed",
                f"{installer.split()[0]} installed {WHEEL} (variant plain)",
            )
        uploads = [s for s in proxy.seen if s[0] == "POST"]
        assert len(uploads) == 2

        code, again, stderr = release_json(str(project))
        assert code == 0, stderr[-3000:]
        assert [(f["upload"], f["status"]) for f in again["files"]] == [("already present", "verified")] * 2
        assert [s for s in proxy.seen if s[0] == "POST"] == uploads  # nothing was uploaded again
        assert again["checks"][-1]["check"] == "nothing to upload"


@pytest.mark.case("bad input", "missing credentials", "stopped before the build, naming the variables to set")
def test_missing_credentials_stop_the_release_before_the_build(tmp_path: Path, home: Path, index, prefect_api) -> None:
    project = make_project(tmp_path / "proj", index_url=index.simple_url)
    code, report, stderr = release_json(str(project))
    assert code == 1
    assert report["error"] == (
        "target 'staging': no credentials: WHEELFLOW_STAGING_PASSWORD is not set; "
        "fix: export WHEELFLOW_STAGING_PASSWORD (and WHEELFLOW_STAGING_USERNAME unless it is an API token)"
    )
    assert not (home / "builds").exists()
    assert list(index.packages.iterdir()) == []


@pytest.mark.case("bad input", "the tag and the version file disagree", "refused before anything is built")
def test_tag_version_mismatch_is_refused_before_anything_is_built(tmp_path: Path, home: Path, prefect_api) -> None:
    project = make_project(tmp_path / "proj", version="1.2.0")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "release")
    git(project, "tag", "v1.3.0")
    code, report, stderr = release_json(str(project))
    assert code == 1
    assert report["error"].startswith(
        "version mismatch: tag v1.3.0 (version.tag 'v{version}') says 1.3.0 but pyproject.toml (version.file) says 1.2.0"
    )
    assert "wheelflow: release failed: version mismatch" in stderr
    # Prefect logs the failed task and flow run; for an error written for the user, without a traceback.
    assert "Task run failed with exception: VersionError(" in stderr and "Traceback" not in stderr
    assert not (home / "builds").exists()


@pytest.mark.case("fault", "a file is never served", "verification fails naming the file")
def test_verify_names_the_file_the_index_does_not_serve(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    project = make_project(tmp_path / "proj", index_url=index.simple_url)
    assert release_json(str(project))[0] == 0
    (index.packages / WHEEL).unlink()  # the index lost a file after the release

    result = run_cli(
        "verify",
        "tiny-pkg==1.0.0",
        "--index",
        index.simple_url,
        "--expect",
        WHEEL,
        "--expect",
        SDIST,
        "--no-install",
        "--timeout",
        "1",
        "--json",
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert not report["ok"]
    assert {f["filename"]: f["status"] for f in report["files"]} == {WHEEL: "missing", SDIST: "served"}
    assert f"wheelflow: verify failed: {WHEEL} is not served" in result.stderr


@pytest.mark.case(
    "fault", "the index serves other bytes under the release's file name", "hash mismatch named; nothing uploaded"
)
def test_served_bytes_that_differ_from_the_build_are_a_named_hash_mismatch(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    project = make_project(tmp_path / "proj", index_url=index.simple_url)
    code, report, _ = release_json(str(project))
    assert code == 0
    built_sdist = next(home.glob(f"builds/tiny-pkg/1.0.0/*/{SDIST}"))
    (index.packages / SDIST).write_bytes(b"not the bytes that were built")
    served_sha = sha256_of(index.packages / SDIST)

    result = run_cli(
        "verify", "tiny-pkg==1.0.0", "--index", index.simple_url, "--expect", str(built_sdist), "--no-install", "--json"
    )
    assert result.returncode == 1
    (entry,) = json.loads(result.stdout)["files"]
    assert (entry["filename"], entry["status"], entry["sha256"]) == (SDIST, "hash-mismatch", served_sha)
    assert f"{SDIST} is served with sha256 {served_sha}, the built file has {sha256_of(built_sdist)}" in result.stderr

    # Re-releasing refuses before any upload: an index never replaces a file.
    code, again, _ = release_json(str(project))
    assert code == 1
    assert again["error"].startswith(f"staging: {SDIST} is served with sha256 {served_sha}")
    assert "release a new version" in again["error"]


def test_failed_upload_attempts_show_in_the_task_run_state_history(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from wheelflow.flows.release import release

    with FaultProxy(index.url) as proxy:
        proxy.rules.append(Rule("POST", 503, "Service Unavailable", times=2))
        project = make_project(tmp_path / "proj", index_url=proxy.url + "simple/")
        text = (project / "pyproject.toml").read_text().replace("smoke = ", 'artifacts = ["wheel"]\nsmoke = ')
        (project / "pyproject.toml").write_text(text)
        state = release(project=str(project), return_state=True)
    assert state.is_completed(), state.message
    assert [s for s in proxy.seen if s[0] == "POST"] == [("POST", "/", 503)] * 2 + [("POST", "/", 200)]

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        (upload,) = [
            t
            for t in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if t.name.startswith("upload[")
        ]
        assert upload.name == f"upload[{WHEEL}→staging]"
        deadline = time.monotonic() + 30
        while True:  # task states are written by a server service from events: eventually consistent
            names = [s.name for s in client.read_task_run_states(upload.id)]
            if names.count("AwaitingRetry") == 2 and names[-1] == "Completed" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        run_count = client.read_task_run(upload.id).run_count
    assert names.count("AwaitingRetry") == 2, names
    assert names[-1] == "Completed", names
    assert run_count == 3


@pytest.fixture
def default_builder(request) -> str:
    """The builder `wheelflow release` picks by itself: docker when a daemon answers (then it needs the images)."""
    from wheelflow.builds.builders.docker import daemon_answers

    if daemon_answers():
        request.getfixturevalue("docker_images")
        return "docker"
    return "local"


@pytest.mark.skipif(
    shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists(),
    reason="no CUDA toolkit on this machine: the kernel cannot be compiled",
)
def test_readme_main_command_releases_hello_cuda_with_its_kernels(
    home: Path, prefect_api, default_builder: str
) -> None:
    code, report, stderr = release_json(str(REPO / "examples" / "hello-cuda"))
    assert code == 0, stderr[-3000:]
    assert report["ok"] and report["builder"] == default_builder
    # The repair step (auditwheel, on by default on Linux) gave each wheel a manylinux tag.
    assert [
        re.sub(r"manylinux_\d+_\d+_x86_64", "manylinux_X_Y_x86_64", f)
        for f in sorted(f["filename"] for f in report["files"])
    ] == [
        "hello_cuda-0.1.0+sm80-cp311-cp311-manylinux_X_Y_x86_64.whl",
        "hello_cuda-0.1.0+sm90-cp311-cp311-manylinux_X_Y_x86_64.whl",
        "hello_cuda-0.1.0.tar.gz",
    ]
    assert all(f["status"] == "verified" and f["target"] == "local" for f in report["files"])
    for cell, arch in zip(report["cells"], ("sm_80", "sm_90")):
        assert (cell["state"], cell["smoke"]) == ("built", "passed")
        with zipfile.ZipFile(home / "index" / "packages" / cell["wheel"]) as zf:
            (ext,) = [n for n in zf.namelist() if n.startswith("hello_cuda/_core") and n.endswith(".so")]
            # nvcc embeds the kernel's (mangled) name and the SM architecture in the device code.
            assert b"saxpy_kernel" in zf.read(ext) and arch.encode() in zf.read(ext)
    smoke = next(c for c in report["checks"] if c["check"] == "install + smoke on local")
    assert smoke["status"] == "passed"


def test_hello_cuda_with_the_local_builder_then_again_all_cached(home: Path, prefect_api) -> None:
    code, report, stderr = release_json(str(REPO / "examples" / "hello-cuda"), "--builder", "local")
    assert code == 0, stderr[-3000:]
    assert report["builder"] == "local" and [c["state"] for c in report["cells"]] == ["built", "built"]
    code, again, stderr = release_json(str(REPO / "examples" / "hello-cuda"), "--builder", "local")
    assert code == 0, stderr[-3000:]
    assert [(c["cached"], c["sha256"]) for c in again["cells"]] == [(True, c["sha256"]) for c in report["cells"]]
    assert [f["upload"] for f in again["files"]] == ["already present"] * 3


def test_a_development_build_stamps_a_dev_version_and_publishes_to_the_first_target_only(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    project = tmp_path / "nightly"
    (project / "src" / "tiny_pkg").mkdir(parents=True)
    (project / "src" / "tiny_pkg" / "__init__.py").write_text("def answer():\n    return 42\n")
    (project / "src" / "tiny_pkg" / "_version.py").write_text('__version__ = "1.0.0"\n')
    (project / "README.md").write_text("# tiny-pkg\n\nA nightly build.\n")
    (project / "setup.py").write_text(
        textwrap.dedent("""
        import os
        from setuptools import setup
        base = open("src/tiny_pkg/_version.py").read().split("=")[1].strip().strip('"')
        setup(version=os.environ.get("WHEELFLOW_RELEASE_VERSION") or base)
        """)
    )
    (project / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "tiny-pkg"
        dynamic = ["version"]
        description = "nightly test package"
        readme = "README.md"

        [tool.setuptools.packages.find]
        where = ["src"]

        [tool.wheelflow]
        smoke = "python -c 'import tiny_pkg; assert tiny_pkg.answer() == 42'"

        [tool.wheelflow.version]
        file = "src/tiny_pkg/_version.py"

        [tool.wheelflow.targets.staging]
        index = "{index.simple_url}"
        verify-timeout = 5

        [tool.wheelflow.targets.production]
        index = "http://127.0.0.1:9/simple/"
        """)
    )
    result = run_cli("release", str(project), "--dev", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert re.fullmatch(r"1\.0\.1\.dev\d{12}", report["version"])
    assert sorted((f["target"], f["filename"], f["status"]) for f in report["files"]) == [
        ("staging", f"tiny_pkg-{report['version']}-py3-none-any.whl", "verified"),
        ("staging", f"tiny_pkg-{report['version']}.tar.gz", "verified"),
    ]


@pytest.mark.case(
    "bad input",
    "a tracked file edited after tagging, then `wheelflow release`",
    "refused before any build naming the file and --allow-dirty; with it, released and labelled dirty",
)
def test_a_dirty_checkout_is_refused_before_the_build_and_allow_dirty_labels_it(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    project = make_project(tmp_path / "p", index_url=index.simple_url)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "release 1.0.0")
    git(project, "tag", "v1.0.0")
    (project / "README.md").write_text("# tiny-pkg\n\nAn uncommitted line that must not ship as 1.0.0.\n")

    code, report, _ = release_json(str(project))
    assert code == 1 and "README.md" in report["error"] and "--allow-dirty" in report["error"]
    assert not (home / "builds").exists() and report["files"] == []

    code, report, stderr = release_json(str(project), "--allow-dirty")
    assert code == 0, stderr[-3000:]
    assert "dirty" in next(c for c in report["checks"] if c["check"] == "source")["detail"]
    assert report["source"]["dirty"] is True and report["source"]["changed"] == ["README.md"]


@pytest.mark.case(
    "fault",
    "no Prefect server configured (the README's first command on a laptop)",
    "the home's own Prefect server is started once and reused: both runs verified, no traceback, "
    "each output ends with the run's UI link",
)
def test_a_release_without_a_prefect_server_prints_no_traceback(tmp_path: Path, home: Path) -> None:
    import os
    import subprocess
    import sys

    from wheelflow.adapters.localserver import read_state, state_dir
    from wheelflow.index.localindex import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # nothing configured, as on a laptop
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    port = free_port()
    env["WHEELFLOW_SERVER_PORT"] = str(port)  # a free port, not Prefect's 4200 that another test run may hold
    project = make_project(tmp_path / "proj")
    pids = []
    for run in ("first", "second"):  # the second finds the server running, and the release's concurrency limit made
        done = subprocess.run(
            [str(Path(sys.executable).with_name("wheelflow")), "release", str(project), "--builder", "local"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "released and verified" in done.stdout
        # The temporary server used to print tracebacks on releases that succeeded: its telemetry
        # heartbeat raced the run for SQLite's write lock ("database is locked"), and re-creating the
        # release's concurrency limit logged an IntegrityError.
        assert "Traceback" not in done.stderr and "database is locked" not in done.stderr, (run, done.stderr[-3000:])
        last = done.stderr.strip().splitlines()[-1]
        assert re.fullmatch(
            rf"see it in the Prefect UI: http://127\.0\.0\.1:{port}/runs/flow-run/[0-9a-f-]{{36}}", last
        )
        assert ("starting the local Prefect server" in done.stderr) == (run == "first")
        pids.append(read_state(state_dir(home)).pid)
    assert pids[0] == pids[1]  # one server for the home, reused
    assert (state_dir(home) / "prefect.db").exists()  # SQLite under the home
