"""Releases to a ``kind = "github-release"`` target, end to end through ``wheelflow release``, against the
stand-in GitHub (tests/githubstub.py): GitHub itself cannot be reached from these machines; the stand-in
follows GitHub's REST API version 2022-11-28 (releases by tag, drafts, uploads on the uploads host,
``digest``, downloads redirected to a storage host).

What users of the flash-attention family rely on: the draft is published only after every asset is
proven; each cell's guessed URL serves that cell's wheel; pip and uv install from the find-links page;
a re-run uploads nothing; a failed release leaves no asset of its run.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from githubstub import TOKEN, GitHubStub, Seen

NAME, VERSION, OWNER_REPO = "tiny-pkg", "1.0.0", "octo/tiny"
HELLO = REPO / "examples" / "hello-cuda"
# Two variant cells, as a CUDA project's matrix: tiny_pkg-1.0.0+cu124-py3-none-any.whl and +cu130.
MATRIX = """
[tool.wheelflow.matrix]
axes = { python = ["3.11"], cuda = ["12.4", "13.0"] }
local-version = "cu{cuda_nodot}"
"""
GUESSED = "{name}-{version}+cu{cuda_nodot}-py3-none-any.whl"


def variant_project(root: Path, extra: str) -> Path:
    """A tiny project whose wheel varies per cell by local version (+cu124, +cu130), as a CUDA project's."""
    (root / "src" / "tiny_pkg").mkdir(parents=True, exist_ok=True)
    (root / "src" / "tiny_pkg" / "__init__.py").write_text(f'__version__ = "{VERSION}"\n')
    (root / "README.md").write_text("# tiny-pkg\n\nA package released by wheelflow's tests.\n")
    (root / "setup.py").write_text(
        textwrap.dedent("""
        import os, re
        from setuptools import setup

        local = os.environ.get("WHEELFLOW_LOCAL_VERSION")
        init = open("src/tiny_pkg/__init__.py").read()
        version = os.environ.get("WHEELFLOW_RELEASE_VERSION") or re.search(r'"(.+)"', init).group(1)
        setup(version=version + (f"+{local}" if local else ""))
        """)
    )
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{NAME}"
        dynamic = ["version"]
        readme = "README.md"
        description = "github-release test package"

        [tool.setuptools.packages.find]
        where = ["src"]

        [tool.wheelflow]
        artifacts = ["wheel"]
        smoke = "python -c 'import tiny_pkg'"

        [tool.wheelflow.version]
        tag = "v{{version}}"
        file = "src/tiny_pkg/__init__.py"
        """)
        + MATRIX
        + extra
    )
    return root


def github_target(stub: GitHubStub, guessed_name: str, repository: str = OWNER_REPO) -> str:
    return textwrap.dedent(f"""
        [tool.wheelflow.targets.gh]
        kind = "github-release"
        repository = "{repository}"
        api-url = "{stub.api_url}"
        uploads-url = "{stub.uploads_url}"
        asset-url = "{stub.download_url}/{{repository}}/releases/download/v{{version}}/{{wheel}}"
        guessed-name = "{guessed_name}"
        """)


def release(project: Path, *args: str) -> tuple[int, dict, str]:
    result = run_cli(
        "release", str(project), "--to", "gh", "--builder", "local", "--json", *args, env={"WHEELFLOW_GH_TOKEN": TOKEN}
    )
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def checks(report: dict) -> dict[str, dict]:
    return {c["check"]: c for c in report["checks"]}


def token_kept_to_github(seen: list[Seen]) -> None:
    for request in seen:
        assert TOKEN not in request.target
        assert request.host in ("api", "uploads") or request.authorization is None, request


def test_a_release_to_github_publishes_the_draft_after_every_proof_and_a_rerun_uploads_nothing(
    tmp_path: Path, home: Path, prefect_api
) -> None:
    with GitHubStub(OWNER_REPO) as stub:
        project = variant_project(tmp_path / "p", github_target(stub, GUESSED))
        code, report, stderr = release(project)
        assert code == 0, stderr[-3000:]
        wheels = {f"tiny_pkg-{VERSION}+cu{c}-py3-none-any.whl" for c in ("124", "130")}
        files = {f["filename"]: f for f in report["files"]}
        assert set(files) == wheels
        assert {(f["target"], f["upload"], f["status"]) for f in files.values()} == {("gh", "uploaded", "verified")}
        assert set(stub.asset_names(f"v{VERSION}")) == set(files) | {"index.html"}
        assert not stub.release(f"v{VERSION}").draft

        # The draft went public only after every asset (and the page) was downloaded through the API;
        # users' URLs (the download host) were asked only after that.
        seen = list(stub.seen)
        publish = next(i for i, s in enumerate(seen) if s.method == "PATCH")
        proofs = [i for i, s in enumerate(seen) if s.host == "api" and "/releases/assets/" in s.target]
        assert len(proofs) >= len(files) + 1 and max(proofs) < publish
        assert min(i for i, s in enumerate(seen) if s.host == "download") > publish

        done = checks(report)
        for cuda in ("124", "130"):
            rows = [
                c for name, c in done.items() if name.startswith("guessed URL of ") and f"+cu{cuda}-" in c["detail"]
            ]
            assert [r["status"] for r in rows] == ["passed"], (cuda, list(done))
            assert (
                f"{stub.download_url}/{OWNER_REPO}/releases/download/v{VERSION}/tiny_pkg-{VERSION}+cu{cuda}"
                in rows[0]["detail"]
            )
        assert done["install + smoke on gh"]["status"] == "passed"  # from the users' download URLs
        installs = [c for name, c in done.items() if name.startswith("install check on gh: ")]
        assert {c["detail"].split()[0] for c in installs} == {"pip", "uv"}
        assert all(c["status"] == "passed" for c in installs), installs
        assert all("--find-links" in name for name in done if name.startswith("install check on gh: "))
        assert any("--find-links" in line and "index.html" in line for line in report["install"])
        token_kept_to_github(seen)

        # Again, from a server without the digest field (GitHub before 2025, older Enterprise servers): every
        # file and the page found with our bytes (downloaded and hashed), nothing uploaded or deleted.
        stub.digests = False
        before = len(stub.seen)
        code, again, stderr = release(project)
        assert code == 0, stderr[-3000:]
        assert {f["upload"] for f in again["files"]} == {"already present"}
        rerun = stub.seen[before:]
        assert not [s for s in rerun if s.host == "uploads" or s.method in ("DELETE", "POST", "PATCH")], rerun

        # wheelflow verify reads the target through its reader: the release's assets, downloaded and hashed.
        verified = run_cli(
            "verify", f"{NAME}=={VERSION}", "--index", "gh", "--project", str(project), "--json",
            env={"WHEELFLOW_GH_TOKEN": TOKEN},
        )  # fmt: skip
        assert verified.returncode == 0, verified.stderr[-3000:]
        result = json.loads(verified.stdout)
        assert {f["filename"]: f["status"] for f in result["files"]} == dict.fromkeys(wheels, "served")
        assert result["install"]["ok"]
        token_kept_to_github(stub.seen)


@pytest.mark.case(
    "fault",
    "github-release: a cell's guessed URL (what the project's setup.py downloads) answers 404 after publishing",
    "the release fails naming the URL users would have gotten a 404 from; the rollback deletes the run's "
    "assets and the release it created",
)
def test_a_guessed_url_that_misses_fails_the_release_and_the_rollback_leaves_no_asset(
    tmp_path: Path, home: Path, prefect_api
) -> None:
    with GitHubStub(OWNER_REPO) as stub:
        wrong = "{name}-{version}+cuda{cuda_nodot}-py3-none-any.whl"  # setup.py guesses "cuda", the wheels say "cu"
        project = variant_project(tmp_path / "p", github_target(stub, wrong))
        code, report, stderr = release(project)
        assert code != 0
        missed = (
            f"{stub.download_url}/{OWNER_REPO}/releases/download/v{VERSION}/tiny_pkg-{VERSION}+cuda124-py3-none-any.whl"
        )
        assert missed in report["error"] and "fix: make guessed-name match" in report["error"], report.get("error")
        assert "\n" not in report["error"]
        assert stub.release(f"v{VERSION}") is None and stub.assets == {}  # nothing of the run is left
        assert {f["upload"] for f in report["files"]} == {"rolled back"}
        token_kept_to_github(stub.seen)


@pytest.mark.skipif(
    shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists(),
    reason="no CUDA toolkit on this machine: the kernel cannot be compiled",
)
def test_hello_cuda_to_a_github_release_in_the_flash_attention_shape(tmp_path: Path, home: Path, prefect_api) -> None:
    """examples/hello-cuda released as flash-attention ships: plain linux_x86_64 wheels (no repair), one per
    CUDA architecture, each at the URL its setup.py would guess; pip and uv install from the page."""
    project = tmp_path / "hello-cuda"
    shutil.copytree(HELLO, project, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info"))
    with GitHubStub("octo/hello-cuda") as stub:
        extra = "\n[tool.wheelflow.repair]\nenabled = false\n" + github_target(
            stub, "{name}-{version}+sm{arch}-{py}-{py}-linux_x86_64.whl", repository="octo/hello-cuda"
        )
        pyproject = project / "pyproject.toml"
        pyproject.write_text(pyproject.read_text() + extra)
        code, report, stderr = release(project)
        assert code == 0, stderr[-3000:]
        assert {(f["upload"], f["status"]) for f in report["files"]} == {("uploaded", "verified")}
        done = checks(report)
        assert done["install + smoke on gh"]["status"] == "passed"
        guessed = [c for name, c in done.items() if name.startswith("guessed URL of ")]
        assert len(guessed) == 2 and all(c["status"] == "passed" for c in guessed), guessed
        installs = [c for name, c in done.items() if name.startswith("install check on gh: ")]
        assert installs and all(c["status"] == "passed" for c in installs), installs
        assert not stub.release("v0.1.0").draft
        token_kept_to_github(stub.seen)


def test_the_monitor_flags_a_release_without_wheels_and_a_version_the_public_index_lacks(
    tmp_path: Path, home: Path, prefect_api, index, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed's incident: wheels on GitHub Releases, the public index behind, nothing comparing the two.
    The sync monitor reads the spec's github-release target through its reader (the release's assets)
    beside an index (pypiserver stands in for the public index)."""
    from test_monitor import make_tagged_repo

    from flows.monitor import MonitoredProject, sync_monitor
    from wheelflow.adapters.prefect_api import PrefectVariableStore

    repo = make_tagged_repo(
        tmp_path / "repo", {"v1.0.0": ("2024-01-01T00:00:00Z", True), "v1.1.0": ("2024-02-01T00:00:00Z", True)}
    )
    with GitHubStub(OWNER_REPO) as stub:
        complete = stub.add_release("v1.0.0", draft=False)
        for cuda in ("124", "130"):  # every cell of the matrix
            stub.add_asset(complete, f"tiny_pkg-1.0.0+cu{cuda}-py3-none-any.whl", b"wheel bytes " + cuda.encode())
        stub.add_asset(stub.add_release("v1.1.0", draft=False), "index.html", b"<html></html>")  # no wheels
        spec = tmp_path / "tiny-pkg.toml"
        spec.write_text(
            'name = "tiny-pkg"\nartifacts = ["wheel"]\n[version]\ntag = "v{version}"\nfile = "src/tiny_pkg/__init__.py"\n'
            + (MATRIX + github_target(stub, GUESSED)).replace("[tool.wheelflow.", "[")
        )
        monkeypatch.setenv("WHEELFLOW_GH_TOKEN", TOKEN)
        project = MonitoredProject(
            name=NAME, repo=str(repo), indexes=["gh", index.simple_url], spec=str(spec), grace_hours=24
        )
        try:
            state = sync_monitor(projects=[project], return_state=True)
        finally:  # the incidents it opened are closed: the Prefect server is shared with later tests
            store = PrefectVariableStore()
            watched = ("gh", index.simple_url)
            store.save({k: i for k, i in store.load().items() if not (i.project == NAME and i.index in watched)})
    assert state.is_failed()
    problems = state.message.split("not served as expected: ", 1)[1]
    assert f"{NAME} 1.1.0@gh missing" in problems  # a tag whose release lacks wheels
    assert f"{NAME} 1.0.0@{index.simple_url} missing" in problems  # on GitHub, not on the index
    assert f"{NAME} 1.0.0@gh" not in problems
    token_kept_to_github(stub.seen)


@pytest.mark.case(
    "fault",
    "github-release: the tag's draft already holds another file under one of the release's asset names",
    "the release stops before any upload, naming the file and both sha256; the other file stays",
)
def test_another_file_under_our_asset_name_stops_the_release_before_any_upload(
    tmp_path: Path, home: Path, prefect_api
) -> None:
    with GitHubStub(OWNER_REPO) as stub:
        draft = stub.add_release(f"v{VERSION}", draft=True)
        foreign = f"tiny_pkg-{VERSION}+cu124-py3-none-any.whl"
        stub.add_asset(draft, foreign, b"someone else's wheel")
        project = variant_project(tmp_path / "p", github_target(stub, GUESSED))
        code, report, _stderr = release(project)
        assert code != 0
        assert foreign in report["error"] and "\n" not in report["error"] and "fix:" in report["error"]
        assert not [s for s in stub.seen if s.host == "uploads"]  # nothing uploaded
        assert stub.asset_names(f"v{VERSION}") == [foreign] and stub.release(f"v{VERSION}").draft
        token_kept_to_github(stub.seen)


@pytest.mark.case(
    "fault",
    "github-release: GitHub answers 502 mid-upload (the half-made asset stays in state starter) and rate-limits",
    "the half-made asset is deleted and uploaded again, the rate limit waited out within the deadline; "
    "the release ends verified",
)
def test_a_5xx_mid_upload_and_a_rate_limit_are_ridden_out(tmp_path: Path, home: Path, prefect_api) -> None:
    with GitHubStub(OWNER_REPO) as stub:
        project = variant_project(tmp_path / "p", github_target(stub, GUESSED))
        stub.fail_uploads = 1
        stub.rate_limit("secondary", seconds=1, times=1)
        code, report, stderr = release(project)
        assert code == 0, stderr[-3000:]
        assert {(f["upload"], f["status"]) for f in report["files"]} == {("uploaded", "verified")}
        names = stub.asset_names(f"v{VERSION}")
        assert sorted(names) == sorted(set(names))  # one asset per name: the half-made one was deleted
        assert all(a.state == "uploaded" for a in stub.assets.values())
        assert [s for s in stub.seen if s.method == "DELETE"]  # the half-made asset
        token_kept_to_github(stub.seen)


@pytest.mark.case(
    "fault",
    "github-release: a check after publishing fails on a draft an earlier run left (found, not created)",
    "the run's assets are deleted and the release is a draft again (users never keep a release that failed "
    "its proof); the earlier run's asset stays",
)
def test_a_found_draft_published_by_a_failing_run_is_a_draft_again(tmp_path: Path, home: Path, prefect_api) -> None:
    with GitHubStub(OWNER_REPO) as stub:
        draft = stub.add_release(f"v{VERSION}", draft=True)
        stub.add_asset(draft, "NOTES.txt", b"left by an earlier run")
        wrong = "{name}-{version}+cuda{cuda_nodot}-py3-none-any.whl"
        project = variant_project(tmp_path / "p", github_target(stub, wrong))
        code, report, _stderr = release(project)
        assert code != 0 and "guesses" in report["error"]
        again = stub.release(f"v{VERSION}")
        assert again is not None and again.id == draft.id and again.draft
        assert stub.asset_names(f"v{VERSION}") == ["NOTES.txt"]
        token_kept_to_github(stub.seen)
