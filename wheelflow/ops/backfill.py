"""Backfill: which cells of the current matrix each released version lacks on each target, and the
clean source of an old release to build them from.

A released version is a git tag matching the spec's ``version.tag``. A cell is *present* on a target
when the target serves a wheel carrying the cell's version (``1.0.0+sm90`` for a cell whose
local-version is ``sm90``) and, when the matrix has a ``python`` axis, a tag that Python can
install (``cp311``, ``py311``, or a pure ``py3``). Cells are only ever looked for where the target's
routing would send them (a target taking no variant wheels lacks no variant cell).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.tags import parse_tag
from packaging.utils import parse_wheel_filename
from packaging.version import InvalidVersion, Version

from wheelflow.builds.cells import expected_version
from wheelflow.config.matrix import Cell
from wheelflow.config.routing import routes_label
from wheelflow.config.spec import Target
from wheelflow.core.errors import SourceExportError, SpecError
from wheelflow.index.simple_api import ServedFile
from wheelflow.source.gittags import ReleaseTag, release_tags


@dataclass(frozen=True)
class Gap:
    """One version on one target: the cells it serves (with the served file) and those it lacks."""

    version: str
    target: str
    present: Mapping[str, ServedFile]  # cell name -> the served wheel
    missing: tuple[Cell, ...]
    not_routed: tuple[str, ...]  # cells this target never receives
    mismatched: Mapping[str, str] = field(default_factory=dict)  # cell name -> served bytes differ (why)
    refused: str | None = None  # why the target takes no new file for this version: its missing cells are not built


def released_versions(
    project: Path, tag_pattern: str | None, versions: Sequence[str] = (), since: str | None = None
) -> list[ReleaseTag]:
    """The project's release tags (oldest first), narrowed to ``versions`` or to those >= ``since``."""
    if tag_pattern is None:
        raise SpecError(
            "version.tag",
            "the spec has no tag pattern, so no version counts as released",
            'set version.tag, e.g. "v{version}"',
        )
    tags = release_tags(repository_root(project), (tag_pattern,))
    if versions:
        wanted = {_version(v, "--versions") for v in versions}
        unknown = sorted(str(v) for v in wanted - {Version(t.version) for t in tags})
        if unknown:
            raise SpecError(
                "--versions",
                f"{', '.join(unknown)} not released (no tag {tag_pattern})",
                f"use released versions: {', '.join(t.version for t in tags) or 'none yet'}",
            )
        tags = [t for t in tags if Version(t.version) in wanted]
    if since is not None:
        floor = _version(since, "--since")
        tags = [t for t in tags if Version(t.version) >= floor]
    return tags


def _version(text: str, option: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise SpecError(option, f"{text!r} is not a version", "write e.g. 1.2.0") from None


def select_cells(cells: Sequence[Cell], filters: Mapping[str, str]) -> list[Cell]:
    """The cells whose values match every AXIS=VALUE of ``filters`` (all cells without filters)."""
    axes = {axis for cell in cells for axis in cell.values}
    for axis, value in filters.items():
        if axis not in axes:
            raise SpecError("--cells", f"unknown axis {axis!r}", f"use one of {', '.join(sorted(axes))}")
        if not any(cell.values[axis] == value for cell in cells):
            values = sorted({cell.values[axis] for cell in cells})
            raise SpecError("--cells", f"no cell has {axis}={value}", f"use one of {', '.join(values)}")
    return [c for c in cells if all(c.values.get(a) == v for a, v in filters.items())]


def serves_cell(filename: str, version: str, cell: Cell) -> bool:
    """Whether the served file ``filename`` is the wheel of ``cell`` for ``version``."""
    if not filename.endswith(".whl"):
        return False
    try:
        _name, got, _build, tags = parse_wheel_filename(filename)
    except ValueError:
        return False
    if got != Version(expected_version(version, cell)):
        return False
    python = cell.values.get("python")
    if python is None:
        return True
    nodot = python.replace(".", "")
    return any(
        t.interpreter in (f"cp{nodot}", f"py{nodot}", "py3", f"pp{nodot}") for tag in tags for t in parse_tag(str(tag))
    )


def find_gap(version: str, target: Target, cells: Sequence[Cell], served: Sequence[ServedFile]) -> Gap:
    present: dict[str, ServedFile] = {}
    missing: list[Cell] = []
    not_routed: list[str] = []
    for cell in cells:
        if not routes_label("wheel", cell.local_version, target):
            not_routed.append(cell.name)
            continue
        found = next((s for s in served if serves_cell(s.filename, version, cell)), None)
        if found is None:
            missing.append(cell)
        else:
            present[cell.name] = found
    return Gap(version, target.name, present, tuple(missing), tuple(not_routed))


def repository_root(project: Path) -> Path:
    return Path(_git(project, "rev-parse", "--show-toplevel").strip())


def _git(project: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SourceExportError(
            f"{project} is not a git repository with release tags ({done.stderr.strip()[-200:]}); "
            "fix: backfill a project under git, whose releases are tagged"
        )
    return done.stdout
