"""Fresh Python environments for smoke tests, made with uv (or venv + pip where uv is missing).

uv creates an environment and installs a local wheel in tens of milliseconds (its cache links the
files); ``python -m venv`` plus pip takes seconds. A 96-cell matrix has 96 smoke tests: that is the
difference between seconds and minutes.

This module decides what an installer and a smoke command see: the allow-listed environment of
:mod:`wheelflow.core.childenv`, no pip or uv configuration file (no extra index or find-links sneaks in),
and the environment activated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from wheelflow.core.childenv import child_env
from wheelflow.core.errors import EnvCreationError

PIP, UV = "pip", "uv"


def find_uv() -> str | None:
    """uv's binary: the one installed next to this interpreter (the uv package), else one on PATH."""
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.exists() else shutil.which("uv")


def installer_env(venv: Path | None = None) -> dict[str, str]:
    """The environment of an installer or a smoke command; with ``venv``, that environment activated."""
    env = child_env(
        extra={
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "UV_NO_CONFIG": "1",
            "UV_PYTHON_DOWNLOADS": "never",
        }
    )
    if venv is not None:
        env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return env


@dataclass(frozen=True)
class PyEnv:
    """A fresh environment at ``path``, filled by ``installer`` (uv's binary at ``uv``)."""

    path: Path
    installer: str
    uv: str | None = None

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def install_command(self, *args: str) -> list[str]:
        """The command line that installs ``args`` (requirements and options) into this environment."""
        if self.installer == UV:
            return [str(self.uv), "pip", "install", "--python", str(self.python), *args]
        # This interpreter's pip installs into the (pip-less) environment: no ensurepip per environment.
        return [sys.executable, "-m", "pip", "--python", str(self.python), "install", "--no-cache-dir", *args]


def create_env(path: Path, interpreter: str, installer: str | None = None) -> PyEnv:
    """A new environment at ``path`` filled by ``installer``; by default uv's where uv is installed,
    else venv with pip."""
    uv = find_uv() if installer in (None, UV) else None
    if installer == UV and uv is None:
        raise EnvCreationError("uv is not installed; fix: pip install uv")
    cmd = (
        [uv, "venv", "--quiet", "--python", interpreter, str(path)]
        if uv
        else [interpreter, "-m", "venv", "--without-pip", str(path)]
    )
    done = subprocess.run(cmd, capture_output=True, text=True, env=installer_env())
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise EnvCreationError(f"{' '.join(cmd[:2])} failed: {last[-1] if last else f'exit {done.returncode}'}")
    return PyEnv(path, UV if uv else PIP, uv)
