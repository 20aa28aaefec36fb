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
from collections.abc import Callable, Iterable, Mapping, Sequence
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
_SOURCE = re.compile(r"\.(?:cu|cpp|cxx|cc|c|C|c\+\+)$")
_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")
#: programs whose source argument is a compile unit: the drivers, and the compilers proper they run
COMPILERS = frozenset(
    {"nvcc", "cicc", "cudafe++", "cc1", "cc1plus", "gcc", "g++", "cc", "c++", "clang", "clang++", "ccache", "sccache"}
)
#: interpreters a compiler wrapper script runs under: the script's own name is the compiler's
_INTERPRETERS = frozenset({"sh", "bash", "dash", "python", "python3", "perl", "env"})
#: compiler options whose value is the next argument, never the unit: gcc 11+ passes cc1 `-dumpbase
#: a.cpp -dumpbase-ext .cpp` after the real source
_OPTIONS_WITH_A_VALUE = frozenset(
    {"-o", "-dumpbase", "-dumpbase-ext", "-dumpdir", "-MF", "-MT", "-MQ", "-include", "-imacros", "-x", "-aux-info"}
)
SAMPLE_EVERY = 2.0  # seconds between looks at the build's processes (a /proc scan: milliseconds)


def project_path(unit: str, build_dir: str | None = None) -> str:
    """The build's private copy of the source named as the project has it (``build_dir``: where a
    container builds its copy, /tmp/src, stripped too)."""
    if build_dir and unit.startswith(build_dir.rstrip("/") + "/"):
        return unit[len(build_dir.rstrip("/")) + 1 :]
    return unit.split("wheelflow-src-", 1)[1].split("/", 1)[-1] if "wheelflow-src-" in unit else unit


def compile_unit_of(argv: Sequence[str], build_dir: str | None = None) -> str | None:
    """The source file a compiler process works on, from its command line; None for other processes
    and for a compiler's temporary intermediate files (nvcc's ``tmpxft_*``, preprocessed ``.ii``)."""
    if not argv:
        return None
    program = Path(argv[0]).name
    args = argv[1:]
    if program.rstrip("0123456789.") in _INTERPRETERS and len(argv) > 1:  # `sh /wrappers/nvcc -c a.cu`
        program, args = Path(argv[1]).name, argv[2:]
    if program not in COMPILERS and not re.fullmatch(r"(?:[\w.-]+-)?(?:gcc|g\+\+|c\+\+)(?:-\d+)?", program):
        return None
    sources = [
        a
        for before, a in zip(["", *args], args, strict=False)
        if _SOURCE.search(a)
        and not a.startswith("-")
        and not Path(a).name.startswith(".")
        and before not in _OPTIONS_WITH_A_VALUE
        and "tmpxft" not in a
    ]
    return project_path(sources[-1], build_dir) if sources else None


def compile_units_in(commands: Iterable[Sequence[str]], build_dir: str | None = None) -> list[str]:
    """The compile units a list of processes (their command lines) works on, each once, sorted: the
    one reading of a build's processes for both builders (local: /proc; Docker: /proc or `docker top`)."""
    return sorted({unit for argv in commands if (unit := compile_unit_of(argv, build_dir)) is not None})


def commands_under(root: int, *, include_root: bool = False) -> list[list[str]]:
    """The command lines of the processes under ``root`` (and of ``root`` itself with ``include_root``),
    read from /proc now; a process that ended meanwhile is left out."""
    from wheelflow.core.cancel import descendants  # the process tree, as cancellation walks it

    commands = []
    for pid in [root, *descendants(root)] if include_root else descendants(root):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        commands.append([a.decode(errors="replace") for a in raw.split(b"\0") if a])
    return commands


def compile_units_under(root: int) -> list[str]:
    """The compile units the processes under ``root`` work on now (read from /proc, not from output)."""
    return compile_units_in(commands_under(root))


class Progress:
    """A long build is never silent: every ``every`` seconds, the elapsed time and the compile units
    running at that moment (``cell X: building for 600 s, compiling csrc/attn.cu, csrc/gemm.cu; 3 of 12
    units done``), also while the build prints nothing. Once :meth:`watch` got the build's PID (or
    :meth:`watch_processes` a container's process list), the units are read from its process tree (compilers' command lines in /proc: ninja's buffered output names
    files that ended long ago), and units seen running before that run no more count as done; the total
    comes from ninja's ``[n/N]`` lines where it prints them. Without a PID, the unit last seen in the
    output. ``cached``: the compiler cache's (hits, compiles) so far, added to the line when it has any.
    Feed it each output line; use as a context manager around the build."""

    def __init__(
        self,
        what: str,
        log: Log,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        cached: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self._what, self._log, self._every, self._clock, self._cached = what, log, every, clock, cached
        self._started = clock()
        self._unit: str | None = None
        self._processes: Callable[[], Iterable[Sequence[str]]] | None = None
        self._build_dir: str | None = None
        self._running: list[str] = []
        self._seen: set[str] = set()
        self._total: int | None = None
        self._sampled = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"progress {what}", daemon=True)

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def watch(self, pid: int) -> None:
        """The build's root process: from now on, units are read from its descendants."""
        self.watch_processes(lambda: commands_under(pid))

    def watch_processes(self, processes: Callable[[], Iterable[Sequence[str]]], build_dir: str | None = None) -> None:
        """From now on, units are read from ``processes()``: the command lines of the build's processes
        now (a container's, for the Docker builder); ``build_dir``: the path its copy of the source has
        there, left out of the units' names."""
        self._build_dir = build_dir
        self._processes = processes

    def sample(self) -> list[str]:
        """Look at the build's processes now: the units running, remembered as seen."""
        if self._processes is None:
            return []
        running = compile_units_in(self._processes(), self._build_dir)
        with self._sampled:
            self._running = running
            self._seen.update(running)
        return running

    def line(self, text: str) -> None:
        if (step := _NINJA_STEP.match(text.lstrip())) is not None:
            self._total = int(step.group(2))
        if ("-c " in text or text.lstrip().startswith("[")) and (found := _COMPILE_UNIT.findall(text)):
            unit = found[-1]
            # the build's private copy of the source: name the file as the project has it
            self._unit = unit.split("wheelflow-src-", 1)[1].split("/", 1)[-1] if "wheelflow-src-" in unit else unit

    def report(self) -> str:
        if self._processes is None:
            unit = f", compiling {self._unit}" if self._unit else ""
            return f"{self._what}: building for {self.elapsed:.0f} s{unit}"
        running = self.sample()
        with self._sampled:
            done = len(self._seen - set(running))
        units = f", compiling {', '.join(running)}" if running else ", compiling nothing right now"
        total = f" of {self._total}" if self._total else ""
        noun = "unit" if (self._total or done) == 1 else "units"
        hits, compiles = self._cached() if self._cached is not None else (0, 0)
        cache = f", compiler cache: {hits} of {compiles} compiles hit" if compiles else ""
        return f"{self._what}: building for {self.elapsed:.0f} s{units}; {done}{total} {noun} done{cache}"

    def _beat(self) -> None:
        next_line = self._clock() + self._every
        while not self._stop.wait(max(0.0, min(SAMPLE_EVERY, next_line - self._clock()))):
            if self._clock() >= next_line:
                self._log(self.report())
                next_line = self._clock() + self._every
            else:
                self.sample()  # between lines: units that start and end within 30 s still count as done

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
