"""Compare a repository's release tags with what indexes serve: the incident this project exists for.

Per version and index the status is one of:

- ``ok``: every expected file is served; ``lag`` = first upload − tag time, within the grace period;
- ``late``: everything is served now, but the first file arrived after the grace period;
- ``missing``: nothing expected is served;
- ``incomplete``: some expected files are served, others (named) are not;
- ``hash-mismatch``: a file named in the wheelflow release manifest is served with other bytes.

A ``missing`` or ``incomplete`` version is ``overdue`` once its tag is older than the grace period;
before that the upload may simply still be running.

Reading is cheap by construction: one Simple API listing per project per index, whatever the number
of versions. Upload times come from PEP 700 ``upload-time`` where the listing carries it, else from
the file's ``Last-Modified`` header, read once and cached under $WHEELFLOW_HOME (files are immutable).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
from packaging.utils import canonicalize_name
from packaging.version import Version

from wheelflow.config.bounds import quoted
from wheelflow.config.matrix import Cell
from wheelflow.core.errors import SpecError
from wheelflow.core.redaction import redact_url
from wheelflow.index.readers import TargetReader, read_index
from wheelflow.index.simple_api import READ_TIMEOUT, ServedFile, download_sha256, files_for_version, list_project_files
from wheelflow.source.gittags import ReleaseTag, local_repository, release_tags

OK, LATE, MISSING, INCOMPLETE, HASH_MISMATCH = "ok", "late", "missing", "incomplete", "hash-mismatch"
DEFAULT_EXPECT = ("*",)  # at least one file for the version
DEFAULT_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class VersionStatus:
    project: str
    index: str  # the index as the user named it, credentials redacted
    version: str
    tag: str
    tag_time: str
    first_upload_time: str | None
    lag_hours: float | None
    status: str
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    overdue: bool = False
    served: list[str] = field(default_factory=list)
    missing_cells: list[str] = field(
        default_factory=list
    )  # matrix cells without a served wheel (when the matrix is known)

    @property
    def problem(self) -> bool:
        """Something people must hear about: overdue missing/incomplete files, or changed bytes."""
        return self.overdue or self.status == HASH_MISMATCH

    def json(self) -> dict[str, Any]:
        return asdict(self)


# -- expected files -------------------------------------------------------------------------------


def expectation_regex(pattern: str, name: str, version: str) -> re.Pattern[str]:
    """``{name}`` matches any spelling of the project name (``-``, ``_``, ``.``; any case),
    ``{version}`` the normalised version, ``*`` and ``?`` as in shell globs."""
    parts: list[str] = []
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise SpecError("--expect", f"{pattern!r}: {exc}", "use {name}, {version}, * and ? only") from None
    for literal, placeholder, spec, conversion in parsed:
        parts.append("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in literal))
        if placeholder is None:
            continue
        if spec or conversion:
            raise SpecError(
                "--expect",
                f"{quoted(pattern)}: {{{placeholder}}} has a format spec or conversion",
                "use plain {name} and {version}",
            )
        if placeholder == "name":
            parts.append("[-_.]+".join(re.escape(p) for p in re.split(r"[-_.]+", name)))
        elif placeholder == "version":
            parts.append(re.escape(version))
        else:
            raise SpecError("--expect", f"{pattern!r} names {{{placeholder}}}", "use {name} and {version} only")
    return re.compile("^" + "".join(parts) + "$", re.IGNORECASE)


def render_expectation(pattern: str, name: str, version: str) -> str:
    """The pattern as a person reads it in a report: placeholders filled in."""
    wheel_name = canonicalize_name(name).replace("-", "_")
    return pattern.replace("{name}", wheel_name).replace("{version}", version)


def expectations_from_spec(artifacts: Iterable[str], local_versions: Iterable[str | None] = ()) -> tuple[str, ...]:
    """What a release made from this spec publishes: the sdist, and a wheel per matrix variant.
    ``local_versions``: each cell's label (None for a cell without one); a plain wheel is expected
    without a matrix, or when some cell has no label."""
    labels = list(local_versions)
    patterns: list[str] = []
    if "sdist" in artifacts:
        patterns.append("{name}-{version}.tar.gz")
    if "wheel" in artifacts:
        if not labels or None in labels:
            patterns.append("{name}-{version}-*.whl")
        for local in sorted({label for label in labels if label}):
            patterns.append("{name}-{version}+" + local + "-*.whl")
    return tuple(patterns) or DEFAULT_EXPECT


# -- upload times ---------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


class UploadTimes:
    """When each served file was uploaded: PEP 700 first, else Last-Modified, cached on disk."""

    def __init__(self, cache_file: Path | None = None) -> None:
        self.cache_file = cache_file
        self._cache: dict[str, str] = {}
        if cache_file and cache_file.exists():
            self._cache = json.loads(cache_file.read_text())
        self._dirty = False

    @staticmethod
    def _key(index: str, served: ServedFile) -> str:
        return f"{redact_url(index)}|{served.filename}|{served.sha256 or ''}"

    def lookup(self, client: httpx.Client, index: str, served: ServedFile) -> datetime | None:
        if served.upload_time:
            return parse_time(served.upload_time)
        key = self._key(index, served)
        if key in self._cache:
            return parse_time(self._cache[key])
        try:
            response = client.head(served.url, follow_redirects=True)
        except httpx.HTTPError:
            return None  # unknown this time; asked again next run
        modified = response.headers.get("last-modified") if response.status_code < 400 else None
        if not modified:
            return None
        when = parsedate_to_datetime(modified).astimezone(timezone.utc)
        self._cache[key] = when.isoformat()
        self._dirty = True
        return when

    def save(self) -> None:
        if self.cache_file and self._dirty:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._cache, indent=1, sort_keys=True))
            tmp.replace(self.cache_file)
            self._dirty = False


# -- release manifests ----------------------------------------------------------------------------


def manifest_path(home: Path, name: str, version: str) -> Path:
    return home / "manifests" / canonicalize_name(name) / f"{version}.json"


def write_manifest(home: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """filename → sha256 of what a wheelflow release built and published."""
    path = manifest_path(home, name, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "version": version, "files": files}, indent=2, sort_keys=True))
    return path


def read_manifest(home: Path, name: str, version: str) -> dict[str, str] | None:
    path = manifest_path(home, name, version)
    return json.loads(path.read_text())["files"] if path.exists() else None


def manifest_variable(name: str, version: str) -> str:
    """The key of the Prefect artifact that holds a release's upload record on the server, for every
    runner (keys take lowercase letters, digits and dashes only)."""
    return "wheelflow-manifest-" + hashlib.sha256(f"{canonicalize_name(name)}=={version}".encode()).hexdigest()[:24]


def record_uploads(
    manifest: dict[str, Any] | None,
    *,
    name: str,
    version: str,
    index: str,
    files: dict[str, str],
    flow_run_id: str,
) -> dict[str, Any]:
    """The release's upload record with ``files`` (filename → sha256) on one more index (``index``: the
    target's configured index, so one record serves every runner releasing to it). The first upload of
    a file to an index stays its record: indexes never replace a file.

    ``manifest`` is updated in place and returned (a new record when None): its caller owns it. A
    batch costs its own files, not the record's size: copying the record per file made recording the
    uploads of a 2,000-file release quadratic."""
    record = manifest if manifest is not None else {}
    record.setdefault("name", name)
    record.setdefault("version", version)
    on_index = record.setdefault("uploads", {}).setdefault(index, {})
    for filename, sha256 in files.items():
        on_index.setdefault(filename, {"sha256": sha256, "flow_run_id": flow_run_id})
    return record


# -- assessment -----------------------------------------------------------------------------------


def assess(
    *,
    project: str,
    index: str,
    tag: ReleaseTag,
    served: list[ServedFile],
    times: dict[str, datetime | None],
    expect: tuple[str, ...],
    manifest: dict[str, str] | None,
    as_of: datetime,
    grace: timedelta,
) -> VersionStatus:
    """The status of one tagged version on one index, as seen at ``as_of``.

    ``served`` are the index's files for this version; ``times`` their upload times by filename
    (None when unknown: such a file counts as present, since nothing says it came later).
    """
    visible = [f for f in served if times.get(f.filename) is None or times[f.filename] <= as_of]
    names = [f.filename for f in visible]

    missing = [
        render_expectation(p, project, tag.version)
        for p in expect
        if not any(expectation_regex(p, project, tag.version).match(n) for n in names)
    ]
    mismatched: list[str] = []
    if manifest:
        by_name = {f.filename: f for f in visible}
        missing += [n for n in sorted(manifest) if n not in by_name and n not in missing]
        mismatched = [
            n for n in sorted(manifest) if n in by_name and by_name[n].sha256 and by_name[n].sha256 != manifest[n]
        ]
    if "*" in expect and not visible:
        missing = [m for m in missing if m != "*"] or [f"any file of {tag.version}"]

    known = [times[n] for n in names if times.get(n) is not None]
    first = min(known) if known else None
    lag = (first - tag.time) if first else None

    if mismatched:
        status = HASH_MISMATCH
    elif not visible:
        status = MISSING
    elif missing:
        status = INCOMPLETE
    elif lag is not None and lag > grace:
        status = LATE
    else:
        status = OK
    overdue = status in (MISSING, INCOMPLETE) and as_of - tag.time > grace
    return VersionStatus(
        project=project,
        index=redact_url(index),
        version=tag.version,
        tag=tag.tag,
        tag_time=tag.time.astimezone(timezone.utc).isoformat(),
        first_upload_time=first.isoformat() if first else None,
        lag_hours=round(lag.total_seconds() / 3600, 2) if lag is not None else None,
        status=status,
        missing=missing,
        mismatched=mismatched,
        overdue=overdue,
        served=sorted(names),
    )


def check_index(
    client: httpx.Client,
    *,
    project: str,
    index_label: str,
    simple_url: str,
    tags: list[ReleaseTag],
    expect: tuple[str, ...] = DEFAULT_EXPECT,
    manifest_home: Path | None = None,
    as_of: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
    upload_times: UploadTimes | None = None,
) -> list[VersionStatus]:
    """Every tag made at or before ``as_of``, assessed against one listing of ``project`` on one index."""
    as_of = as_of or datetime.now(timezone.utc)
    upload_times = upload_times or UploadTimes()
    listing = list_project_files(client, simple_url, project)  # the only listing request
    by_release = _group_by_public_version(listing)
    results = []
    for tag in tags:
        if tag.time > as_of:
            continue
        # yanked files were published too: they count as served
        served = files_for_version(by_release.get(Version(tag.version).public, []), project, tag.version)
        times = {f.filename: upload_times.lookup(client, simple_url, f) for f in served}
        manifest = read_manifest(manifest_home, project, tag.version) if manifest_home else None
        if manifest:  # a listing without hashes: hash what is served, for the files we know bytes of
            served = [
                replace(f, sha256=download_sha256(client, f.url)) if f.sha256 is None and f.filename in manifest else f
                for f in served
            ]
        results.append(
            assess(
                project=project,
                index=index_label,
                tag=tag,
                served=served,
                times=times,
                expect=expect,
                manifest=manifest,
                as_of=as_of,
                grace=grace,
            )
        )
    upload_times.save()
    return results


def _group_by_public_version(listing: list[ServedFile]) -> dict[str, list[ServedFile]]:
    """Files by public version (1.0+cu121 under 1.0), so each tag looks at its own few files."""
    from wheelflow.core.distributions import parse_filename

    groups: dict[str, list[ServedFile]] = {}
    for served in listing:
        parsed = parse_filename(served.filename)
        if parsed is not None:
            groups.setdefault(parsed[1].public, []).append(served)
    return groups


def table_rows(results: list[VersionStatus]) -> list[dict[str, str]]:
    return [
        {
            "project": r.project,
            "version": r.version,
            "index": r.index,
            "status": r.status + (" (overdue)" if r.overdue else ""),
            "lag (h)": "" if r.lag_hours is None else f"{r.lag_hours:.1f}",
            "tag time": r.tag_time,
            "missing": ", ".join(r.missing + [f"{m} (sha256 differs)" for m in r.mismatched]),
            **({"missing cells": ", ".join(r.missing_cells)} if any(x.missing_cells for x in results) else {}),
        }
        for r in results
    ]


def name_missing_cells(results: list[VersionStatus], cells: Sequence[Cell]) -> list[VersionStatus]:
    """Each missing or incomplete result with the matrix cells that have no served wheel, by name."""
    from wheelflow.ops.backfill import serves_cell

    return [
        replace(r, missing_cells=[c.name for c in cells if not any(serves_cell(f, r.version, c) for f in r.served)])
        if r.status in (MISSING, INCOMPLETE)
        else r
        for r in results
    ]


def check_reader(
    client: httpx.Client,
    reader: TargetReader,
    *,
    project: str,
    tags: list[ReleaseTag],
    expect: tuple[str, ...] = DEFAULT_EXPECT,
    manifest_home: Path | None = None,
    as_of: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
) -> list[VersionStatus]:
    """Every tag made at or before ``as_of``, assessed against what a spec's target of any kind serves
    for its version, read through the kind's reader (a GitHub release: its assets). Upload times are
    not read there: a served file counts as present, a missing one is missing."""
    as_of = as_of or datetime.now(timezone.utc)
    results = []
    for tag in tags:
        if tag.time > as_of:
            continue
        served = reader.read(client, project, tag.version)
        manifest = read_manifest(manifest_home, project, tag.version) if manifest_home else None
        results.append(
            assess(
                project=project,
                index=reader.name,
                tag=tag,
                served=served,
                times={},
                expect=expect,
                manifest=manifest,
                as_of=as_of,
                grace=grace,
            )
        )
    return results


def read_tags(repo: str, patterns: tuple[str, ...], home: Path) -> list[ReleaseTag]:
    return release_tags(local_repository(repo, home / "git"), patterns)


def check_one_reader(
    project: str,
    reader: TargetReader,
    tags: list[ReleaseTag],
    expect: tuple[str, ...],
    as_of: datetime,
    grace: timedelta,
    home: Path,
) -> list[VersionStatus]:
    """A spec's target of any kind (a GitHub release: its assets), read through its kind's reader."""
    with httpx.Client(timeout=READ_TIMEOUT) as client:
        return check_reader(
            client, reader, project=project, tags=tags, expect=expect, manifest_home=home, as_of=as_of, grace=grace
        )


def check_one_index(
    project: str,
    index: str,
    tags: list[ReleaseTag],
    expect: tuple[str, ...],
    as_of: datetime,
    grace: timedelta,
    home: Path,
    client: httpx.Client | None = None,
) -> list[VersionStatus]:
    with contextlib.ExitStack() as stack:
        client = client or stack.enter_context(httpx.Client(timeout=READ_TIMEOUT))
        # an index given by alias or URL, read-only through the index kind's reader
        simple_url = stack.enter_context(read_index(index, home)).simple_urls[0]
        return check_index(
            client,
            project=project,
            index_label=index,
            simple_url=simple_url,
            tags=tags,
            expect=expect,
            manifest_home=home,
            as_of=as_of,
            grace=grace,
            upload_times=UploadTimes(home / "monitor" / "upload-times.json"),
        )
