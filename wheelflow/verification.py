"""Prove a release is served: every expected file listed with its sha256, then a real install.

The comparison is a plain function; polling takes its clock and sleep as arguments, so tests drive
it without waiting.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import unquote

import httpx
from packaging.utils import canonicalize_name

from .childenv import child_env
from .errors import IndexReadError
from .redaction import redact
from .simple_api import ServedFile, download_sha256, files_for_version, list_project_files

VERIFIED, SERVED, MISSING, HASH_MISMATCH = "verified", "served", "missing", "hash-mismatch"


@dataclass(frozen=True)
class FileStatus:
    filename: str
    sha256: str | None  # the local (expected) sha256, or the served one when there is no local file
    status: str
    served_sha256: str | None = None

    def describe(self) -> str:
        if self.status == MISSING:
            return f"{self.filename} is not served"
        if self.status == HASH_MISMATCH:
            return f"{self.filename} is served with sha256 {self.served_sha256}, the built file has {self.sha256}"
        return f"{self.filename} {self.status}"


def compare(expected: Mapping[str, str | None], served: list[ServedFile]) -> list[FileStatus]:
    """Status of each expected file (sha256 None: only presence is expected) against a listing."""
    by_name = {s.filename: s for s in served}
    statuses = []
    for filename, sha256 in expected.items():
        found = by_name.get(filename)
        if found is None:
            statuses.append(FileStatus(filename, sha256, MISSING))
        elif sha256 is None:
            statuses.append(FileStatus(filename, found.sha256, SERVED, found.sha256))
        elif found.sha256 != sha256:
            statuses.append(FileStatus(filename, sha256, HASH_MISMATCH, found.sha256))
        else:
            statuses.append(FileStatus(filename, sha256, VERIFIED, found.sha256))
    return statuses


def read_served(client: httpx.Client, simple_url: str, name: str, version: str) -> list[ServedFile]:
    """This version's files on the index, each with its sha256 (downloaded when the listing has none)."""
    files = files_for_version(list_project_files(client, simple_url, name), name, version)
    return [f if f.sha256 else ServedFile(f.filename, f.url, download_sha256(client, f.url), f.upload_time, f.yanked)
            for f in files]


def poll_until_served(
    read: Callable[[], list[ServedFile]],
    expected: Mapping[str, str | None],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_wait: Callable[[str], None] = lambda message: None,
    first_delay: float = 0.25,
    max_delay: float = 2.0,
) -> tuple[list[FileStatus], list[ServedFile]]:
    """Read the listing until every expected file is there, a hash mismatch shows, or the deadline passes.

    Index caches lag behind uploads, so a missing file is re-read with exponential backoff capped at
    ``max_delay`` (a file is seen at most that long after it appears); a mismatching hash is final at
    once (a served filename never changes its bytes).
    """
    deadline = clock() + timeout
    delay = first_delay
    while True:
        try:
            served = read()
        except IndexReadError as exc:
            if clock() >= deadline:
                raise
            on_wait(f"index not readable yet ({exc}); retrying")
            served = None
        if served is not None:
            statuses = compare(expected, served)
            missing = [s.filename for s in statuses if s.status == MISSING]
            if not missing or any(s.status == HASH_MISMATCH for s in statuses) or clock() >= deadline:
                return statuses, served
            on_wait(f"not served yet: {', '.join(missing)}; reading again in {delay:.1f} s")
        sleep(max(0.0, min(delay, deadline - clock())))
        delay = min(delay * 2, max_delay)


@dataclass(frozen=True)
class InstallResult:
    ok: bool
    installed: str | None  # filename pip installed
    message: str  # one line
    output_tail: str = ""


def _clean_pip_env() -> dict[str, str]:
    # The install must come from the index under test: no user or site pip configuration, and
    # (the allow-list passes no PIP_* but the CA) no extra indexes or find-links from the environment.
    return child_env(extra={"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})


def pip_failure(output: str) -> str:
    """The line of pip's output that says what went wrong (its last line is often a bare hash)."""
    if "DO NOT MATCH THE HASHES" in output:
        found = re.findall(r"/([^/\s#]+\.(?:whl|tar\.gz))(?:[#:\s]|$)", output) or ["file"]
        expected = re.search(r"Expected sha256 ([0-9a-f]{64})", output)
        got = re.search(r"Got\s+([0-9a-f]{64})", output)
        detail = f" (listed sha256 {expected.group(1)[:16]}…, downloaded {got.group(1)[:16]}…)" if expected and got else ""
        return f"the downloaded {found[0]} does not match the sha256 the index lists{detail}: the index or a proxy served damaged bytes"
    errors = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR:")]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return errors[0] if errors else (lines[-1] if lines else "no output")


def install_and_smoke(
    name: str,
    version: str,
    simple_url: str,
    served: list[ServedFile],
    *,
    smoke: str | None,
    workdir: Path | None = None,
    extra_index_urls: tuple[str, ...] = (),
    timeout: float = 900,
    log: Callable[[str], None] = print,
) -> InstallResult:
    """``pip install --no-cache-dir NAME==VERSION`` from the index into a fresh venv, then the smoke command."""
    root = Path(tempfile.mkdtemp(prefix="wheelflow-verify-", dir=workdir))
    try:
        venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True,
                       env=child_env())
        python = venv / "bin" / "python"
        report_path = root / "pip-report.json"
        env = _clean_pip_env()
        cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-cache-dir",
               "--index-url", simple_url, *[a for u in extra_index_urls for a in ("--extra-index-url", u)],
               "--report", str(report_path), f"{name}=={version}"]
        log("$ " + " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=root)
        except subprocess.TimeoutExpired:
            return InstallResult(False, None, f"pip install {name}=={version} did not finish within {timeout:.0f} s")
        output = redact((proc.stdout + proc.stderr).strip())
        if proc.returncode != 0:
            return InstallResult(False, None, f"pip install {name}=={version} failed: {pip_failure(output)[:300]}",
                                 output[-3000:])
        installed = _installed_file(report_path, name)
        by_name = {s.filename: s for s in served}
        if installed is None or installed[0] not in by_name:
            got = installed[0] if installed else "nothing"
            return InstallResult(False, got, f"pip installed {got}, which is not a file of {name} {version} on this index", output[-3000:])
        filename, sha256 = installed
        if sha256 and by_name[filename].sha256 and sha256 != by_name[filename].sha256:
            return InstallResult(False, filename, f"pip installed {filename} with sha256 {sha256}, the index lists {by_name[filename].sha256}")
        if not smoke:
            return InstallResult(True, filename, f"installed {filename}", output[-3000:])
        smoke_env = {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
        log(f"$ {smoke}")
        try:
            run = subprocess.run(["/bin/sh", "-c", smoke], capture_output=True, text=True, env=smoke_env, cwd=root,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            return InstallResult(False, filename, f"smoke command did not finish within {timeout:.0f} s")
        smoke_output = redact((run.stdout + run.stderr).strip())  # it may print its environment
        for line in smoke_output.splitlines()[-20:]:
            log(line)
        if run.returncode != 0:
            last = smoke_output.splitlines()[-1] if smoke_output else ""
            return InstallResult(False, filename, f"smoke command failed on {filename} (exit {run.returncode}): {last[:300]}", smoke_output[-3000:])
        return InstallResult(True, filename, f"installed {filename}; smoke ok", smoke_output[-3000:])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _installed_file(report_path: Path, name: str) -> tuple[str, str | None] | None:
    report = json.loads(report_path.read_text())
    wanted = canonicalize_name(name)
    for item in report.get("install", []):
        if canonicalize_name(item.get("metadata", {}).get("name", "")) != wanted:
            continue
        info = item.get("download_info", {})
        filename = unquote(info.get("url", "").split("#")[0].rsplit("/", 1)[-1])  # "+" arrives as %2B
        archive = info.get("archive_info", {})
        sha256 = (archive.get("hashes") or {}).get("sha256")
        if sha256 is None and str(archive.get("hash", "")).startswith("sha256="):
            sha256 = archive["hash"].split("=", 1)[1]
        return filename, sha256
    return None
