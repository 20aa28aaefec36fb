"""Audits of built files, run by `wheelflow check` and by the release flow before every upload.

Each rule comes from a real release incident: a wheel renamed to a CUDA variant whose METADATA
still says another version (pip discards it as "inconsistent version"); a torch pin that differs
from the torch the wheel was built against (ABI errors at import); a second sdist; a file over the
index's size limit; a project running out of its size budget halfway through a matrix; a wheel
whose RECORD does not match its contents; a wheel entry ``../../x`` that RECORD lists with its right
hash and pip writes outside site-packages; a manylinux_2_17 wheel whose extension needs glibc 2.34.
"""

from __future__ import annotations

import email.parser
import tarfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from wheelflow.checks.archives import ARCHIVE_RULES, audit_archive
from wheelflow.checks.platformtags import platform_tag_findings
from wheelflow.core.distributions import Distribution, Finding, artifact_kind_of, parse_filename
from wheelflow.core.sizes import human_size


@dataclass(frozen=True)
class Limits:
    """What a target accepts."""

    max_file_size: int | None = None
    project_budget: int | None = None  # bytes this release may add to the project on that index
    allow_local_versions: bool = True
    manylinux_only: bool = False  # plain linux_* platform tags refused (the public index)


def read_metadata(path: Path) -> email.message.Message | None:
    """The core metadata: a wheel's .dist-info/METADATA or an sdist's PKG-INFO."""
    parser = email.parser.BytesParser()
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            return parser.parsebytes(zf.read(names[0])) if names else None
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path) as tf:
            members = [m for m in tf.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")]
            handle = tf.extractfile(members[0]) if members else None
            return parser.parsebytes(handle.read()) if handle else None
    return None


def audit_metadata(path: Path) -> list[Finding]:
    """METADATA Name and Version equal the filename's (normalised)."""
    parsed = parse_filename(path.name)
    if parsed is None:
        return [
            Finding(
                path.name, "filename", "does not parse as a wheel or sdist filename; fix: let the build backend name it"
            )
        ]
    try:
        metadata = read_metadata(path)
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        return [Finding(path.name, "archive", f"cannot be read ({exc}); fix: rebuild it")]
    if metadata is None:
        return [
            Finding(path.name, "metadata", "has no METADATA/PKG-INFO; fix: rebuild it with a standard build backend")
        ]
    findings = []
    name, version = parsed
    meta_name, meta_version = metadata.get("Name", ""), metadata.get("Version", "")
    if canonicalize_name(meta_name) != name:
        findings.append(
            Finding(
                path.name,
                "metadata-name",
                f"METADATA says Name {meta_name!r}, the filename says {name!r}; fix: rebuild instead of renaming the file",
            )
        )
    try:
        same = Version(meta_version) == version
    except InvalidVersion:
        same = False
    if not same:
        findings.append(
            Finding(
                path.name,
                "metadata-version",
                f"METADATA says Version {meta_version!r}, the filename says {version}; pip rejects it as "
                "an inconsistent version; fix: rebuild with the version set (e.g. the local suffix) instead of renaming",
            )
        )
    return findings


def audit_cell(path: Path, cell: Mapping[str, str]) -> list[Finding]:
    """Pins of matrix axes (e.g. torch==X) equal the cell's value; the interpreter tag matches the cell's python."""
    findings: list[Finding] = []
    if not path.name.endswith(".whl") or not cell:
        return findings
    metadata = read_metadata(path)
    axes = {canonicalize_name(axis): value for axis, value in cell.items() if axis != "python"}
    for line in (metadata.get_all("Requires-Dist") or []) if metadata else []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        axis_value = axes.get(canonicalize_name(req.name))
        if axis_value is None or req.marker is not None and "extra" in str(req.marker):
            continue
        pins = [s.version for s in req.specifier if s.operator in ("==", "===")]
        if pins and not any(_same_release(pin, axis_value) for pin in pins):
            findings.append(
                Finding(
                    path.name,
                    "axis-pin",
                    f"Requires-Dist {line!r} but the cell built it against {req.name} {axis_value}; "
                    "users get ABI errors at import; fix: derive the pin from the build environment",
                )
            )
    python = cell.get("python")
    if python:
        _name, _version, _build, tags = parse_wheel_filename(path.name)
        if not any(_tag_runs_on(tag, python) for tag in tags):
            found = ", ".join(sorted({f"{t.interpreter}-{t.abi}" for t in tags}))
            findings.append(
                Finding(
                    path.name,
                    "python-tag",
                    f"tags {found} do not match the cell's Python {python}; fix: build it with that interpreter",
                )
            )
    return findings


def _same_release(pin: str, value: str) -> bool:
    try:
        pinned, built = Version(pin.rstrip(".*")), Version(value)
    except InvalidVersion:
        return pin == value
    # torch==2.5.1 pins a build of torch 2.5.1+cu124 too: the local label is the CUDA flavour.
    return pinned == built or (not pinned.local and pinned.public == built.public)


def _tag_runs_on(tag: Tag, python: str) -> bool:
    major, _, minor = python.partition(".")
    wanted = f"{major}{minor}"
    if tag.interpreter in (f"cp{wanted}", f"py{wanted}", f"py{major}"):
        return True
    if tag.abi == "abi3" and tag.interpreter.startswith(f"cp{major}"):
        return int(tag.interpreter[2 + len(major) :] or 0) <= int(minor or 0)
    return False


def audit_target(
    dists: Iterable[Distribution], limits: Limits, target: str, served_sdists: Iterable[str] = ()
) -> list[Finding]:
    """Size limit, project budget, local versions, platform tags, one sdist: checked before any upload."""
    findings: list[Finding] = []
    dists = list(dists)
    for dist in dists:
        size = dist.path.stat().st_size
        if limits.max_file_size is not None and size > limits.max_file_size:
            findings.append(
                Finding(
                    dist.filename,
                    "file-size",
                    f"{human_size(size)} exceeds {target}'s limit of {human_size(limits.max_file_size)}; "
                    "fix: strip debug symbols, trim CUDA architectures, or ask the index for a larger limit",
                )
            )
        parsed = parse_filename(dist.filename)
        if parsed and parsed[1].local and not limits.allow_local_versions:
            findings.append(
                Finding(
                    dist.filename,
                    "local-version",
                    f"local version label +{parsed[1].local} is refused by {target}; "
                    "fix: route variant wheels to an index that accepts them (e.g. a per-CUDA index)",
                )
            )
        if dist.kind == "wheel" and limits.manylinux_only:
            platforms = {tag.platform for tag in parse_wheel_filename(dist.filename)[3]}
            if any(p.startswith("linux_") for p in platforms):
                findings.append(
                    Finding(
                        dist.filename,
                        "platform-tag",
                        f"platform tag {sorted(platforms)[0]} is refused by {target} (manylinux/musllinux only); "
                        "fix: auditwheel repair --exclude 'libcuda.so.*' --exclude 'libcudart.so.*' (keep the CUDA driver out)",
                    )
                )
    if limits.project_budget is not None:
        total = sum(d.path.stat().st_size for d in dists)
        if total > limits.project_budget:
            findings.append(
                Finding(
                    f"<{len(dists)} files>",
                    "project-budget",
                    f"this release adds {human_size(total)}, over {target}'s project budget of "
                    f"{human_size(limits.project_budget)}; nothing was uploaded; fix: drop cells, "
                    "delete old releases, or ask the index for a larger project limit",
                )
            )
    sdists = [d.filename for d in dists if d.kind == "sdist"]
    others = [s for s in served_sdists if s not in sdists]
    if len(sdists) + len(others) > 1:
        findings.append(
            Finding(
                (sdists[1:] or sdists)[0],
                "one-sdist",
                f"{target} accepts only one sdist per release ({', '.join(sorted(set(sdists + others)))}); "
                "fix: upload a single sdist",
            )
        )
    return findings


def audit_files(paths: Iterable[Path], cell: Mapping[str, str] | None = None) -> list[Finding]:
    """The per-file audits. First every entry is read (``archives``): names inside the install folder,
    no links, the unpacked size within budget, RECORD matching the contents; a file refused there is
    read by nothing else. Then metadata matches the filename, cell pins and tags, and a manylinux tag
    is one its binaries honour (``platformtags``: auditwheel's analysis)."""
    findings: list[Finding] = []
    for path in paths:
        if artifact_kind_of(path.name) is None:
            findings.append(
                Finding(path.name, "filename", "is neither a wheel nor an sdist; fix: pass built distributions")
            )
            continue
        read = audit_archive(path)
        findings += read
        if unreadable(read):
            continue
        findings += audit_metadata(path) + audit_cell(path, cell or {}) + platform_tag_findings(path)
    return findings


def unreadable(findings: Iterable[Finding]) -> set[str]:
    """The files the archive audit refused: nothing else may read them (no ABI gate, no twine check)."""
    return {f.filename for f in findings if f.rule in ARCHIVE_RULES and not f.warning}


def preflight(
    dists: list[Distribution],
    *,
    name: str | None = None,
    version: str | Mapping[str, str] | None = None,
    artifacts: tuple[str, ...] = (),
    cell: Mapping[str, str] | None = None,
    strict: bool = False,
) -> list[Finding]:
    """The pre-upload gate: everything checked before any upload, per file. `wheelflow check`, the
    release flow and backfill all run this one function (``audit_files`` reads every entry first).

    twine check's warnings come back as warning findings (``strict``: as failures).

    ``name``/``version`` default to those in each file's name (then the rules that compare them
    still catch duplicates, METADATA drift and a second sdist).
    """
    from wheelflow.core.distributions import check_filenames, twine_check

    groups: dict[tuple[str, str], list[Distribution]] = {}
    for dist in dists:
        parsed = parse_filename(dist.filename)
        file_version = str(parsed[1]) if parsed else "?"
        wanted = version if isinstance(version, str) else (version or {}).get(dist.filename, file_version)
        key = (name or (parsed[0] if parsed else dist.filename), wanted)
        groups.setdefault(key, []).append(dist)
    findings: list[Finding] = []
    for (group_name, group_version), group in groups.items():
        try:
            findings += check_filenames(group, group_name, group_version, ())
        except InvalidVersion:
            findings.append(Finding(group[0].filename, "version", f"{group_version!r} is not a PEP 440 version"))
    for artifact_kind in artifacts:  # across the release: the sdist and the variant wheels differ in version
        if not any(d.kind == artifact_kind for d in dists):
            findings.append(
                Finding(
                    f"<{artifact_kind}>",
                    "missing-artifact",
                    f"the spec asks for a {artifact_kind} but none was built; fix: check the build log",
                )
            )
    findings += audit_files([d.path for d in dists], cell)
    refused = unreadable(findings)
    findings += twine_check(
        [d.path for d in dists if artifact_kind_of(d.filename) and d.filename not in refused], strict=strict
    )
    return findings
