"""Built files: hashing, filename parsing and the checks every file passes before upload."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from .childenv import child_env


@dataclass(frozen=True)
class Distribution:
    path: Path
    kind: str  # "sdist" or "wheel"
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Finding:
    filename: str
    rule: str
    message: str  # one line: what is wrong and the fix

    def __str__(self) -> str:
        return f"{self.filename}: [{self.rule}] {self.message}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def kind_of(filename: str) -> str | None:
    if filename.endswith(".whl"):
        return "wheel"
    if filename.endswith(".tar.gz") or filename.endswith(".zip"):
        return "sdist"
    return None


def parse_filename(filename: str) -> tuple[NormalizedName, Version] | None:
    """(normalised name, version) from a wheel or sdist filename, or None if it does not parse."""
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            return name, version
        if kind_of(filename) == "sdist":
            return parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return None


def describe(path: Path) -> Distribution:
    kind = kind_of(path.name)
    if kind is None:
        raise ValueError(f"{path.name} is neither a wheel nor an sdist")
    return Distribution(path=path, kind=kind, sha256=sha256_of(path))


def check_filenames(dists: list[Distribution], name: str, version: str | Mapping[str, str],
                    artifacts: tuple[str, ...]) -> list[Finding]:
    """Every filename parses, names this project and version, appears once; every asked kind was built.

    ``version`` is the release version, or per filename the version expected (a matrix cell's
    variant wheel carries the cell's local label: 1.0+cu130).
    """
    findings: list[Finding] = []
    wanted_name = canonicalize_name(name)
    seen: set[str] = set()
    for dist in dists:
        if dist.filename in seen:
            findings.append(Finding(dist.filename, "duplicate", "built twice; fix: clean the output directory"))
        seen.add(dist.filename)
        parsed = parse_filename(dist.filename)
        if parsed is None:
            findings.append(Finding(dist.filename, "filename", "does not parse as a wheel or sdist filename (PEP 427/625); fix: let the build backend name it"))
            continue
        file_name, file_version = parsed
        wanted_version = Version(version if isinstance(version, str) else version.get(dist.filename, str(file_version)))
        if file_name != wanted_name:
            findings.append(Finding(dist.filename, "name", f"names project {file_name!r}, the release is {wanted_name!r}; fix: set the spec's name to the distribution name"))
        if file_version != wanted_version:
            findings.append(Finding(dist.filename, "version", f"carries version {file_version}, the release is {wanted_version}; fix: make the build read the released version"))
    sdists = [d for d in dists if d.kind == "sdist"]
    if len(sdists) > 1:
        findings.append(Finding(sdists[1].filename, "one-sdist", "a second sdist for this version; indexes accept only one per release"))
    for kind in artifacts:
        if not any(d.kind == kind for d in dists):
            findings.append(Finding(f"<{kind}>", "missing-artifact", f"the spec asks for a {kind} but none was built; fix: check the build log"))
    return findings


def twine_check(paths: list[Path]) -> list[Finding]:
    """``twine check --strict`` on each file: metadata and long description render."""
    findings = []
    for path in paths:
        proc = subprocess.run(
            [sys.executable, "-m", "twine", "check", "--strict", str(path)],
            capture_output=True, text=True, env=child_env(),
        )
        if proc.returncode != 0:
            text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # twine colours its output
            text = text.replace(str(path), path.name)
            detail = " ".join(line.strip() for line in text.splitlines() if line.strip() and "Checking" not in line)
            findings.append(Finding(path.name, "twine-check", f"{detail[:300]}; fix: correct the package metadata"))
    return findings
