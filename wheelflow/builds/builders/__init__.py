"""Builders: how one matrix cell becomes one wheel, and how a wheel is smoke-tested.

Both builders have the same interface; the release flow picks one with ``--builder`` (or the
spec), defaulting to Docker when a daemon answers and local otherwise.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from wheelflow.builds.repair import RepairedWheel
from wheelflow.config.matrix import Cell
from wheelflow.config.repairoptions import RepairOptions
from wheelflow.core.errors import CellUnbuildable, InfrastructureError  # noqa: F401 (re-exported: builders raise them)
from wheelflow.source.export import copy_tree

Log = Callable[[str], None]
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class SmokeResult:
    state: str  # passed, failed, skipped
    message: str  # one line


class Builder(Protocol):
    kind: str

    def preflight(self, cell: Cell) -> None:
        """Raise CellUnbuildable or InfrastructureError before anything is built."""

    def identity(self, cell: Cell) -> str:
        """What the build environment is (image id, interpreter): part of the cell's cache key."""

    def build(
        self, cell: Cell, source: Path, out: Path, env: Mapping[str, str], log: Log, labels: Mapping[str, str]
    ) -> None:
        """Build the cell's wheel into ``out``; raise BuildError on a failed build."""

    def repair(
        self, cell: Cell, wheel: Path, dest_dir: Path, options: RepairOptions, log: Log, labels: Mapping[str, str]
    ) -> RepairedWheel:
        """Repair the built ``wheel`` into ``dest_dir`` (wheelflow.builds.repair.repair_wheel, run where the cell built)."""

    def smoke(self, cell: Cell, wheel: Path, smoke: str | None, log: Log, labels: Mapping[str, str]) -> SmokeResult:
        """Install ``wheel`` in a fresh environment and run the smoke command there."""


class BatchedLog:
    """Build output shipped as one log record per ``lines`` lines (or after ``seconds``), not one per
    line: each record is a row the Prefect API stores and its UI renders, and a compile prints
    thousands. Use as a context manager: leaving it sends what is left."""

    def __init__(
        self, log: Log, lines: int = 50, seconds: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log, self._lines, self._seconds, self._clock = log, lines, seconds, clock
        self._buffer: list[str] = []
        self._since = clock()

    def __call__(self, line: str) -> None:
        if not self._buffer:
            self._since = self._clock()
        self._buffer.append(line)
        if len(self._buffer) >= self._lines or self._clock() - self._since >= self._seconds:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._log("\n".join(self._buffer))
            self._buffer = []

    def __enter__(self) -> BatchedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def copy_source(source: Path, files: list[str]) -> Path:
    """A private copy of ``files`` (relative to ``source``) for one build (builds write build/ and *.egg-info/)."""
    root = Path(tempfile.mkdtemp(prefix="wheelflow-src-"))
    copy_tree(source, files, root)
    return root
