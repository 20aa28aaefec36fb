"""``wheelflow monitor --index TARGET --spec SPEC``: a target of the spec, of any kind, read through its
kind's reader, as the sync monitor flow reads it. The seed's incident from the command line: wheels as
assets of GitHub releases (the stand-in of tests/githubstub.py), one release without its wheels."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli
from githubstub import TOKEN, GitHubStub
from test_github_release_target import GUESSED, MATRIX, NAME, OWNER_REPO, github_target, token_kept_to_github
from test_monitor import make_tagged_repo


def test_monitor_reads_a_github_release_target_of_the_spec(tmp_path: Path, home: Path) -> None:
    repo = make_tagged_repo(
        tmp_path / "repo", {"v1.0.0": ("2024-01-01T00:00:00Z", True), "v1.1.0": ("2024-02-01T00:00:00Z", True)}
    )
    with GitHubStub(OWNER_REPO) as stub:
        complete = stub.add_release("v1.0.0", draft=False)
        for cuda in ("124", "130"):  # every cell of the matrix
            stub.add_asset(complete, f"tiny_pkg-1.0.0+cu{cuda}-py3-none-any.whl", b"wheel bytes " + cuda.encode())
        partial = stub.add_release("v1.1.0", draft=False)
        stub.add_asset(partial, "tiny_pkg-1.1.0+cu124-py3-none-any.whl", b"wheel bytes")  # cu130 never came
        spec = tmp_path / "tiny-pkg.toml"
        spec.write_text(
            'name = "tiny-pkg"\nartifacts = ["wheel"]\n[version]\ntag = "v{version}"\nfile = "src/tiny_pkg/__init__.py"\n'
            + (MATRIX + github_target(stub, GUESSED)).replace("[tool.wheelflow.", "[")
        )
        result = run_cli(
            "monitor", "--repo", str(repo), "--project", NAME, "--index", "gh", "--spec", str(spec), "--json",
            env={"WHEELFLOW_GH_TOKEN": TOKEN},
        )  # fmt: skip
        assert result.returncode == 1, result.stderr[-3000:]  # a version missing files beyond the grace period
        records = {r["version"]: r for r in json.loads(result.stdout)}
        assert {r["index"] for r in records.values()} == {"gh"}
        assert records["1.0.0"]["status"] == "ok", records["1.0.0"]
        assert records["1.1.0"]["status"] != "ok" and records["1.1.0"]["overdue"], records["1.1.0"]
        assert records["1.1.0"]["missing_cells"] == ["py3.11-cu13.0"], records["1.1.0"]
        assert "1.1.0@gh" in result.stderr and "Traceback" not in result.stderr
        token_kept_to_github(stub.seen)
