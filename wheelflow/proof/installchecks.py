"""Install checks: the commands a target's users install the release with, run with pip and with uv,
once per Python of the matrix (not per cell), each in a fresh environment.

The proof that the release installs and works is the pinned install of
:func:`wheelflow.proof.verification.install_and_smoke`. These checks answer the other question: *which
file does a user get* when typing the documented command? An installer that finds no wheel for its
Python quietly builds the sdist (for hours, for a CUDA project): that is a failure, named as one.
Dependencies are not installed here (``--no-deps``): they resolve in the pinned check, from the
spec's dependency source, so no other index is ever asked for this project's name.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from urllib.parse import unquote

from packaging.utils import canonicalize_name

from wheelflow.core.distributions import parse_filename
from wheelflow.core.errors import EnvCreationError
from wheelflow.core.pyenvs import PIP, UV, create_env, installer_env
from wheelflow.core.redaction import redact, redact_url
from wheelflow.core.sandbox import run_step_captured
from wheelflow.index.simple_api import ServedFile
from wheelflow.proof.verification import InstallResult, pip_failure

INSTALLERS = (PIP, UV)


@dataclass(frozen=True)
class InstallCheck:
    args: tuple[str, ...]  # what follows `pip install`: requirements and options
    installer: str  # pip or uv
    python: str | None  # a matrix python value; None: the release's own interpreter

    def shown(self) -> str:
        """The command line as the user types it, credentials in URLs masked."""
        words = ["uv", "pip", "install"] if self.installer == UV else ["pip", "install"]
        return " ".join(words + [redact_url(a) if "://" in a else a for a in self.args])

    @property
    def runtime(self) -> str:
        return f"python{self.python}" if self.python else "this-python"

    def title(self, target: str) -> str:
        return f"install check on {target}: {self.shown()} ({self.runtime})"


def install_commands(
    commands: Sequence[str],
    name: str,
    version: str,
    simple_url: str,
    sub_indexes: Iterable[str] = (),
    option: str = "--index-url",
) -> list[tuple[str, ...]]:
    """Each install command's words after ``pip install``, placeholders filled in. Default: the pinned
    release from the target's index, and from each variant sub-index it serves; ``option`` is how the
    target's kind is pointed at (``--index-url`` for a Simple API, ``--find-links`` for a page of links)."""
    if commands:
        return [tuple(shlex.split(c.format(name=name, version=version, index=simple_url)))[2:] for c in commands]
    pinned = f"{name}=={version}"
    return [(pinned, option, simple_url), *[(pinned, option, sub) for sub in sub_indexes]]


def needs_dependencies(wheels: Iterable[Path]) -> bool:
    """A wheel of the release requires another project (Requires-Dist outside an extra)."""
    from wheelflow.checks.audits import read_metadata  # checks sit below proof; imported where used

    for wheel in wheels:
        metadata = read_metadata(wheel) if wheel.name.endswith(".whl") else None
        for line in (metadata.get_all("Requires-Dist") or []) if metadata else []:
            if "extra ==" not in line.replace('extra=="', 'extra == "'):
                return True
    return False


def user_install_command(
    name: str, version: str, simple_url: str, dependency_index: str | None, needs_deps: bool
) -> str:
    """The command a user pastes to install this release from the target: the target's index first and
    only, plus the configured dependency index where the release requires other projects."""
    words = ["pip", "install", "--index-url", simple_url]
    if needs_deps and dependency_index and dependency_index.rstrip("/") != simple_url.rstrip("/"):
        words += ["--extra-index-url", dependency_index]
    return shlex.join([*words, f"{name}=={version}"])


def runtimes(pythons: Iterable[str]) -> tuple[str | None, ...]:
    """The Pythons the release's wheels are for (the matrix's python axis), else this interpreter."""
    return tuple(sorted(set(pythons), key=lambda p: tuple(int(x) for x in re.findall(r"\d+", p)))) or (None,)


def plan(commands: list[tuple[str, ...]], pythons: tuple[str | None, ...]) -> list[InstallCheck]:
    """Every command × runtime × installer."""
    return [InstallCheck(args, installer, python) for args, python, installer in product(commands, pythons, INSTALLERS)]


def variant_of(filename: str) -> str:
    """The wheel's local version label (its variant), or "plain"."""
    version = filename.split("-")[1] if filename.count("-") >= 2 else ""
    return version.split("+", 1)[1] if "+" in version else "plain"


_UV_SELECTED = re.compile(r"Selecting: (\S+)==\S+ \[[^\]]*\] \(([^)]+)\)")
_PIP_FETCHED = re.compile(r"(?:Downloading|Processing|Using cached) (?:\S*/)?([^/\s]+\.(?:tar\.gz|zip|whl))\b")


def selected_file(installer: str, output: str, report: Path, name: str) -> str | None:
    """The file of ``name`` the installer chose, also when the install then failed: that is how a
    source build that failed is still named as one. pip says it in its --report, uv in --verbose."""
    wanted = canonicalize_name(name)
    if installer == PIP and report.exists():
        for item in json.loads(report.read_text()).get("install", []):
            if canonicalize_name(item.get("metadata", {}).get("name", "")) == wanted:
                return unquote(item.get("download_info", {}).get("url", "").split("#")[0].rsplit("/", 1)[-1])
        return None
    if installer == UV:
        for found, filename in _UV_SELECTED.findall(output):
            if canonicalize_name(found) == wanted:
                return unquote(filename)
        return None
    # pip wrote no report (it failed before the end): the file it was downloading or building says it
    for filename in _PIP_FETCHED.findall(output):
        parsed = parse_filename(unquote(filename))
        if parsed and parsed[0] == wanted:
            return unquote(filename)
    return None


def run_install_check(
    check: InstallCheck,
    name: str,
    version: str,
    served: list[ServedFile],
    interpreter: str,
    *,
    workdir: Path | None = None,
    timeout: float = 900,
    log: Callable[[str], None] = print,
) -> InstallResult:
    """The check's command in a fresh environment of ``interpreter`` (no cache, no dependencies):
    passes when a wheel of this release on the index was installed, naming its variant."""
    root = Path(tempfile.mkdtemp(prefix="wheelflow-install-check-", dir=workdir))
    shown = check.shown()
    try:
        try:
            pyenv = create_env(root / "venv", interpreter, check.installer)
        except EnvCreationError as exc:
            return InstallResult(False, None, f"{shown}: no environment: {exc}")
        report = root / "report.json"
        own = (
            ["--no-deps", "--report", str(report)]
            if check.installer == PIP
            else ["--no-deps", "--no-cache", "--verbose"]
        )
        log("$ " + shown)
        # An installer that finds only the sdist builds it, running the project's setup.py: in the
        # sandbox, with the network an install needs, writing only its own folder.
        step, output = run_step_captured(
            pyenv.install_command(*own, *check.args), env=installer_env(), cwd=root, writable=[root], timeout=timeout
        )
        if step.timed_out:
            return InstallResult(False, None, f"{shown} did not finish within {timeout:.0f} s")
        output = redact(output.strip())
        chosen = selected_file(check.installer, output, report, name)
        if chosen is not None and not chosen.endswith(".whl"):
            outcome = "and failed" if step.code != 0 else "and installed that"
            return InstallResult(
                False,
                chosen,
                f"{check.installer} built from the sdist {chosen} {outcome}: no wheel "
                f"on the index matches {check.runtime} on this platform; fix: publish a wheel for it, "
                "or correct the install command",
                output[-3000:],
            )
        if step.code != 0:
            return InstallResult(False, None, f"{shown} failed: {pip_failure(output)[:300]}", output[-3000:])
        if chosen is None or chosen not in {s.filename for s in served}:
            return InstallResult(
                False,
                chosen,
                f"{check.installer} installed {chosen or 'nothing'}, which is not a "
                f"file of {name} {version} on this index",
                output[-3000:],
            )
        return InstallResult(True, chosen, f"{check.installer} installed {chosen} (variant {variant_of(chosen)})")
    finally:
        shutil.rmtree(root, ignore_errors=True)
