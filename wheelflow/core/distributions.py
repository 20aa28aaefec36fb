"""Built files: hashing, filename parsing and the checks every file passes before upload."""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from wheelflow.core.childenv import child_env


@dataclass(frozen=True)
class Distribution:
    path: Path
    kind: str  # the artifact kind: "sdist" or "wheel"
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Finding:
    filename: str
    rule: str
    message: str  # one line: what is wrong and the fix
    warning: bool = False  # reported ("passed with warnings"), never blocks a release

    def __str__(self) -> str:
        return f"{self.filename}: [{self.rule}] {'warning: ' if self.warning else ''}{self.message}"


def blocking(findings: list[Finding]) -> list[Finding]:
    """The findings that fail a check (warnings only get reported)."""
    return [f for f in findings if not f.warning]


def warnings_line(findings: list[Finding]) -> str:
    """``passed with warnings: ...`` for a checklist row, or "" when there is none."""
    warned = [str(f) for f in findings if f.warning]
    return "passed with warnings: " + "; ".join(warned) if warned else ""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_kind_of(filename: str) -> str | None:
    if filename.endswith(".whl"):
        return "wheel"
    if filename.endswith(".tar.gz") or filename.endswith(".zip"):
        return "sdist"
    return None


@functools.lru_cache(maxsize=8192)  # asked of each file by every check and route; a release has thousands
def parse_filename(filename: str) -> tuple[NormalizedName, Version] | None:
    """(normalised name, version) from a wheel or sdist filename, or None if it does not parse."""
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            return name, version
        if artifact_kind_of(filename) == "sdist":
            return parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return None


def describe(path: Path) -> Distribution:
    artifact_kind = artifact_kind_of(path.name)
    if artifact_kind is None:
        raise ValueError(f"{path.name} is neither a wheel nor an sdist")
    return Distribution(path=path, kind=artifact_kind, sha256=sha256_of(path))


def check_filenames(
    dists: list[Distribution], name: str, version: str | Mapping[str, str], artifacts: tuple[str, ...]
) -> list[Finding]:
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
            findings.append(
                Finding(
                    dist.filename,
                    "filename",
                    "does not parse as a wheel or sdist filename (PEP 427/625); fix: let the build backend name it",
                )
            )
            continue
        file_name, file_version = parsed
        wanted_version = Version(version if isinstance(version, str) else version.get(dist.filename, str(file_version)))
        if file_name != wanted_name:
            findings.append(
                Finding(
                    dist.filename,
                    "name",
                    f"names project {file_name!r}, the release is {wanted_name!r}; fix: set the spec's name to the distribution name",
                )
            )
        if file_version != wanted_version:
            findings.append(
                Finding(
                    dist.filename,
                    "version",
                    f"carries version {file_version}, the release is {wanted_version}; fix: make the build read the released version",
                )
            )
    sdists = [d for d in dists if d.kind == "sdist"]
    if len(sdists) > 1:
        findings.append(
            Finding(
                sdists[1].filename, "one-sdist", "a second sdist for this version; indexes accept only one per release"
            )
        )
    for artifact_kind in artifacts:
        if not any(d.kind == artifact_kind for d in dists):
            findings.append(
                Finding(
                    f"<{artifact_kind}>",
                    "missing-artifact",
                    f"the spec asks for a {artifact_kind} but none was built; fix: check the build log",
                )
            )
    return findings


def twine_messages(output: str) -> list[tuple[str, str]]:
    """(level, message) from ``twine check`` output: colours stripped, wrapped lines joined.

    twine prints through rich, which wraps at the terminal's width (a filename could come out as
    ``...-py3-non e-any.whl``): the lines before the first WARNING/ERROR are the wrapped "Checking
    FILE: verdict" header, and a line after one continues it.
    """
    messages: list[tuple[str, str]] = []
    for raw in re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines():
        line = raw.strip()
        level = re.match(r"(WARNING|ERROR)\s+(.*)", line)
        if level:
            messages.append((level.group(1), level.group(2)))
        elif line and messages:
            messages[-1] = (messages[-1][0], f"{messages[-1][1]} {line}")
    return messages


def twine_check(paths: list[Path], *, strict: bool = False, chunk: int = 100) -> list[Finding]:
    """``twine check`` on each file: metadata and long description render.

    Its errors fail; its warnings (e.g. no long description, which the public index accepts) are
    warning findings, unless ``strict`` ([tool.wheelflow.checks] strict = true) makes them fail.
    One twine process checks up to ``chunk`` files: an interpreter start with twine's imports costs
    ~0.4 s, 200 s for a 500-wheel matrix. A file twine did not finish (it stops at a file it cannot
    read) is checked again alone.
    """
    findings = []
    for start in range(0, len(paths), chunk):
        group = paths[start : start + chunk]
        _, output = _run_twine_check(group)  # per file, its section's verdict counts, not the exit code
        sections = _twine_sections(output)
        for path in group:
            section = sections.get(str(path))
            if section is None or not re.match(r"\s*(PASSED|FAILED)", section):
                code, alone = _run_twine_check([path])
                findings += _twine_findings(path, alone, code != 0, strict)
            else:
                findings += _twine_findings(path, section, section.lstrip().startswith("FAILED"), strict)
    return findings


def _run_twine_check(paths: list[Path]) -> tuple[int, str]:
    # A wide terminal: rich then wraps no line (a long filename stays whole).
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", *map(str, paths)],
        capture_output=True,
        text=True,
        env=child_env(extra={"COLUMNS": "100000", "NO_COLOR": "1"}),
    )
    return proc.returncode, re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)


def _twine_sections(output: str) -> dict[str, str]:
    """twine's output per file: each file's starts at its "Checking PATH: " line (the verdict follows)."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in output.splitlines():
        header = re.match(r"Checking (.+?): (.*)", line.strip())
        if header:
            current = header.group(1)
            sections[current] = header.group(2) + "\n"
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def _twine_findings(path: Path, output: str, failed: bool, strict: bool) -> list[Finding]:
    findings = []
    messages = twine_messages(output.replace(str(path), path.name))
    errors = [text for level, text in messages if level == "ERROR"]
    warned = [text for level, text in messages if level == "WARNING"]
    if failed and not errors:  # a crash (a file that is no archive): its last line says why
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        errors = [lines[-1] if lines else "twine check failed"]
    if errors:
        findings.append(
            Finding(
                path.name, "twine-check", f"{' '.join(errors)[:300].rstrip('.')}; fix: correct the package metadata"
            )
        )
    if warned:
        tail = (
            "fix: add the metadata, or drop [tool.wheelflow.checks] strict = true"
            if strict
            else "the index accepts this ([tool.wheelflow.checks] strict = true makes it fail)"
        )
        findings.append(
            Finding(path.name, "twine-check", f"{' '.join(warned)[:300].rstrip('.')}; {tail}", warning=not strict)
        )
    return findings
