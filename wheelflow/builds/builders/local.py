"""The local builder: each cell built by a subprocess on this machine, for machines without Docker."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from wheelflow.builds.buildenv import (
    NO_COMPILER_CACHE_FIX,
    BuildSetup,
    compiler_cache,
    install_backend_requires,
    installer_variables,
    missing_module,
    missing_module_fix,
    planned_version,
    prepared_build,
    refuse_other_version,
    write_build_info,
)
from wheelflow.builds.builders import (
    FAILED,
    PASSED,
    SKIPPED,
    BatchedLog,
    Log,
    Progress,
    SmokeResult,
    SmokeSetup,
    copy_source,
    ended_by,
    loaded_torch,
    torch_mismatch,
)
from wheelflow.builds.building import first_error_line
from wheelflow.builds.repair import RepairedWheel, repair_wheel
from wheelflow.config.matrix import Cell
from wheelflow.config.repairoptions import RepairOptions
from wheelflow.core.childenv import child_env
from wheelflow.core.errors import BuildError, CellUnbuildable, EnvCreationError
from wheelflow.core.pyenvs import create_env, installer_env
from wheelflow.core.redaction import LineRedactor
from wheelflow.core.reproducible import prefix_map_env
from wheelflow.core.sandbox import SESSION, protection, protection_label, run_step
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


def _stream(
    cmd: list[str],
    env: Mapping[str, str],
    cwd: Path,
    log: Log,
    timeout: float,
    progress: Progress | None = None,
    *,
    writable: Sequence[Path] = (),
    network: bool = True,
    mode: str | None = None,
) -> tuple[int, deque[str]]:
    """Run ``cmd`` in the sandbox (:mod:`wheelflow.core.sandbox`; ``cwd`` and ``writable`` writable),
    logging its output in batches; (exit code, last lines). ``_TIMED_OUT`` when the timeout stopped it."""
    tail: deque[str] = deque(maxlen=40)
    lines = LineRedactor()  # a build or smoke command may print its environment, even split up

    with BatchedLog(log) as batch:

        def emit(line: str) -> None:
            tail.append(line)
            batch(line)
            if progress is not None:
                progress.line(line)

        def on_line(raw: str) -> None:
            for line in lines.feed(raw.rstrip()):
                emit(line)

        result = run_step(
            cmd,
            env=env,
            cwd=cwd,
            on_line=on_line,
            writable=[cwd, *writable],
            network=network,
            timeout=timeout,
            mode=mode,
            on_start=progress.watch if progress is not None else None,
        )
        for line in lines.close():
            emit(line)
    return (_TIMED_OUT if result.timed_out else result.code), tail


_TIMED_OUT = -1000


def _compiled(out: Path) -> bool:
    """The build left a platform wheel: something was compiled."""
    return any(not wheel.name.endswith("-any.whl") for wheel in out.glob("*.whl"))


# Asked once per interpreter and process, not once per cell: a 500-cell matrix has one or a few
# interpreters, and each question is an interpreter start (~50 ms).
@functools.cache
def _runs(interpreter: str) -> bool:
    return subprocess.run([interpreter, "-c", "pass"], capture_output=True, env=child_env()).returncode == 0


@functools.cache
def _imports_build(interpreter: str) -> bool:
    return subprocess.run([interpreter, "-c", "import build"], capture_output=True, env=child_env()).returncode == 0


@functools.cache
def interpreter_identity(interpreter: str) -> str:
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
        return interpreter_identity(find_interpreter(cell.values.get("python")))

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
        interpreter = find_interpreter(cell.values.get("python"))
        from wheelflow.core.home import wheelflow_home

        setup = setup or BuildSetup()
        home = wheelflow_home()
        copy = copy_source(source, source_files(source, home))
        cache = compiler_cache(home, Path(tempfile.gettempdir())) if setup.compiler_cache else None
        info: dict[str, object] = {}
        try:
            build_env = child_env(extra=env, pass_env=self.pass_env)
            build_env.update(installer_variables(setup, out / ".installer"))
            # Requirements go in with network first; the compile then runs without (build.network).
            prepared = prepared_build(
                copy, interpreter, interpreter_identity(interpreter), setup, home=home, scratch=out, log=log
            )
            python, frontend = prepared.python, ["--no-isolation"]
            if prepared.torch:
                info["torch"] = prepared.torch
                log(f"cell {cell.name}: building against torch {prepared.torch}")
            writable = [copy, out]
            if cache is not None:
                build_env.update(cache.env(copy))
                build_env["PATH"] = f"{cache.wrappers}{os.pathsep}{build_env.get('PATH', '')}"
                writable += [cache.directory, cache.wrappers]
            install_backend_requires(prepared, copy, "wheel", build_env, log=log, writable=writable)
            log(f"cell {cell.name}: sandbox: {protection_label(protection(), network=setup.network)}")
            if env.get("WHEELFLOW_VERSION"):  # a mismatch is refused in seconds, not after the compile
                planned = planned_version(
                    python, copy, build_env, scratch=out, log=log, writable=writable, network=setup.network
                )
                refuse_other_version(planned, env["WHEELFLOW_VERSION"], f"cell {cell.name}")
                if planned:
                    log(f"cell {cell.name}: the build will produce version {planned}")
            # The copy's path is random, and the prepared environment's lies in the home: compilers
            # record them as "." and BUILD_ENV_AS instead (torch's headers put their paths in the .so).
            environment = Path(python).parent.parent if python != interpreter else None
            recorded_as = prefix_map_env(str(copy), build_env, build_env=str(environment) if environment else None)
            with Progress(f"cell {cell.name}", log, cached=cache.hit_rate if cache else None) as progress:
                code, tail = _stream(
                    [python, "-m", "build", "--wheel", *frontend, "--outdir", str(out), str(copy)],
                    {**build_env, **recorded_as},
                    copy,
                    log,
                    cell.timeout,
                    progress,
                    writable=writable,
                    network=setup.network,
                )
            if cache is None and setup.compiler_cache and code == 0 and _compiled(out):
                log(f"cell {cell.name}: compiled without a compiler cache (no ccache on PATH); {NO_COMPILER_CACHE_FIX}")
            if cache is not None:
                hits, compiles = cache.hit_rate()
                if compiles:
                    info["compiler_cache"] = {"hits": hits, "compiles": compiles}
                    log(
                        f"cell {cell.name}: compiler cache: {hits} of {compiles} compiles hit ({100 * hits // compiles}%)"
                    )
        finally:
            shutil.rmtree(copy, ignore_errors=True)
            if cache is not None:
                shutil.rmtree(cache.wrappers, ignore_errors=True)
        if code == _TIMED_OUT:
            raise BuildError(
                f"cell {cell.name}: build stopped by its {cell.timeout:.0f} s timeout; fix: raise matrix.timeout"
            )
        if code != 0:
            module = missing_module(tail)
            reason = missing_module_fix(module) if module else first_error_line(tail)[:200]
            raise BuildError(
                f"cell {cell.name}: build failed ({ended_by(code, progress.elapsed)}): {reason}",
                log_tail="\n".join(tail),
            )
        write_build_info(out, info)

    def repair(
        self, cell: Cell, wheel: Path, dest_dir: Path, options: RepairOptions, log: Log, labels: Mapping[str, str]
    ) -> RepairedWheel:
        """On this machine, with the auditwheel installed beside wheelflow."""
        return repair_wheel(wheel, dest_dir, options, log=log)

    def smoke(
        self,
        cell: Cell,
        wheel: Path,
        smoke: str | None,
        log: Log,
        labels: Mapping[str, str],
        setup: SmokeSetup | None = None,
    ) -> SmokeResult:
        if cell.gpu and not gpu_answers():
            return SmokeResult(SKIPPED, "skipped: no GPU on this runner")
        setup = setup or SmokeSetup()
        interpreter = find_interpreter(cell.values.get("python"))
        with tempfile.TemporaryDirectory(prefix="wheelflow-smoke-") as root:
            try:  # uv where installed: milliseconds per environment, against seconds for venv + pip
                pyenv = create_env(Path(root) / "venv", interpreter)
            except EnvCreationError as exc:
                return SmokeResult(FAILED, f"no environment for the smoke test of {wheel.name}: {exc}")
            # the build's installer configuration and the cell's pins: the torch it built against
            env = {**installer_env(pyenv.path), **installer_variables(setup.build, Path(root) / "pins")}
            # the installer is ours, not the project's: its own session, and the machine's caches
            code, tail = _stream(
                pyenv.install_command("--quiet", str(wheel)), env, Path(root), log, cell.timeout, mode=SESSION
            )
            if code != 0:
                return SmokeResult(
                    FAILED, f"{pyenv.installer} install {wheel.name} failed: {first_error_line(tail)[:200]}"
                )
            torch = loaded_torch(pyenv.python, env)
            mismatch = torch_mismatch(setup.build_torch, torch)
            if mismatch:
                return SmokeResult(FAILED, f"{wheel.name}: {mismatch}")
            code, tail = _stream(["/bin/sh", "-c", smoke or "python -c pass"], env, Path(root), log, cell.timeout)
        on = f"; torch {torch}" if torch else ""
        if code != 0:
            return SmokeResult(
                FAILED,
                f"smoke command failed on {wheel.name} (exit {code}){on}: {(tail[-1] if tail else '')[:200]}",
                torch,
            )
        return SmokeResult(PASSED, f"installed {wheel.name} with {pyenv.installer}; smoke ok{on}", torch)
