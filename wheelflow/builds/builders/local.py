"""The local builder: each cell built by a subprocess on this machine, for machines without Docker."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from wheelflow.builds.builders import FAILED, PASSED, SKIPPED, BatchedLog, Log, SmokeResult, copy_source
from wheelflow.builds.building import first_error_line
from wheelflow.builds.repair import RepairedWheel, repair_wheel
from wheelflow.config.matrix import Cell
from wheelflow.config.repairoptions import RepairOptions
from wheelflow.core.childenv import child_env
from wheelflow.core.errors import BuildError, CellUnbuildable, EnvCreationError
from wheelflow.core.pyenvs import create_env, installer_env
from wheelflow.core.redaction import LineRedactor
from wheelflow.core.reproducible import prefix_map_env
from wheelflow.source.export import source_files


def find_interpreter(python: str | None) -> str:
    """The interpreter for a cell's python axis value: this one if it matches, else pythonX.Y on PATH."""
    current = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python is None or python == current:
        return sys.executable
    found = shutil.which(f"python{python}")
    if found is None or not _runs(found):  # a version manager's shim can exist for a version not installed
        raise CellUnbuildable(
            f"no python{python} on this runner; fix: use --builder docker, or install Python {python}"
        )
    return found


def gpu_answers() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True, env=child_env()).returncode == 0


def _stream(cmd: list[str], env: Mapping[str, str], cwd: Path, log: Log, timeout: float) -> tuple[int, deque[str]]:
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd, text=True, errors="replace"
    )
    assert proc.stdout is not None
    try:
        with BatchedLog(log) as batch:
            lines = LineRedactor()  # a build or smoke command may print its environment, even split up
            for raw in proc.stdout:
                for line in lines.feed(raw.rstrip()):
                    tail.append(line)
                    batch(line)
            for line in lines.close():
                tail.append(line)
                batch(line)
        return proc.wait(timeout), tail
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -9, tail


# Asked once per interpreter and process, not once per cell: a 500-cell matrix has one or a few
# interpreters, and each question is an interpreter start (~50 ms).
@functools.cache
def _runs(interpreter: str) -> bool:
    return subprocess.run([interpreter, "-c", "pass"], capture_output=True, env=child_env()).returncode == 0


@functools.cache
def _imports_build(interpreter: str) -> bool:
    return subprocess.run([interpreter, "-c", "import build"], capture_output=True, env=child_env()).returncode == 0


@functools.cache
def _interpreter_identity(interpreter: str) -> str:
    out = subprocess.run(
        [interpreter, "-c", "import sys, sysconfig; print(sys.version, sysconfig.get_platform())"],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    return f"local:{out.stdout.strip()}"


class LocalBuilder:
    kind = "local"

    def __init__(self, pass_env: Sequence[str] = ()) -> None:
        self.pass_env = tuple(pass_env)  # build.pass-env: variables of this runner the build may see

    def preflight(self, cell: Cell) -> None:
        interpreter = find_interpreter(cell.values.get("python"))
        if not _imports_build(interpreter):
            raise CellUnbuildable(f"{interpreter} cannot import 'build'; fix: {interpreter} -m pip install build")

    def identity(self, cell: Cell) -> str:
        return _interpreter_identity(find_interpreter(cell.values.get("python")))

    def build(
        self, cell: Cell, source: Path, out: Path, env: Mapping[str, str], log: Log, labels: Mapping[str, str]
    ) -> None:
        interpreter = find_interpreter(cell.values.get("python"))
        from wheelflow.core.home import wheelflow_home

        copy = copy_source(source, source_files(source, wheelflow_home()))
        try:
            # The copy's path is random: compilers record it as "." instead.
            build_env = child_env(extra=env, pass_env=self.pass_env)
            code, tail = _stream(
                [interpreter, "-m", "build", "--wheel", "--outdir", str(out), str(copy)],
                {**build_env, **prefix_map_env(str(copy), build_env)},
                copy,
                log,
                cell.timeout,
            )
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        if code == -9:
            raise BuildError(
                f"cell {cell.name}: build stopped by its {cell.timeout:.0f} s timeout; fix: raise matrix.timeout"
            )
        if code != 0:
            raise BuildError(
                f"cell {cell.name}: build failed (exit {code}): {first_error_line(tail)[:200]}",
                log_tail="\n".join(tail),
            )

    def repair(
        self, cell: Cell, wheel: Path, dest_dir: Path, options: RepairOptions, log: Log, labels: Mapping[str, str]
    ) -> RepairedWheel:
        """On this machine, with the auditwheel installed beside wheelflow."""
        return repair_wheel(wheel, dest_dir, options, log=log)

    def smoke(self, cell: Cell, wheel: Path, smoke: str | None, log: Log, labels: Mapping[str, str]) -> SmokeResult:
        if cell.gpu and not gpu_answers():
            return SmokeResult(SKIPPED, "skipped: no GPU on this runner")
        interpreter = find_interpreter(cell.values.get("python"))
        with tempfile.TemporaryDirectory(prefix="wheelflow-smoke-") as root:
            try:  # uv where installed: milliseconds per environment, against seconds for venv + pip
                pyenv = create_env(Path(root) / "venv", interpreter)
            except EnvCreationError as exc:
                return SmokeResult(FAILED, f"no environment for the smoke test of {wheel.name}: {exc}")
            env = installer_env(pyenv.path)
            code, tail = _stream(pyenv.install_command("--quiet", str(wheel)), env, Path(root), log, cell.timeout)
            if code != 0:
                return SmokeResult(
                    FAILED, f"{pyenv.installer} install {wheel.name} failed: {first_error_line(tail)[:200]}"
                )
            code, tail = _stream(["/bin/sh", "-c", smoke or "python -c pass"], env, Path(root), log, cell.timeout)
        if code != 0:
            return SmokeResult(
                FAILED, f"smoke command failed on {wheel.name} (exit {code}): {(tail[-1] if tail else '')[:200]}"
            )
        return SmokeResult(PASSED, f"installed {wheel.name} with {pyenv.installer}; smoke ok")
