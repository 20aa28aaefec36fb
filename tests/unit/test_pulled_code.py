"""A worker's run imports the wheelflow its pull step fetched, all of it: a checkout laid out in its
installed shape (pyproject.toml maps flows/, tasks/ and deployments/ into the package), and a digest
that tells a worker's installed copy from the pulled one. The whole path with a real worker:
tests/e2e/test_team_path.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from wheelflow.core.codeversion import describe_code, package_dirs, running_wheelflow, source_digest, stage_importable
from wheelflow.deployments import PULL_STEPS

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = """[tool.setuptools.package-dir]
"wheelflow.flows" = "flows"
"wheelflow.tasks" = "tasks"
"""


def _checkout(root: Path, marker: str) -> Path:
    """A wheelflow checkout in the repository's layout: the package, and flows/ and tasks/ beside it."""
    for relative, text in {
        "pyproject.toml": PYPROJECT,
        "wheelflow/__init__.py": '__version__ = "9.9"\n',
        "wheelflow/core/__init__.py": "",
        "wheelflow/core/marker.py": f"MARKER = {marker!r}\n",
        "flows/__init__.py": "",
        "flows/release.py": "from wheelflow.core.marker import MARKER\n",
        "tasks/__init__.py": "",
    }.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def test_a_checkout_staged_in_its_installed_shape_imports_every_subpackage_from_the_checkout(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path / "clone", "pulled")
    staged = stage_importable(checkout)
    assert stage_importable(checkout) == staged  # again over the last one: rebuilt, not refused
    assert (checkout / "flows" / "release.py").is_file()  # the old links were removed, not followed
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import wheelflow, wheelflow.flows.release as r, "
            "wheelflow.tasks; print(wheelflow.__version__, r.MARKER)",
            str(staged),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert probe.stdout.split() == ["9.9", "pulled"], probe.stderr[-2000:]


def test_the_digest_is_the_same_for_a_checkout_and_its_installed_shape_and_changes_with_any_file(
    tmp_path: Path,
) -> None:
    checkout = _checkout(tmp_path / "clone", "one")
    installed = tmp_path / "site" / "wheelflow"
    shutil.copytree(checkout / "wheelflow", installed)
    for folder in ("flows", "tasks"):
        shutil.copytree(checkout / folder, installed / folder)
    assert source_digest(package_dirs(checkout)) == source_digest({"wheelflow": installed})

    (installed / "flows" / "release.py").write_text("raise RuntimeError('other code')\n")
    assert source_digest(package_dirs(checkout)) != source_digest({"wheelflow": installed})


def test_a_folder_without_the_package_is_no_wheelflow_checkout(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("v2\n")
    assert package_dirs(tmp_path) == {}


def test_the_code_that_runs_is_named_with_its_commit_when_a_worker_pulled_it() -> None:
    pulled = running_wheelflow({"WHEELFLOW_CODE_COMMIT": "1a2b3c4d5e6f7a8b", "WHEELFLOW_CODE_REF": "main"})
    assert pulled["origin"] == "pulled" and pulled["commit"] == "1a2b3c4d5e6f7a8b"
    assert describe_code(pulled).endswith("at commit 1a2b3c4d5e6f (ref main, fetched by the worker)")
    assert running_wheelflow({})["origin"] == "installed"
    assert "installed" in describe_code(running_wheelflow({}))


def test_setup_registers_the_pull_step_prefect_yaml_declares() -> None:
    assert yaml.safe_load((REPO / "prefect.yaml").read_text())["pull"] == PULL_STEPS
