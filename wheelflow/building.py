"""Build the sdist and wheel(s) with pypa/build in an isolated environment, with a build cache.

A build is cached under ``$WHEELFLOW_HOME/builds`` by the digest of its inputs (source tree, asked
artifacts, build environment, interpreter). Re-running a release therefore reuses the exact bytes
that were built (and perhaps already uploaded) instead of producing new ones under the same names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from packaging.utils import canonicalize_name

from . import __version__
from .childenv import child_env
from .distributions import Distribution, describe, sha256_of
from .errors import BuildError
from .redaction import redact

_SKIP_DIRS = {".git", ".hg", ".wheelflow", "__pycache__", "build", "dist", ".venv", ".tox", ".pytest_cache"}
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BuildResult:
    dists: list[Distribution]
    cached: bool
    directory: Path
    cache_key: str


def _source_files(project: Path) -> list[Path]:
    listed = subprocess.run(
        ["git", "-C", str(project), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, env=child_env(),
    )
    if listed.returncode == 0:
        names = [n for n in listed.stdout.decode().split("\0") if n]
        return sorted(p for p in (project / n for n in names) if p.is_file())
    files = []
    for root, dirs, filenames in os.walk(project):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        files.extend(Path(root) / f for f in filenames)
    return sorted(files)


def source_digest(project: Path) -> str:
    """sha256 over every source file's relative path and content (git's view when it is a repository)."""
    digest = hashlib.sha256()
    for path in _source_files(project):
        digest.update(path.relative_to(project).as_posix().encode() + b"\0")
        digest.update(sha256_of(path).encode() + b"\0")
    return digest.hexdigest()


def cache_key(project: Path, artifacts: tuple[str, ...], env: Mapping[str, str], version: str) -> str:
    inputs = {
        "source": source_digest(project),
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


def first_error_line(lines: "deque[str] | list[str]") -> str:
    """The line that says what went wrong: the first compiler/linker error, else the last line."""
    for line in lines:
        lowered = line.lower()
        if ("error" in lowered or "fatal" in lowered) and "backend subprocess exited" not in lowered:
            return line.strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def build_fix(tail: "deque[str] | list[str]", home: Path) -> str:
    if any("No space left on device" in line or "Errno 28" in line for line in tail):
        return f"free space on the disk of {home} (its builds/ cache can be deleted) or set WHEELFLOW_HOME to a larger disk"
    return "see the build log above"


def build_distributions(
    project: Path,
    *,
    name: str,
    version: str,
    artifacts: tuple[str, ...],
    env: Mapping[str, str],
    home: Path,
    log: Callable[[str], None] = print,
    source_date_epoch: int | None = None,
    pass_env: Sequence[str] = (),
) -> BuildResult:
    """Build (or reuse from cache) the asked artifacts; raises BuildError with the log's tail.

    The build sees the allow-listed environment, ``env`` and the ``pass_env`` variables (whose
    values are not part of the cache key: a rotated token does not rebuild)."""
    key = cache_key(project, artifacts, env, version)
    directory = home / "builds" / canonicalize_name(name) / version / key[:16]
    cached = _load_cached(directory)
    if cached is not None:
        log(f"inputs unchanged (cache key {key[:16]}): reusing {', '.join(d.filename for d in cached)}")
        return BuildResult(cached, True, directory, key)

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=directory.parent))
    # Both kinds: pypa/build makes the sdist, then the wheel from it, which proves the sdist builds.
    kind_flags = [] if set(artifacts) == {"sdist", "wheel"} else [f"--{artifacts[0]}"]
    cmd = [sys.executable, "-m", "build", *kind_flags, "--outdir", str(staging), str(project)]
    build_env = child_env(extra=env, pass_env=pass_env)
    if source_date_epoch is not None:
        build_env.setdefault("SOURCE_DATE_EPOCH", str(source_date_epoch))
    log("$ " + " ".join(cmd))
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=build_env, text=True,
                            errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        line = redact(line.rstrip())  # the build may print its environment: passed tokens included
        tail.append(line)
        log(line)
    if proc.wait() != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(
            f"build of {name} {version} failed (exit {proc.returncode}): {first_error_line(tail)[:200]}; "
            f"fix: {build_fix(tail, home)}",
            log_tail="\n".join(tail),
        )
    dists = sorted((describe(p) for p in staging.iterdir() if p.is_file()), key=lambda d: d.filename)
    manifest = {"name": name, "version": version, "cache_key": key, "files": {d.filename: d.sha256 for d in dists}}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return BuildResult([describe(directory / d.filename) for d in dists], False, directory, key)
