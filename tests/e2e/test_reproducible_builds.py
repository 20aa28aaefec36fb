"""Compiled wheels are reproducible: one commit released from two fresh homes, checked out at two
different paths, gives byte-identical files (nvcc and gcc compile, auditwheel repairs).

What made them differ, and what still can, is in docs/reproducible-builds.md."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, git, run_cli

NVCC = Path("/usr/local/cuda/bin/nvcc")
COMMIT_DATE = "2026-03-01T12:00:00+00:00"


def checkout(where: Path) -> Path:
    """examples/hello-cuda committed at a fixed date and author: the same commit id at any path."""
    project = where / "hello-cuda"
    shutil.copytree(REPO / "examples" / "hello-cuda", project, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "hello-cuda 0.1.0", date=COMMIT_DATE)
    return project


def release_from_fresh_home(root: Path) -> dict:
    project = checkout(root / "checkout")
    done = run_cli("release", str(project), "--builder", "local", "--json", env={"WHEELFLOW_HOME": str(root / "home")})
    assert done.returncode == 0, done.stderr[-3000:]
    return {**json.loads(done.stdout), "commit": git(project, "rev-parse", "HEAD").strip()}


@pytest.mark.skipif(not NVCC.exists(), reason="needs the CUDA toolkit's nvcc at /usr/local/cuda (no GPU)")
def test_two_fresh_homes_build_hello_cuda_to_the_same_sha256(tmp_path: Path, prefect_api) -> None:
    first = release_from_fresh_home(tmp_path / "a")
    second = release_from_fresh_home(tmp_path / "in" / "another" / "place")
    assert first["commit"] == second["commit"]
    # compiled: both cells' wheels carry nvcc's device code, and the repair step gave them manylinux tags
    assert [c["state"] for c in first["cells"]] == ["built", "built"]
    assert all("manylinux" in c["wheel"] and c["unrepaired_sha256"] for c in first["cells"])
    with zipfile.ZipFile(tmp_path / "a" / "home" / "index" / "packages" / first["cells"][-1]["wheel"]) as zf:
        (ext,) = [n for n in zf.namelist() if n.endswith(".so")]
        assert b"sm_90" in zf.read(ext)

    def hashes(report: dict) -> list[tuple[str, str, str]]:
        return [(c["wheel"], c["unrepaired_sha256"], c["sha256"]) for c in report["cells"]]

    assert hashes(first) == hashes(second)
    assert {(f["filename"], f["sha256"]) for f in first["files"]} == {
        (f["filename"], f["sha256"]) for f in second["files"]
    }


@pytest.mark.skipif(not NVCC.exists(), reason="needs the CUDA toolkit's nvcc at /usr/local/cuda (no GPU)")
@pytest.mark.skipif(shutil.which("ninja") is None, reason="torch's BuildExtension needs ninja (.ci/run installs it)")
def test_two_fresh_homes_build_torch_ext_to_the_same_sha256(tmp_path: Path, monkeypatch) -> None:
    """The torch extension's cell (nvcc, torch's headers from the prepared build environment that
    each home keeps, auditwheel), built as a release builds it, twice: torch from the test wheel
    cache. Its headers put their own path into the .so; under two homes that path differs. A whole
    release from each home (sdist, upload, install check) doubles the time and adds nothing here:
    hello-cuda's test above covers the release's other files."""
    from freshbuild import build_cell_in_fresh_home, differing_members, sha256
    from torchcache import torch_wheels

    monkeypatch.setenv("PIP_FIND_LINKS", str(torch_wheels()))  # as a machine's pip.conf would add it
    monkeypatch.setenv("WHEELFLOW_HOME", str(tmp_path / "home-a"))  # restored after: the helper sets each home
    wheels = [build_cell_in_fresh_home("torch-ext", tmp_path, label)[0] for label in ("a", "b")]
    assert [w.name for w in wheels] == [wheels[0].name] * 2 and "manylinux" in wheels[0].name
    assert [sha256(w) for w in wheels] == [sha256(wheels[0])] * 2, differing_members(*wheels)
