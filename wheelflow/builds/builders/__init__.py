"""Builders: how one matrix cell becomes one wheel, and how a wheel is smoke-tested.

Both builders have the same interface; the release flow picks one with ``--builder`` (or the
spec), defaulting to Docker when a daemon answers and local otherwise.
"""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from packaging.version import InvalidVersion, Version

from wheelflow.builds.buildenv import BuildSetup
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
    torch: str | None = None  # the torch version the smoke environment loaded, when it had one


@dataclass(frozen=True)
class SmokeSetup:
    """What a cell's smoke environment must match: the build's installer configuration and the cell's
    pins (so it resolves the torch the wheel was built against), and that torch's version."""

    build: BuildSetup = field(default_factory=BuildSetup)
    build_torch: str | None = None  # the torch version in the build environment, when it had one


_TORCH_PROBE = (
    "import importlib.metadata as m, sys\n"
    "try: m.version('torch')\n"
    "except m.PackageNotFoundError: sys.exit(3)\n"
    "import torch\n"
    "print(torch.__version__, torch.version.cuda or 'cpu')"
)


def loaded_torch(python: Path, env: Mapping[str, str]) -> str | None:
    """The torch an environment loads, as ``2.14.1+cu130 (CUDA 13.0)``; None where it has no torch."""
    done = subprocess.run([str(python), "-c", _TORCH_PROBE], capture_output=True, text=True, env=dict(env))
    if done.returncode != 0 or not done.stdout.split():
        return None
    version, cuda = (done.stdout.split() + ["cpu"])[:2]
    return f"{version} (CUDA {cuda})" if cuda != "cpu" else f"{version} (CPU)"


def torch_mismatch(built: str | None, loaded: str | None) -> str | None:
    """Why a smoke test's torch is not the build's (release parts only: 2.14.1 == 2.14.1+cu130), or None."""
    if not built or not loaded:
        return None
    try:
        same = Version(built.split()[0]).release == Version(loaded.split()[0]).release
    except InvalidVersion:
        same = built.split()[0] == loaded.split()[0]
    if same:
        return None
    return (
        f"the smoke test loaded torch {loaded}, the wheel was built against torch {built}; fix: pin torch in the "
        "cell (matrix build-requires, e.g. torch=={torch}) so both environments resolve the same one"
    )


class Builder(Protocol):
    kind: str

    def preflight(self, cell: Cell) -> None:
        """Raise CellUnbuildable or InfrastructureError before anything is built."""

    def identity(self, cell: Cell) -> str:
        """What the build environment is (image id, interpreter): part of the cell's cache key."""

    def build(
        self,
        cell: Cell,
        source: Path,
        out: Path,
        env: Mapping[str, str],
        log: Log,
        labels: Mapping[str, str],
        setup: BuildSetup | None = None,
    ) -> None:
        """Build the cell's wheel into ``out`` in the environment ``setup`` describes; raise BuildError on a
        failed build. What the build ran with (its torch, compiler cache hits) goes to ``out``'s build info."""

    def repair(
        self, cell: Cell, wheel: Path, dest_dir: Path, options: RepairOptions, log: Log, labels: Mapping[str, str]
    ) -> RepairedWheel:
        """Repair the built ``wheel`` into ``dest_dir`` (wheelflow.builds.repair.repair_wheel, run where the cell built)."""

    def smoke(
        self,
        cell: Cell,
        wheel: Path,
        smoke: str | None,
        log: Log,
        labels: Mapping[str, str],
        setup: SmokeSetup | None = None,
    ) -> SmokeResult:
        """Install ``wheel`` in a fresh environment (``setup``: the build's installer configuration and
        pins) and run the smoke command there; the result names the torch it loaded."""


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


_COMPILE_UNIT = re.compile(r"(?:^|\s)(?:-c\s+)?(\S+\.(?:cu|cpp|cxx|cc|c|cuh))(?:\s|$)")


class Progress:
    """A long build is never silent: every ``every`` seconds, the elapsed time and the compile unit
    last seen in its output (``cell X: building for 600 s, compiling csrc/attn.cu``), also while the
    build prints nothing. Feed it each output line; use as a context manager around the build."""

    def __init__(self, what: str, log: Log, every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._what, self._log, self._every, self._clock = what, log, every, clock
        self._started = clock()
        self._unit: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"progress {what}", daemon=True)

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def line(self, text: str) -> None:
        if ("-c " in text or text.lstrip().startswith("[")) and (found := _COMPILE_UNIT.findall(text)):
            unit = found[-1]
            # the build's private copy of the source: name the file as the project has it
            self._unit = unit.split("wheelflow-src-", 1)[1].split("/", 1)[-1] if "wheelflow-src-" in unit else unit

    def report(self) -> str:
        unit = f", compiling {self._unit}" if self._unit else ""
        return f"{self._what}: building for {self.elapsed:.0f} s{unit}"

    def _beat(self) -> None:
        while not self._stop.wait(self._every):
            self._log(self.report())

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def ended_by(code: int, elapsed: float) -> str:
    """How a build process ended, for its one-line error: a signal is named, not read as an exit code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "a signal"
        return f"killed by signal {-code} ({name}) after {elapsed:.0f} s"
    return f"exit {code}"


def copy_source(source: Path, files: list[str]) -> Path:
    """A private copy of ``files`` (relative to ``source``) for one build (builds write build/ and *.egg-info/)."""
    root = Path(tempfile.mkdtemp(prefix="wheelflow-src-"))
    copy_tree(source, files, root)
    return root
