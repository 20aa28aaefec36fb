"""Check the layer contracts (import-linter, ``[tool.importlinter]`` in pyproject.toml) on the package as
it installs: ``flows/``, ``tasks/`` and ``deployments/`` live at the top of the repository but install as
``wheelflow.flows``, ``wheelflow.tasks`` and ``wheelflow.deployments``, where import-linter alone cannot
see them. The tree is staged in a temporary folder in its installed shape, and nothing is written into
the source tree.

    python tools/lint_layers.py            # exit 0 when every contract is kept
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent


def stage(repo: Path, dest: Path) -> Path:
    """Copy the package into ``dest`` as it installs (pyproject's package-dir mapping); returns ``dest``."""
    config = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(repo / "wheelflow", dest / "wheelflow", ignore=ignore)
    for package, folder in config["tool"]["setuptools"]["package-dir"].items():
        shutil.copytree(repo / folder, dest.joinpath(*package.split(".")), ignore=ignore)
    shutil.copy(repo / "pyproject.toml", dest / "pyproject.toml")
    return dest


def lint(staged: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports over a staged tree (see :func:`stage`)."""
    env = {**os.environ, "PYTHONPATH": str(staged)}
    command = [
        sys.executable,
        "-c",
        "from importlinter.cli import lint_imports_command; lint_imports_command()",
        str(staged / "pyproject.toml"),
        "--no-cache",
    ]
    return subprocess.run(command, cwd=staged, env=env, capture_output=True, text=True, check=False)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="wheelflow-layers-") as tmp:
        result = lint(stage(REPO, Path(tmp)))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
