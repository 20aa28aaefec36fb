"""A real CUDA torch for tests, from a wheel cache kept between runs (torch and its dependencies are
about 3 GB of wheels: downloaded once per machine, then installed offline).

    wheels = torch_wheels()                       # the cache, downloaded with pip when torch is missing
    python = torch_env(tmp / "venv")              # a venv with that torch (uv when present, else pip)
    install_args(wheels)                          # ["--no-index", "--find-links", DIR] for other installs

The cache is ``$WHEELFLOW_TEST_WHEELS`` or ``~/.cache/wheelflow-tests/wheels``; CI keeps it between runs.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

TORCH = "2.14.1"  # the CUDA 13.0 build the public index serves for cp311 / Linux x86_64


def wheel_cache() -> Path:
    return Path(os.environ.get("WHEELFLOW_TEST_WHEELS") or Path.home() / ".cache" / "wheelflow-tests" / "wheels")


def torch_wheels(version: str = TORCH, cache: Path | None = None) -> Path:
    """The folder holding torch ``version`` and every dependency wheel it needs on this Python; when it
    lacks torch, ``pip download`` (pip's own configuration picks the index) fills it first."""
    cache = cache or wheel_cache()
    if any(cache.glob(f"torch-{version}-*.whl")):
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".filling.lock", "a") as lock:  # two test runs (or workers) fill it once
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if any(cache.glob(f"torch-{version}-*.whl")):  # the other one filled it meanwhile
            return cache
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                f"torch=={version}",
                "-d",
                str(cache),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"cannot download torch=={version} into {cache}: {last}")
    return cache


def install_args(cache: Path) -> list[str]:
    """pip/uv arguments that install from the cache only."""
    return ["--no-index", "--find-links", str(cache)]


def uv() -> str | None:
    return shutil.which("uv") or next((str(p) for p in [Path(sys.executable).with_name("uv")] if p.exists()), None)


def torch_env(venv: Path, version: str = TORCH, extra: tuple[str, ...] = ()) -> Path:
    """A virtual environment (with pip, for builds without isolation) holding torch ``version`` and
    ``extra`` from the cache; its python. uv installs when present (hard links from its cache)."""
    cache = torch_wheels(version)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    requirements = [f"torch=={version}", *extra]
    tool = uv()
    if tool:
        command = [tool, "pip", "install", "--quiet", "--python", str(python), *install_args(cache), *requirements]
    else:
        command = [str(python), "-m", "pip", "install", "--quiet", *install_args(cache), *requirements]
    subprocess.run(command, check=True)
    return python
