"""``wheelflow backfill`` against a ``kind = "github-release"`` target (the stand-in GitHub of
tests/githubstub.py): a matrix that grew after the release gets its missing cell as a new asset of the
release already published, and only with ``add-to-published = true``: otherwise its users would see
assets appear one by one in a release they already use, so backfill refuses, naming the key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import git, run_cli
from githubstub import TOKEN, GitHubStub
from test_github_release_target import GUESSED, MATRIX, OWNER_REPO, VERSION, github_target, release, variant_project

TAG = f"v{VERSION}"
GROWN = MATRIX.replace('cuda = ["12.4", "13.0"]', 'cuda = ["12.4", "12.8", "13.0"]')
WHEELS = {cuda: f"tiny_pkg-{VERSION}+cu{cuda}-py3-none-any.whl" for cuda in ("124", "128", "130")}


def released_two_cells(root: Path, stub: GitHubStub, extra: str = "") -> Path:
    """The tagged project released to the stub with two cells (cu124, cu130), then its matrix grown to three
    (cu128 added) in a later commit, as a maintainer adds a CUDA version after a release."""
    target = github_target(stub, GUESSED) + extra
    project = variant_project(root, target)
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    git(project, "add", "-A")
    git(project, "commit", "-qm", f"release {VERSION}")
    git(project, "tag", TAG)
    code, report, stderr = release(project)
    assert code == 0, stderr[-3000:]
    assert set(stub.asset_names(TAG)) == {WHEELS["124"], WHEELS["130"], "index.html"}
    assert not stub.release(TAG).draft  # published: users install from it now

    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(MATRIX, GROWN))
    assert GROWN in pyproject.read_text()
    git(project, "commit", "-qam", "matrix: CUDA 12.8")
    return project


def backfill(project: Path) -> tuple[int, dict, str]:
    result = run_cli(
        "backfill", str(project), "--to", "gh", "--builder", "local", "--json", env={"WHEELFLOW_GH_TOKEN": TOKEN}
    )
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def uploaded(stub: GitHubStub, since: int) -> list[str]:
    """The asset names uploaded since request ``since`` (the ``?name=`` of each request to the uploads host)."""
    return [parse_qs(urlsplit(s.target).query)["name"][0] for s in stub.seen[since:] if s.host == "uploads"]


def test_backfill_publishes_only_the_missing_cell_as_an_asset_of_the_published_release(
    tmp_path: Path, home: Path, prefect_api
) -> None:
    with GitHubStub(OWNER_REPO) as stub:
        project = released_two_cells(tmp_path / "p", stub, "add-to-published = true\n")
        published = stub.release(TAG)
        before = len(stub.seen)

        code, summary, stderr = backfill(project)
        assert code == 0, stderr[-3000:]
        states = {r["file"]: r["state"] for r in summary["rows"] if r.get("file")}
        assert states == {WHEELS["124"]: "present", WHEELS["128"]: "backfilled", WHEELS["130"]: "present"}, summary
        # Only the missing wheel was uploaded (and the find-links page, which now lists it too).
        assert sorted(uploaded(stub, before)) == ["index.html", WHEELS["128"]]
        # To the release already published: the same release, still published, now with three wheels.
        now = stub.release(TAG)
        assert now.id == published.id and not now.draft
        assert set(stub.asset_names(TAG)) == set(WHEELS.values()) | {"index.html"}
        assert not [s for s in stub.seen[before:] if s.method == "DELETE" and ".whl" in s.target]
        assert [s for s in stub.seen[before:] if s.method == "PATCH"] == []  # nothing unpublished, nothing republished

        # The page users install from lists the new wheel: pip resolves the cu128 variant from it.
        page = run_cli(
            "verify", f"tiny-pkg=={VERSION}", "--index", "gh", "--project", str(project), "--json",
            env={"WHEELFLOW_GH_TOKEN": TOKEN},
        )  # fmt: skip
        assert page.returncode == 0, page.stderr[-3000:]
        served = {f["filename"]: f["status"] for f in json.loads(page.stdout)["files"]}
        assert served == dict.fromkeys(WHEELS.values(), "served")

        # Again: every cell is an asset with our bytes, nothing is uploaded.
        before = len(stub.seen)
        code, again, stderr = backfill(project)
        assert code == 0, stderr[-3000:]
        assert {r["state"] for r in again["rows"]} == {"present"}, again
        assert uploaded(stub, before) == []


@pytest.mark.case(
    "fault",
    "backfill of a github-release target whose release is already published, without add-to-published = true",
    "the missing cell fails before it is built or uploaded, in one line naming add-to-published and the fix; "
    "the release stays as it was",
)
def test_backfill_without_add_to_published_refuses_naming_the_key(tmp_path: Path, home: Path, prefect_api) -> None:
    with GitHubStub(OWNER_REPO) as stub:
        project = released_two_cells(tmp_path / "p", stub)
        before = len(stub.seen)

        code, summary, stderr = backfill(project)
        assert code == 1, stderr[-3000:]  # a failed row, as a cell that does not build
        (row,) = [r for r in summary["rows"] if r["state"] not in ("present",)]
        assert row["state"] == "failed", summary
        assert "add-to-published = true" in row["detail"] and "fix:" in row["detail"], row
        assert "\n" not in row["detail"] and row["detail"].startswith(
            f"release {TAG} of {OWNER_REPO} is already published"
        )
        assert "add-to-published = true" in stderr and "Traceback" not in stderr
        assert "build[" not in stderr  # refused before building: the compile would be spent for nothing
        assert uploaded(stub, before) == []  # nothing sent to the uploads host
        assert not stub.release(TAG).draft
        assert set(stub.asset_names(TAG)) == {WHEELS["124"], WHEELS["130"], "index.html"}
