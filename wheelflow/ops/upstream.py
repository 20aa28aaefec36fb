"""Upstream axis values the matrix lacks: the "torch 2.X is out and we have no wheels" moment.

For an axis whose values are versions of a package (``torch`` -> the ``torch`` distribution), the
configured index's listing of that package gives every version it serves. A final release newer
than the matrix's newest value of the axis, and not covered by any value (an axis value ``2.9``
covers ``2.9.1``), is *lacking*. Older unpinned versions are a choice the matrix already made, and
pre-releases are not announced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import httpx
from packaging.version import InvalidVersion, Version

from wheelflow.config.matrix import Matrix
from wheelflow.core.distributions import parse_filename
from wheelflow.core.errors import SpecError
from wheelflow.index.simple_api import list_project_files


@dataclass(frozen=True)
class AxisGap:
    axis: str
    package: str
    newest_in_matrix: str
    lacking: tuple[str, ...]  # served upstream, newer, covered by no axis value (oldest first)

    def row(self) -> dict[str, str]:
        return {
            "axis": self.axis,
            "package": self.package,
            "newest in matrix": self.newest_in_matrix,
            "lacking": ", ".join(self.lacking) or "none",
        }


def served_versions(client: httpx.Client, simple_url: str, package: str) -> list[Version]:
    """Every version the index serves files of for ``package`` (one listing request), sorted."""
    found = {
        parsed[1] for f in list_project_files(client, simple_url, package) if (parsed := parse_filename(f.filename))
    }
    return sorted({Version(v.public) for v in found})


def lacking_values(axis_values: Sequence[str], available: Iterable[Version]) -> list[str]:
    """Final releases in ``available`` newer than every axis value and covered by none."""
    values = [Version(v) for v in axis_values]
    newest = max(values)

    def covered(version: Version) -> bool:
        return any(version.release[: len(v.release)] == v.release for v in values)

    return [
        str(v)
        for v in sorted(set(available))
        if not (v.is_prerelease or v.is_devrelease) and v > newest and not covered(v)
    ]


def axis_gaps(matrix: Matrix, packages: Mapping[str, str], client: httpx.Client, simple_url: str) -> list[AxisGap]:
    """One gap per ``axis -> package`` of ``packages``; an axis the matrix lacks, or whose values are not
    versions, is refused naming it."""
    gaps = []
    for axis, package in packages.items():
        if axis not in matrix.axes:
            raise SpecError("packages", f"axis {axis!r} is not in the matrix", f"use one of {', '.join(matrix.axes)}")
        try:
            newest = str(max(Version(v) for v in matrix.axes[axis]))
        except InvalidVersion:
            raise SpecError(
                "packages",
                f"axis {axis!r} has values that are not versions",
                "watch only axes whose values are versions of a package (torch, cuda)",
            ) from None
        available = served_versions(client, simple_url, package)
        gaps.append(AxisGap(axis, package, newest, tuple(lacking_values(matrix.axes[axis], available))))
    return gaps
