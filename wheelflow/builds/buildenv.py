"""A cell's build environment when the project's own build requirements are not enough.

Many PyTorch CUDA extensions import torch at the top of ``setup.py`` and declare no build
requirements: an isolated build fails with ``No module named 'torch'``, and their users build with
``--no-build-isolation`` in an environment that already has torch. ``[tool.wheelflow.build]`` says
the same thing declaratively: ``requires`` adds packages (templates over the matrix axes, e.g.
``torch=={torch}``) and ``isolation = false`` builds in a prepared environment per cell that later
builds and runs reuse. Either way wheelflow makes the environment itself (uv where installed), from
the project's ``[build-system] requires``, the extra packages and ``build``, with the machine's
installer configuration and the cell's pins as constraints, and builds in it without isolation.

Compiles go through ccache when it is installed (``build.compiler-cache = "auto"``), keyed so that
a build in another folder (each build copies the source) still hits: a rebuild of the next version
with one changed ``.cu`` file recompiles that file only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from wheelflow.config.matrix import Cell, render_template
from wheelflow.core.errors import BuildError, EnvCreationError
from wheelflow.core.installerconfig import InstallerConfig
from wheelflow.core.pyenvs import PyEnv, create_env, installer_env
from wheelflow.core.redaction import redact
from wheelflow.core.sandbox import run_step

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: PEP 517's fallback for a project without ``[build-system]`` (pypa/build uses the same).
LEGACY_REQUIRES = ("setuptools>=40.8.0",)
BUILD_INFO = ".wheelflow-build.json"  # written next to the wheel: what the build ran with
COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "clang++")
NVCC = Path("/usr/local/cuda/bin/nvcc")
NO_COMPILER_CACHE_FIX = (
    "fix: install ccache (apt-get install ccache) on the machines that compile; the local builder then compiles "
    'C, C++ and nvcc through it ([tool.wheelflow.build] compiler-cache = "auto")'
)


@dataclass(frozen=True)
class BuildSetup:
    """How a cell's build environment is made: ``[tool.wheelflow.build]`` rendered for the cell."""

    requires: tuple[str, ...] = ()  # build.requires, rendered
    isolation: bool = True  # build.isolation
    pins: tuple[str, ...] = ()  # the cell's pins (matrix build-requires), as constraints
    compiler_cache: bool = True  # build.compiler-cache = "auto"
    installer: InstallerConfig = field(default_factory=InstallerConfig)
    network: bool = False  # build.network: the compile may reach the network

    @property
    def prepared(self) -> bool:
        """True when wheelflow makes the environment (extra packages, or no isolation)."""
        return bool(self.requires) or not self.isolation


def build_setup(
    requires: Sequence[str],
    isolation: bool,
    cell: Cell | None,
    *,
    compiler_cache: bool,
    installer: InstallerConfig,
    network: bool = False,
) -> BuildSetup:
    """The build environment of ``cell`` (None: a project without a matrix): ``build.requires``
    rendered with its axis values, ``build.isolation``, its pins, and this machine's installer
    configuration. The one place a BuildSetup is made, for the cells and the sdist alike."""
    values = cell.values if cell is not None else {}
    return BuildSetup(
        requires=tuple(render_template(r, values, ("build", "requires")) for r in requires),
        isolation=isolation,
        pins=cell.build_requires if cell is not None else (),
        compiler_cache=compiler_cache,
        installer=installer,
        network=network,
    )


def build_system_requires(project: Path) -> tuple[str, ...]:
    """The project's ``[build-system] requires``, or PEP 517's fallback when it declares none."""
    pyproject = project / "pyproject.toml"
    if not pyproject.is_file():
        return LEGACY_REQUIRES
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("build-system") or {}
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{pyproject}: invalid TOML ({exc}); fix: correct the file") from None
    requires = table.get("requires")
    return tuple(requires) if isinstance(requires, list) else LEGACY_REQUIRES


def requirements_for(project: Path, setup: BuildSetup) -> tuple[str, ...]:
    """What the environment installs: the project's build requirements, the extra ones, and ``build``."""
    return tuple(dict.fromkeys((*build_system_requires(project), *setup.requires, "build")))


def environment_key(interpreter_identity: str, requirements: Sequence[str], setup: BuildSetup) -> str:
    """A prepared environment is reused only for the same interpreter, requirements, pins and sources."""
    inputs = {
        "python": interpreter_identity,
        "requirements": sorted(requirements),
        "pins": sorted(setup.pins),
        "installer": [setup.installer.index_url, setup.installer.extra_index_urls, setup.installer.find_links],
        "constraints": [_digest(c) for c in setup.installer.constraints],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def _digest(constraint: str) -> str:
    path = Path(constraint)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else constraint


def installer_variables(setup: BuildSetup, pins_folder: Path) -> dict[str, str]:
    """The installer configuration with the cell's pins, for pip and uv alike."""
    config = setup.installer.with_pins(setup.pins, pins_folder)
    return {**config.pip_env(), **config.uv_env()}


def prepare_environment(
    path: Path, interpreter: str, requirements: Sequence[str], setup: BuildSetup, log
) -> tuple[PyEnv, dict[str, str]]:
    """Make (or, when complete, reuse) the environment at ``path``; returns it and the installer variables."""
    marker = path / ".wheelflow-complete"
    variables = installer_variables(setup, path.parent / f".pins-{path.name}")
    if marker.is_file():
        log(f"build environment {path.name}: reused ({', '.join(requirements)})")
        return PyEnv(path, "reused"), variables
    if path.exists():
        shutil.rmtree(path)  # an environment a killed build left half made
    try:
        pyenv = create_env(path, interpreter)
    except EnvCreationError as exc:
        raise BuildError(f"no build environment at {path}: {exc}; fix: check the disk and the interpreter") from None
    env = {**installer_env(path), **variables}
    log(f"build environment {path.name}: installing {', '.join(requirements)} ({setup.installer.describe()})")
    done = subprocess.run(pyenv.install_command(*requirements), capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        shutil.rmtree(path, ignore_errors=True)
        raise BuildError(
            f"the build environment could not install {', '.join(requirements)}: "
            f"{(lines[-1] if lines else f'exit {done.returncode}')[:300]}; "
            "fix: check [tool.wheelflow.build] requires and the cell's pins (matrix build-requires)"
        )
    marker.write_text(json.dumps({"requirements": list(requirements)}))
    return pyenv, variables


@contextlib.contextmanager
def environment_lock(path: Path) -> Iterator[None]:
    """One builder at a time makes a prepared environment; the others then reuse it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class PreparedBuild:
    python: str  # the interpreter that runs ``python -m build --no-isolation``
    env: dict[str, str]  # the installer variables its installs used
    torch: str | None  # the torch it holds, if any
    environment: PyEnv | None = None  # a fresh one (``setup.isolation``): the backend's own requirements go in


def prepared_build(
    project: Path, interpreter: str, identity: str, setup: BuildSetup, *, home: Path, scratch: Path, log
) -> PreparedBuild:
    """The environment a prepared build runs in: fresh under ``scratch`` when ``setup.isolation``, else
    the cell's shared one under ``$WHEELFLOW_HOME/build-envs`` (made once, reused by later builds)."""
    requirements = requirements_for(project, setup)
    if setup.isolation:
        path = scratch / ".build-env"
    else:
        path = home / "build-envs" / environment_key(identity, requirements, setup)
    with environment_lock(path):
        pyenv, variables = prepare_environment(path, interpreter, requirements, setup, log)
    torch = installed_version(pyenv.python, "torch", {**installer_env(path), **variables})
    return PreparedBuild(str(pyenv.python), variables, torch, pyenv if setup.isolation else None)


#: Asks the backend what it needs besides what is installed (PEP 517's get_requires_for_build_*,
#: pypa/build's dependency check) without building; run without network (the sandbox, a container
#: with no network), since the backend runs the project's setup.py to answer. Prints the missing
#: requirements as JSON after BACKEND_REQUIRES_LINE and exits with BACKEND_ASKS_MORE when there are any.
BACKEND_REQUIRES_LINE = "wheelflow-backend-requires "
BACKEND_ASKS_MORE = 42
BACKEND_REQUIRES_PROBE = (
    "import json, sys\n"
    "from build import ProjectBuilder\n"
    "unmet = sorted({chain[0] for chain in ProjectBuilder(sys.argv[1]).check_dependencies(sys.argv[2])})\n"
    f"print({BACKEND_REQUIRES_LINE!r} + json.dumps(unmet), flush=True)\n"
    f"sys.exit({BACKEND_ASKS_MORE} if unmet else 0)\n"
)


def backend_requires(lines: Sequence[str]) -> list[str] | None:
    """The requirements the probe's output names, or None when it printed no answer."""
    answers = [line[len(BACKEND_REQUIRES_LINE) :] for line in lines if line.startswith(BACKEND_REQUIRES_LINE)]
    return json.loads(answers[-1]) if answers else None


def install_backend_requires(
    prepared: PreparedBuild, tree: Path, distribution: str, env: Mapping[str, str], *, log, writable: Sequence[Path]
) -> None:
    """Fill a fresh build environment with what the backend asks for ``distribution`` ("wheel" or
    "sdist") beyond ``[build-system] requires``, as an isolated build would: the backend answers in
    the sandbox without network, the installer then installs with network, outside it. The compile
    that follows finds everything it needs without the network."""
    if prepared.environment is None:
        return  # a shared environment (isolation = false) is what the spec made it, as with --no-build-isolation
    lines: list[str] = []
    done = run_step(
        [prepared.python, "-c", BACKEND_REQUIRES_PROBE, str(tree), distribution],
        env=env,
        cwd=tree,
        on_line=lines.append,
        writable=writable,
        network=False,
    )
    asked = backend_requires(lines)
    if done.code not in (0, BACKEND_ASKS_MORE) or asked is None:
        # The backend failed before it could answer: it runs the project's setup.py, which fails the same
        # way in the build that follows. That build's own error (the compile's first error line, a
        # missing module and its fix) says more than "could not say what it needs" would.
        log(
            f"build environment: the backend could not say what it needs (exit {done.code}); "
            "building with what [build-system] requires, the build's own error follows if it fails"
        )
        return
    if not asked:
        return
    pyenv = prepared.environment
    log(f"build environment: installing what the backend asks for: {', '.join(asked)}")
    installed = subprocess.run(
        pyenv.install_command(*asked),
        capture_output=True,
        text=True,
        env={**installer_env(pyenv.path), **prepared.env},
        check=False,
    )
    if installed.returncode != 0:
        last = [line for line in (installed.stderr + installed.stdout).splitlines() if line.strip()]
        raise BuildError(
            f"the build environment could not install {', '.join(asked)}: "
            f"{(last[-1] if last else f'exit {installed.returncode}')[:300]}; fix: check the project's build backend"
        )


#: Asks the backend which version the wheel build will produce, without compiling: PEP 517's
#: prepare_metadata_for_build_wheel (pypa/build's ProjectBuilder.prepare; setuptools runs setup.py's
#: metadata step only). Prints the version after PLANNED_VERSION_LINE; prints nothing when the backend
#: has no such hook (a fallback would build the wheel, which is what this check must not wait for).
#: Given a third argument (the wanted version), it exits with PLANNED_OTHER when the two differ: a
#: container stops there, before the compile, and the builder reads the line to say why.
PLANNED_VERSION_LINE = "wheelflow-planned-version "
PLANNED_OTHER = 43
PLANNED_VERSION_PROBE = (
    "import email, os, sys\n"
    "from build import ProjectBuilder\n"
    "path = ProjectBuilder(sys.argv[1]).prepare('wheel', sys.argv[2])\n"
    "if path is None: sys.exit(0)\n"
    "with open(os.path.join(path, 'METADATA'), 'rb') as handle:\n"
    "    version = email.message_from_binary_file(handle)['Version']\n"
    f"print({PLANNED_VERSION_LINE!r} + str(version), flush=True)\n"
    "if len(sys.argv) > 3 and sys.argv[3]:\n"
    "    from packaging.version import Version\n"
    f"    sys.exit({PLANNED_OTHER} if Version(str(version)) != Version(sys.argv[3]) else 0)\n"
)


def planned_line(lines: Sequence[str]) -> str | None:
    """The version the probe's output names, or None when it printed none."""
    said = [line[len(PLANNED_VERSION_LINE) :].strip() for line in lines if line.startswith(PLANNED_VERSION_LINE)]
    return said[-1] if said else None


def planned_version(
    python: str, tree: Path, env: Mapping[str, str], *, scratch: Path, log, writable: Sequence[Path], network: bool
) -> str | None:
    """The version a wheel build of ``tree`` will produce, read from the backend's metadata hook in
    the sandbox before anything compiles; None when the backend cannot say (no hook, or the hook
    failed: the build then fails with its own error, and the built files are checked as before)."""
    out = Path(tempfile.mkdtemp(prefix=".planned-metadata-", dir=scratch))
    lines: list[str] = []
    try:
        done = run_step(
            [python, "-c", PLANNED_VERSION_PROBE, str(tree), str(out)],
            env=env,
            cwd=tree,
            on_line=lines.append,
            writable=[*writable, out],
            network=network,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    said = planned_line(lines)
    if done.code != 0 or said is None:
        log(
            "the build backend did not say its version before the build"
            + (f" (exit {done.code}: {redact(lines[-1])[:200]})" if done.code != 0 and lines else "")
            + "; the built files are checked instead"
        )
        return None
    return said


def refuse_other_version(
    planned: str | None, wanted: str, what: str, said: str = "the build would produce version"
) -> None:
    """A build that would produce another version than the release's is refused before it compiles,
    in one line naming both and the fix. A post-release re-tag (release 1.2.0.post2 over a build that
    stamps its version file's 1.2.0) is refused the same way: its files must carry the tag's version."""
    if planned is None:
        return
    try:
        if Version(planned) == Version(wanted):
            return
        retag = Version(wanted).post is not None and Version(planned) == Version(Version(wanted).base_version)
    except InvalidVersion:
        retag = False
    how = (
        f"the release {wanted} re-tags {planned}, and its files must carry {wanted} (an index never takes a "
        f"filename twice); fix: make the build stamp WHEELFLOW_RELEASE_VERSION (e.g. in setup.py, "
        f'version=os.environ.get("WHEELFLOW_RELEASE_VERSION", <the file\'s version>)), or release {planned} '
        "from its own tag"
        if retag
        else "fix: make the build read WHEELFLOW_RELEASE_VERSION, or make the tag, the version file and "
        "--version say what the build stamps"
    )
    raise BuildError(f"{what}: {said} {planned}, the release is {wanted}; {how}")


def installed_version(python: Path, distribution: str, env: Mapping[str, str]) -> str | None:
    """The version of ``distribution`` installed in the environment of ``python``, or None."""
    code = (
        "import importlib.metadata as m, sys\n"
        f"try: print(m.version({distribution!r}))\n"
        "except m.PackageNotFoundError: sys.exit(3)"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=dict(env), check=False)
    return done.stdout.strip() or None if done.returncode == 0 else None


def missing_module(lines: Sequence[str]) -> str | None:
    """The module a failed build could not import (``No module named 'torch'``), if that is why it failed."""
    for line in lines:
        if "No module named" in line:
            return line.split("No module named", 1)[1].strip(" '\":").split(".")[0].strip("'\"") or None
    return None


def missing_module_fix(module: str) -> str:
    return (
        f"the build imports {module!r}, which its build environment lacks; fix: add it to "
        f'[tool.wheelflow.build] requires (e.g. requires = ["{module}=={{{module}}}"] for a matrix axis '
        f"named {module}), or set isolation = false to build in a prepared environment"
    )


# -- the compiler cache ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompilerCache:
    """ccache in front of the C/C++ compilers and nvcc for one build, with a log of each compile."""

    directory: Path  # the cache itself, shared by every build under the home
    wrappers: Path  # a folder put first on PATH: cc, c++, gcc, g++, nvcc through ccache
    stats_log: Path  # this build's compile results

    def env(self, base_dir: Path) -> dict[str, str]:
        return {
            "CCACHE_DIR": str(self.directory),
            # The source is copied to a new folder per build: paths below it are hashed relative to it.
            "CCACHE_BASEDIR": str(base_dir),
            "CCACHE_NOHASHDIR": "1",
            "CCACHE_STATSLOG": str(self.stats_log),
            "CCACHE_COMPILERCHECK": "content",
            # torch.utils.cpp_extension puts ccache in front of compilers found on PATH by itself, but
            # calls nvcc by its CUDA_HOME path: one wrapper each, through this folder, and no double wrap.
            "TORCH_NO_COMPILER_WRAPPER": "1",
            **({"PYTORCH_NVCC": str(self.wrappers / "nvcc")} if (self.wrappers / "nvcc").exists() else {}),
        }

    def hit_rate(self) -> tuple[int, int]:
        """(hits, compiles) of this build, from ccache's stats log."""
        if not self.stats_log.is_file():
            return 0, 0
        results = [line.strip() for line in self.stats_log.read_text(errors="replace").splitlines() if line.strip()]
        results = [r for r in results if not r.startswith("#")]
        hits = sum(1 for r in results if "cache_hit" in r)
        compiles = sum(1 for r in results if "cache_hit" in r or r == "cache_miss")
        return hits, compiles


def compiler_cache(home: Path, work: Path) -> CompilerCache | None:
    """ccache for a build under ``home``, or None where ccache is not installed."""
    ccache = shutil.which("ccache")
    if ccache is None:
        return None
    wrappers = Path(tempfile.mkdtemp(prefix="ccache-wrappers-", dir=work))
    real_path = os.environ.get("PATH", os.defpath)
    for name in COMPILERS:
        real = shutil.which(name, path=real_path)
        if real:
            _wrapper(wrappers / name, ccache, real)
    nvcc = NVCC if NVCC.is_file() else (Path(found) if (found := shutil.which("nvcc")) else None)
    if nvcc is not None:
        _wrapper(wrappers / "nvcc", ccache, str(nvcc.resolve()))
    (home / "ccache").mkdir(parents=True, exist_ok=True)
    return CompilerCache(home / "ccache", wrappers, wrappers / "stats.log")


def _wrapper(path: Path, ccache: str, real: str) -> None:
    path.write_text(f'#!/bin/sh\nexec {ccache} {real} "$@"\n')
    path.chmod(0o755)


def write_build_info(out: Path, info: Mapping[str, object]) -> None:
    (out / BUILD_INFO).write_text(json.dumps(dict(info), indent=1))


def read_build_info(out: Path) -> dict[str, object]:
    path = out / BUILD_INFO
    return json.loads(path.read_text()) if path.is_file() else {}
