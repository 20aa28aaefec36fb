"""Which wheelflow runs a flow run, and wheelflow's source tree in its installed shape.

A worker's pull step (deployments/pull.py) clones wheelflow at the ref in a Prefect Variable and makes
that clone the wheelflow the run imports, all of it. Its commit and ref travel in the environment of the
process that runs the flow, so the report and the run's page can say which code ran.

A checkout is not importable as it is: pyproject.toml's ``[tool.setuptools.package-dir]`` maps
``wheelflow.flows`` to the top-level ``flows/`` folder (and tasks/, deployments/ likewise).
``stage_importable`` builds that shape from symbolic links, as ``pip install`` would lay it out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the 3.10 floor
    import tomli as tomllib

PACKAGE = "wheelflow"
CODE_COMMIT_ENV = "WHEELFLOW_CODE_COMMIT"  # set by the pull step: the commit the run's code is at
CODE_REF_ENV = "WHEELFLOW_CODE_REF"  # ... and the tag or branch it was cloned at
STAGED = ".wheelflow-import"  # the folder of a clone that holds its importable shape


def running_wheelflow(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The wheelflow this process runs: its version, and the commit and ref when a pull step fetched it."""
    from wheelflow import __version__

    env = os.environ if environ is None else environ
    commit = env.get(CODE_COMMIT_ENV, "")
    return {
        "version": __version__,
        "commit": commit,
        "ref": env.get(CODE_REF_ENV, "") if commit else "",
        "origin": "pulled" if commit else "installed",
    }


def describe_code(code: Mapping[str, str]) -> str:
    """One line: ``wheelflow 0.1.0 at commit 1a2b3c4d5e6f (ref main, fetched by the worker)``."""
    if code.get("commit"):
        return f"wheelflow {code['version']} at commit {code['commit'][:12]} (ref {code.get('ref') or '?'}, fetched by the worker)"
    return f"wheelflow {code.get('version', '?')} (the copy installed where it ran)"


def package_dirs(checkout: Path) -> dict[str, Path]:
    """Where each of wheelflow's packages lives in a checkout: ``wheelflow`` itself, and each subpackage
    pyproject.toml maps elsewhere (``wheelflow.flows`` → ``flows/``). Empty when the checkout holds no
    wheelflow package."""
    if not (checkout / PACKAGE / "__init__.py").is_file():
        return {}
    try:
        setuptools = tomllib.loads((checkout / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
        mapped = dict(setuptools.get("package-dir") or {})
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        mapped = {}
    dirs = {PACKAGE: checkout / PACKAGE}
    for name, folder in mapped.items():
        if name.startswith(PACKAGE + ".") and "." not in name[len(PACKAGE) + 1 :]:
            dirs[name] = checkout / folder
    return dirs


def stage_importable(checkout: Path) -> Path:
    """A folder under ``checkout`` to put first on ``sys.path`` so that ``import wheelflow`` (every
    subpackage included) imports the checkout: its ``wheelflow/`` holds links to the checkout's
    package folder's entries and to each mapped subpackage's folder. Rebuilt on each call."""
    dirs = package_dirs(checkout)
    root = checkout / STAGED
    package = root / PACKAGE
    if root.exists():
        shutil.rmtree(root)  # unlinks the links, never follows them into the checkout
    package.mkdir(parents=True)
    for entry in dirs[PACKAGE].iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry.resolve())
    for name, folder in dirs.items():
        if name != PACKAGE:
            link = package / name.split(".", 1)[1]
            if link.is_symlink():
                link.unlink()
            link.symlink_to(folder.resolve(), target_is_directory=True)
    return root


def source_digest(package_folders: Mapping[str, Path]) -> str:
    """sha256 over the Python files of wheelflow's packages (path within the package and content), to
    tell whether two copies are the same code whatever their version string says."""
    digest = hashlib.sha256()
    files: list[tuple[str, Path]] = []
    for name, folder in package_folders.items():
        prefix = name.replace(".", "/")
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder)
            if name == PACKAGE and relative.parts[0] in {n.split(".", 1)[1] for n in package_folders if n != PACKAGE}:
                continue  # a mapped subpackage: counted from its own folder
            files.append((f"{prefix}/{relative.as_posix()}", path))
    for relative, path in sorted(files):
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
