"""Build the sdist and wheel(s) with pypa/build in an isolated environment, with a build cache.

A build is cached under ``$WHEELFLOW_HOME/builds`` by the digest of its inputs (the source's git
tree id, SOURCE_DATE_EPOCH, asked artifacts, build environment, interpreter). Re-running a release
therefore reuses the exact bytes that were built (and perhaps already uploaded) instead of producing
new ones under the same names. Builds run in a private copy of the source export (``source.py``)
and their archives are normalised (``reproducible.py``): one commit builds the same bytes anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import sysconfig
import tempfile
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from wheelflow import __version__
from wheelflow.builds.buildenv import (
    BuildSetup,
    install_backend_requires,
    missing_module,
    missing_module_fix,
    planned_version,
    prepared_build,
    refuse_other_version,
)
from wheelflow.builds.sdists import sdist_version, unpack_sdist
from wheelflow.core.childenv import child_env
from wheelflow.core.distributions import Distribution, describe, sha256_of
from wheelflow.core.errors import BuildError
from wheelflow.core.installerconfig import read_installer_config
from wheelflow.core.redaction import LineRedactor
from wheelflow.core.reproducible import normalise_sdist, normalise_wheel, prefix_map_env
from wheelflow.core.sandbox import protection, protection_label, run_step
from wheelflow.source.export import Source, prepare_source, source_identity

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BuildResult:
    dists: list[Distribution]
    cached: bool
    directory: Path
    cache_key: str


def source_digest(project: Path) -> str:
    """The cache identity of ``project`` as it is on disk (see ``source.source_identity``): HEAD's tree
    id when the tracked files match it, else a digest of the files a build takes. Untracked files
    and $WHEELFLOW_HOME never count."""
    from wheelflow.core.home import wheelflow_home

    return source_identity(project, home=wheelflow_home())


def cache_key(
    source: str, artifacts: tuple[str, ...], env: Mapping[str, str], version: str, source_date_epoch: int | None = None
) -> str:
    """``source`` is a Source's identity (the tree id of a clean commit); the epoch is in every
    archive's timestamps, so one tree committed twice builds two sets of bytes."""
    inputs = {
        "source": source,
        "source_date_epoch": source_date_epoch,
        "artifacts": sorted(artifacts),
        "env": dict(sorted(env.items())),
        "version": version,
        "interpreter": sys.implementation.cache_tag,
        "platform": sysconfig.get_platform(),
        "wheelflow": __version__,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _load_cached(directory: Path) -> list[Distribution] | None:
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return None
    recorded = json.loads(manifest.read_text())["files"]
    dists = []
    for filename, sha256 in recorded.items():
        path = directory / filename
        if not path.is_file() or sha256_of(path) != sha256:
            return None  # damaged cache entry: rebuild
        dists.append(describe(path))
    return dists


# Lines a build frontend prints around the real error: never the cause itself.
_FRONTEND_LINES = (
    "backend subprocess exited",
    "subprocess-exited-with-error",
    "this error originates from a subprocess",
    "metadata-generation-failed",
    "see above for output",
    "╰─>",
    "error: failed building wheel",
)
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Z]\w*(?:Error|Exception|Invalid\w*|Exit|Failure)\b.*")


def first_error_line(lines: deque[str] | list[str]) -> str:
    """The line that says what went wrong: the first compiler, linker or pip error, else the
    exception that ended a traceback (``InvalidVersion: ...``), else the last line the build printed
    that is not the frontend's own summary."""
    meaningful = [
        line.strip()
        for line in lines
        if line.strip() and not any(generic in line.lower() for generic in _FRONTEND_LINES)
    ]
    for line in meaningful:
        if re.search(r"\berror\b|\bfatal\b", line.lower()):
            return line
    exceptions = [line for line in meaningful if _EXCEPTION_LINE.match(line)]
    if exceptions:
        return exceptions[-1]
    return meaningful[-1] if meaningful else next((line.strip() for line in reversed(lines) if line.strip()), "")


def build_fix(tail: deque[str] | list[str], home: Path) -> str:
    module = missing_module(list(tail))
    if module:
        return missing_module_fix(module).split("fix: ", 1)[1]
    if any("No space left on device" in line or "Errno 28" in line for line in tail):
        return f"free space on the disk of {home} (its builds/ cache can be deleted) or set WHEELFLOW_HOME to a larger disk"
    return "see the build log above"


def _run_build(
    cmd: list[str],
    env: Mapping[str, str],
    *,
    what: str,
    home: Path,
    log: Callable[[str], None],
    tree: Path,
    writable: Sequence[Path],
    network: bool,
) -> None:
    """The build frontend in the sandbox (:mod:`wheelflow.core.sandbox`), in ``tree``."""
    log("$ " + " ".join(cmd))
    tail: deque[str] = deque(maxlen=40)
    lines = LineRedactor()  # the build may print its environment (passed tokens included), even split up

    def on_line(raw: str) -> None:
        for line in lines.feed(raw.rstrip()):
            tail.append(line)
            log(line)

    result = run_step(cmd, env=env, cwd=tree, on_line=on_line, writable=writable, network=network)
    for line in lines.close():
        tail.append(line)
        log(line)
    if result.code != 0:
        raise BuildError(
            f"build of {what} failed (exit {result.code}): {first_error_line(tail)[:200]}; "
            f"fix: {build_fix(tail, home)}",
            log_tail="\n".join(tail),
        )


def _build(
    source: Source,
    artifacts: tuple[str, ...],
    outdir: Path,
    workdir: Path,
    env: dict[str, str],
    *,
    what: str,
    version: str,
    home: Path,
    log: Callable[[str], None],
    setup: BuildSetup | None = None,
) -> None:
    """pypa/build in a private copy of the export, so that nothing (build/, *.egg-info/) lands in the
    user's checkout or the export. With both kinds the wheel is built from the normalised sdist,
    unpacked at a known path, which proves the sdist builds and lets compilers drop that path."""
    tree = workdir / "src"
    shutil.copytree(source.path, tree, symlinks=True)
    setup = setup or BuildSetup(installer=read_installer_config())
    network = setup.network
    # Requirements go into a build environment with network first; the backend then builds in the
    # sandbox, without network unless build.network allows it (a build.requires / build.isolation
    # spec prepares the same way, e.g. for a setup.py importing torch).
    prepared = prepared_build(
        tree,
        sys.executable,
        f"{sys.version} {sysconfig.get_platform()}",
        setup,
        home=home,
        scratch=workdir,
        log=log,
    )
    build = [prepared.python, "-m", "build", "--no-isolation", "--outdir", str(outdir)]
    env = {**env, **prepared.env}
    writable = [workdir, outdir]
    log(f"sandbox: {protection_label(protection(), network=network)}")

    def run_backend(distribution: str, tree: Path, env: Mapping[str, str]) -> None:
        """What the backend asks for installed (with network), then pypa/build in the sandbox; a wheel
        build that would produce another version than the release's is refused before it compiles."""
        install_backend_requires(prepared, tree, distribution, env, log=log, writable=writable)
        if distribution == "wheel":
            planned = planned_version(
                prepared.python, tree, env, scratch=workdir, log=log, writable=writable, network=network
            )
            refuse_other_version(planned, version, what)
        _run_build(
            [*build, f"--{distribution}", str(tree)],
            env,
            what=what,
            home=home,
            log=log,
            tree=tree,
            writable=writable,
            network=network,
        )

    epoch = int(env["SOURCE_DATE_EPOCH"])
    if "sdist" in artifacts:
        run_backend("sdist", tree, env)
        (sdist,) = outdir.glob("*.tar.gz")
        # checked like the wheels, and before any of them compiles
        refuse_other_version(sdist_version(sdist), version, f"sdist {sdist.name}", "its PKG-INFO says version")
        normalise_sdist(sdist, epoch)
        if "wheel" in artifacts:
            tree = unpack_sdist(sdist, workdir / "unpacked")  # one line for a hostile member
    if "wheel" in artifacts:
        run_backend("wheel", tree, {**env, **prefix_map_env(str(tree), env)})
        for wheel in outdir.glob("*.whl"):
            normalise_wheel(wheel, epoch)


def build_distributions(
    project: Path | Source,
    *,
    name: str,
    version: str,
    artifacts: tuple[str, ...],
    env: Mapping[str, str],
    home: Path,
    log: Callable[[str], None] = print,
    source_date_epoch: int | None = None,
    pass_env: Sequence[str] = (),
    setup: BuildSetup | None = None,
) -> BuildResult:
    """Build (or reuse from cache) the asked artifacts from ``project``: a Source (see
    ``source.prepare_source``), or a path, taken as ``prepare_source(path, allow_dirty=True)`` takes
    it. ``source_date_epoch`` defaults to the source's. Raises BuildError with the log's tail.

    The build sees the allow-listed environment, ``env`` and the ``pass_env`` variables (whose
    values are not part of the cache key: a rotated token does not rebuild)."""
    source = project if isinstance(project, Source) else prepare_source(project, home=home, allow_dirty=True)
    epoch = source.date_epoch if source_date_epoch is None else source_date_epoch
    key = cache_key(source.identity, artifacts, env, version, epoch)
    directory = home / "builds" / canonicalize_name(name) / version / key[:16]
    cached = _load_cached(directory)
    if cached is not None:
        log(f"inputs unchanged (cache key {key[:16]}): reusing {', '.join(d.filename for d in cached)}")
        return BuildResult(cached, True, directory, key)

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=directory.parent))
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="build-", dir=home / "tmp"))
    build_env = child_env(
        extra={
            "SOURCE_DATE_EPOCH": str(epoch),
            # The export has no .git: setuptools-scm would find no version, or the repository around
            # $WHEELFLOW_HOME's, without these.
            "SETUPTOOLS_SCM_PRETEND_VERSION": version,
            "GIT_CEILING_DIRECTORIES": str(workdir.parent),
            **env,
        },
        pass_env=pass_env,
    )
    log(f"source: {source.description}")
    try:
        _build(
            source,
            artifacts,
            staging,
            workdir,
            build_env,
            what=f"{name} {version}",
            version=version,
            home=home,
            log=log,
            setup=setup,
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    dists = sorted((describe(p) for p in staging.iterdir() if p.is_file()), key=lambda d: d.filename)
    manifest = {
        "name": name,
        "version": version,
        "cache_key": key,
        "source": source.json(),
        "files": {d.filename: d.sha256 for d in dists},
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return BuildResult([describe(directory / d.filename) for d in dists], False, directory, key)
