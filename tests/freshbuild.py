"""One cell of an example built as a release builds it (the commit's SOURCE_DATE_EPOCH, the spec's
repair step, the local builder), from a fresh ``$WHEELFLOW_HOME`` and a copy of the project at a path
of its own: what two such builds differ in is what a second machine's release would differ in.

    wheel, seconds = build_cell_in_fresh_home("torch-ext", root, "a")

Used by tests/e2e/test_reproducible_builds.py and bench/bench_reproducible.py. torch-ext resolves its
torch through pip's configuration (``PIP_FIND_LINKS`` pointing at tests/torchcache.py's wheels).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import zipfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EPOCH = 1767225600  # 2026-01-01: what a release takes from the commit's time


def build_cell_in_fresh_home(
    example: str,
    root: Path,
    label: str,
    *,
    cell_name: str | None = None,
    extra_env: dict[str, str] | None = None,
    log: list[str] | None = None,
) -> tuple[Path, float]:
    """The wheel of ``example``'s cell ``cell_name`` (default: the last), built under ``root`` in the
    home ``home-LABEL`` from a copy whose path has a length of its own; ``extra_env`` adds to the
    cell's env (e.g. MAX_JOBS). Sets ``WHEELFLOW_HOME`` in this process, as a release's worker has it."""
    from wheelflow.builds.builders.local import LocalBuilder
    from wheelflow.builds.cells import build_cell_wheel
    from wheelflow.config.spec import load_spec
    from wheelflow.tasks.matrix import CellJob

    home = root / f"home-{label}"
    os.environ["WHEELFLOW_HOME"] = str(home)
    # another path for each copy (another length too): what the compilers record must not depend on it
    project = root / f"checkout-{label}-{'x' * (3 if label == 'a' else 11)}" / example
    shutil.copytree(REPO / "examples" / example, project, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    spec = load_spec(project)
    cell = [c for c in spec.matrix.cells if cell_name in (None, c.name)][-1]
    cell = replace(cell, env={**cell.env, **(extra_env or {})})
    job = CellJob(
        str(project),
        "fresh-home",
        spec.name,
        "0.1.0",
        dict(spec.build_env),
        str(home),
        "fresh-home",
        EPOCH,
        repair=spec.repair,
        build_requires=spec.build_requires,
        build_isolation=spec.build_isolation,
    )
    lines = log if log is not None else []
    started = time.perf_counter()
    built = build_cell_wheel(
        LocalBuilder(),
        cell,
        project=project,
        source_digest="fresh-home",
        name=spec.name,
        version="0.1.0",
        build_env=job.build_env,
        home=home,
        log=lines.append,
        labels={},
        source_date_epoch=EPOCH,
        repair=spec.repair,
        setup=job.setup(cell),
    )
    return built.wheel.path, time.perf_counter() - started


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def differing_members(a: Path, b: Path) -> list[str]:
    """The members of two wheels whose bytes differ, or that only one of them has."""
    with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
        names = sorted(set(za.namelist()) | set(zb.namelist()))
        return [n for n in names if n not in za.namelist() or n not in zb.namelist() or za.read(n) != zb.read(n)]
