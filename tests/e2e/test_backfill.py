"""Backfill against real parts: a git history of three releases on pypiserver (behind a proxy that
counts uploads), the local builder, twine, pip, the Prefect server; and the monitor that sees the gap."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import git, run_cli
from faultproxy import FaultProxy

from wheelflow.config.matrix import parse_matrix
from wheelflow.config.spec import parse_target
from wheelflow.core.distributions import sha256_of
from wheelflow.core.errors import SpecError
from wheelflow.index.simple_api import ServedFile
from wheelflow.ops.backfill import find_gap, select_cells, serves_cell

VERSIONS = ("1.0.0", "1.1.0", "1.2.0")


def write_project(root: Path, index_url: str, values: list[str], version: str) -> Path:
    """A tiny project whose wheel varies per cell by local version (+c1, +c2, ...). Its setup.py
    refuses cell c4 at every commit: a new axis value that old sources cannot build."""
    (root / "src" / "cellpkg").mkdir(parents=True, exist_ok=True)
    (root / "src" / "cellpkg" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (root / "README.md").write_text("# cellpkg\n\nA matrix package for wheelflow's backfill tests.\n")
    (root / "setup.py").write_text(
        textwrap.dedent("""
        import os, re
        from setuptools import setup

        local = os.environ.get("WHEELFLOW_LOCAL_VERSION")
        if local == "c4":
            raise SystemExit("error: cell c4 needs the 2.0 plugin API, which this commit predates")
        init = open("src/cellpkg/__init__.py").read()
        version = os.environ.get("WHEELFLOW_RELEASE_VERSION") or re.search(r'"(.+)"', init).group(1)
        setup(version=version + (f"+{local}" if local else ""))
        """)
    )
    axis = ", ".join(f'"{v}"' for v in values)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "cellpkg"
        dynamic = ["version"]
        readme = "README.md"
        description = "backfill test package"

        [tool.setuptools.packages.find]
        where = ["src"]

        [tool.wheelflow]
        artifacts = ["wheel"]
        builder = "local"
        smoke = "python -c 'import cellpkg'"

        [tool.wheelflow.version]
        tag = "v{{version}}"
        file = "src/cellpkg/__init__.py"

        [tool.wheelflow.matrix]
        axes = {{ n = [{axis}] }}
        local-version = "c{{n}}"
        concurrency = 3

        [tool.wheelflow.targets.staging]
        index = "{index_url}"
        verify-timeout = 10
        """)
    )
    return root


def posts(proxy: FaultProxy) -> list[tuple[str, str, int]]:
    return [s for s in proxy.seen if s[0] == "POST"]


def monitor(project: Path, index_url: str) -> list[dict]:
    result = run_cli(
        "monitor",
        "--repo",
        str(project),
        "--project",
        "cellpkg",
        "--index",
        index_url,
        "--spec",
        str(project / "pyproject.toml"),
        "--json",
    )
    assert result.returncode == 0, result.stderr[-2000:]  # tagged just now: within the grace period
    return json.loads(result.stdout)


def backfill_json(project: Path, *args: str) -> tuple[int, dict, str]:
    result = run_cli("backfill", str(project), "--json", *args)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def test_backfill_builds_only_the_missing_cells_and_a_second_run_proves_them(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    from flows.release import release

    with FaultProxy(index.url) as proxy:
        simple = proxy.url + "simple/"
        project = tmp_path / "cellpkg"
        subprocess.run(["git", "init", "-q", str(project)], check=True)
        for version in VERSIONS:  # three releases of a two-cell matrix
            write_project(project, simple, ["1", "2"], version)
            git(project, "add", "-A")
            git(project, "commit", "-qm", f"release {version}")
            git(project, "tag", f"v{version}")
            state = release(project=str(project), return_state=True)
            assert state.is_completed(), state.message
        assert len(posts(proxy)) == 6

        write_project(project, simple, ["1", "2", "3"], "1.2.0")  # the matrix grows a third value
        git(project, "commit", "-qam", "matrix: n=3")
        before = monitor(project, index.simple_url)
        assert [(r["version"], r["status"], r["missing_cells"]) for r in before] == [
            (v, "incomplete", ["n3"]) for v in VERSIONS
        ]

        code, summary, stderr = backfill_json(project)
        assert code == 0, stderr[-3000:]
        backfilled = [r for r in summary["rows"] if r["state"] == "backfilled"]
        assert [(r["version"], r["cell"], r["file"]) for r in backfilled] == [
            (v, "n3", f"cellpkg-{v}+c3-py3-none-any.whl") for v in VERSIONS
        ]
        assert len(posts(proxy)) == 6 + 3  # only the three missing wheels were uploaded
        assert sorted(r["cell"] for r in summary["rows"] if r["state"] == "present") == ["n1"] * 3 + ["n2"] * 3
        for row in backfilled:  # the bytes built are the bytes served, under the release's manifest
            manifest = json.loads((home / "manifests" / "cellpkg" / f"{row['version']}.json").read_text())["files"]
            assert manifest[row["file"]] == sha256_of(index.packages / row["file"])

        code, again, stderr = backfill_json(project)
        assert code == 0, stderr[-3000:]
        assert len(posts(proxy)) == 9  # nothing uploaded
        assert [r["state"] for r in again["rows"]] == ["present"] * 9
        assert again["verdict"] == (
            "checked 3 version(s) × 3 cell(s) × 1 target(s): 0 backfilled, 9 already served "
            "(downloaded and hashed), 0 failed"
        )
        assert [(r["version"], r["status"]) for r in monitor(project, index.simple_url)] == [
            (v, "ok") for v in VERSIONS
        ]

        write_project(project, simple, ["1", "2", "3", "4"], "1.2.0")  # a value the old sources cannot build
        git(project, "commit", "-qam", "matrix: n=4")
        code, failed, stderr = backfill_json(project, "--versions", "1.0.0", "--cells", "n=4")
        assert code == 1
        (row,) = failed["rows"]
        assert (row["version"], row["cell"], row["state"]) == ("1.0.0", "n4", "failed")
        assert row["detail"].startswith(
            "build failed on v1.0.0: cell n4: build failed (exit 1): error: cell c4 needs the 2.0 plugin API"
        )
        assert "1.0.0 n4 on staging: build failed on v1.0.0" in stderr
        assert len(posts(proxy)) == 9


def _cells(values: list[str], **extra):
    return parse_matrix({"axes": {"python": ["3.11", "3.12"], "n": values}, "local-version": "c{n}", **extra}).cells


def test_a_cell_is_present_only_with_its_version_label_and_python() -> None:
    cells = _cells(["1"])
    assert serves_cell("cellpkg-1.0+c1-cp311-cp311-linux_x86_64.whl", "1.0", cells[0])
    assert not serves_cell("cellpkg-1.0+c1-cp311-cp311-linux_x86_64.whl", "1.0", cells[1])  # py3.12 cell
    assert serves_cell("cellpkg-1.0+c1-py3-none-any.whl", "1.0", cells[1])
    assert not serves_cell("cellpkg-1.0+c2-py3-none-any.whl", "1.0", cells[0])
    assert not serves_cell("cellpkg-1.0.post1+c1-py3-none-any.whl", "1.0", cells[0])
    assert not serves_cell("cellpkg-1.0+c1.tar.gz", "1.0", cells[0])


def test_a_target_lacks_only_the_cells_routed_to_it() -> None:
    cells = _cells(["1", "2"])
    served = [ServedFile("cellpkg-1.0+c1-cp311-cp311-linux_x86_64.whl", "http://x/a", None)]
    gap = find_gap("1.0", parse_target({"name": "cu1", "index": "local", "local-versions": ["c1"]}), cells, served)
    assert list(gap.present) == ["py3.11-n1"] and [c.name for c in gap.missing] == ["py3.12-n1"]
    assert gap.not_routed == ("py3.11-n2", "py3.12-n2")


@pytest.mark.case(
    "bad input",
    "backfill --cells names an axis or value the matrix lacks",
    "one line naming --cells and the values to use",
)
def test_cells_filters_name_the_axes_and_values_to_use() -> None:
    cells = _cells(["1", "2"])
    assert [c.name for c in select_cells(cells, {"n": "2"})] == ["py3.11-n2", "py3.12-n2"]
    with pytest.raises(SpecError, match=r"^spec error: --cells: unknown axis 'torch'; fix: use one of n, python$"):
        select_cells(cells, {"torch": "2.9"})
    with pytest.raises(SpecError, match=r"^spec error: --cells: no cell has n=3; fix: use one of 1, 2$"):
        select_cells(cells, {"n": "3"})


def test_backfill_and_verify_read_a_static_target_through_its_reader(tmp_path: Path, home: Path, prefect_api) -> None:
    """A static target (the home's store, served on loopback) is read like any target: backfill finds the
    one missing cell in the variant sub-indexes, builds and writes only it; verify proves every file.
    Both used to assume an index and crashed with a TypeError on a static target."""
    from flows.release import release

    static = '[tool.wheelflow.targets.staging]\nkind = "static"\nstore-url = "local"\nverify-timeout = 10\n'

    def write_static_project(values: list[str]) -> Path:
        write_project(project, "unused", values, "1.0.0")
        pyproject = project / "pyproject.toml"
        text = pyproject.read_text()
        pyproject.write_text(text[: text.index("[tool.wheelflow.targets.staging]")] + static)
        return project

    project = tmp_path / "cellpkg"
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    write_static_project(["1", "2"])
    git(project, "add", "-A")
    git(project, "commit", "-qm", "release 1.0.0")
    git(project, "tag", "v1.0.0")
    state = release(project=str(project), return_state=True)
    assert state.is_completed(), state.message

    write_static_project(["1", "2", "3"])  # the matrix grows a third value
    git(project, "commit", "-qam", "matrix: n=3")
    code, summary, stderr = backfill_json(project)
    assert code == 0, stderr[-3000:]
    assert [(r["cell"], r["state"]) for r in summary["rows"]] == [
        ("n1", "present"),
        ("n2", "present"),
        ("n3", "backfilled"),
    ]
    store = home / "static"
    assert sorted(p.name for p in store.rglob("cellpkg-*.whl")) == [
        f"cellpkg-1.0.0+c{n}-py3-none-any.whl" for n in (1, 2, 3)
    ]

    result = run_cli(
        "verify", "cellpkg==1.0.0", "--index", "staging", "--spec", str(project / "pyproject.toml"), "--no-install",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    verified = json.loads(result.stdout)
    assert verified["index"] == "staging"
    assert sorted((f["filename"], f["status"]) for f in verified["files"]) == [
        (f"cellpkg-1.0.0+c{n}-py3-none-any.whl", "served")
        for n in (1, 2, 3)  # downloaded, hashed as listed
    ]
