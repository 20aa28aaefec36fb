"""Resolve the release version from the git tag, the version file and the command line.

All sources that are present must agree; a mismatch is refused before anything is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from packaging.version import InvalidVersion, Version

from wheelflow.config.spec import ReleaseSpec
from wheelflow.core.errors import UsageError, VersionError
from wheelflow.source.export import commit_time, resolve_commit
from wheelflow.source.export import git_output as _git

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

_ASSIGNMENT_RE = re.compile(r"""^\s*(?:__version__|version|VERSION)\s*[:=]\s*["']([^"']+)["']""", re.MULTILINE)


@dataclass(frozen=True)
class ResolvedVersion:
    version: str  # normalised PEP 440 form, as it appears in filenames
    tag: str | None  # the git tag at HEAD that names this version, if any
    sources: dict[str, str]  # where each agreeing value came from, e.g. {"tag v1.0": "1.0"}
    commit_time: int | None  # the release commit's time (seconds), used as SOURCE_DATE_EPOCH
    commit: str | None = None  # the commit to build: the tag's, else HEAD (None: not under git)


def parse_version(value: str, where: str) -> Version:
    try:
        return Version(value)
    except InvalidVersion:
        raise VersionError(
            f"{where}: {value!r} is not a PEP 440 version; fix: use a form like 1.2.3, 1.2.3rc1 or 1.2.3.post1"
        ) from None


def version_option(value: str, option: str) -> str:
    """A version given on the command line or as a parameter, checked (PEP 440) before anything
    starts: a UsageError naming ``option`` (exit 2), never a flow run that fails later."""
    try:
        Version(value)
    except InvalidVersion:
        raise UsageError(
            option, f"{value!r} is not a PEP 440 version", "use a form like 1.2.3, 1.2.3rc1 or 1.2.3.post1"
        ) from None
    return value


def tag_pattern_regex(pattern: str) -> re.Pattern[str]:
    before, after = pattern.split("{version}")
    return re.compile("^" + re.escape(before) + r"(?P<version>.+)" + re.escape(after) + "$")


def version_from_file(path: Path) -> str:
    """The version written in ``path``: [project].version of a pyproject.toml, or ``__version__ = "..."``."""
    text = path.read_text(encoding="utf-8")
    if path.name == "pyproject.toml":
        version = tomllib.loads(text).get("project", {}).get("version")
        if version is None:
            raise VersionError(
                f"{path}: no [project].version; fix: set it, or point version.file at the file that holds it"
            )
        return str(version)
    match = _ASSIGNMENT_RE.search(text)
    if match is None:
        raise VersionError(f'{path}: no __version__ = "..." assignment found; fix: add one or change version.file')
    return match.group(1)


def resolve_version(spec: ReleaseSpec, requested: str | None = None) -> ResolvedVersion:
    """Agree the version among ``--version``, the tag at HEAD and the version file, or refuse."""
    project = spec.project_dir
    candidates: dict[str, Version] = {}
    if requested is not None:
        candidates["--version"] = parse_version(requested, "--version")

    head_tag = None
    tag_regex = tag_pattern_regex(spec.version.tag) if spec.version.tag else None
    if tag_regex is not None:
        head_tags = (_git(project, "tag", "--points-at", "HEAD") or "").split()
        matching = {}
        for tag in sorted(head_tags):
            match = tag_regex.match(tag)
            if match:
                matching[tag] = parse_version(match.group("version"), f"tag {tag}")
        for tag, value in superseding(matching).items():
            candidates[f"tag {tag}"] = value
            head_tag = tag

    if spec.version.file:
        path = project / spec.version.file
        candidates[spec.version.file] = parse_version(version_from_file(path), str(spec.version.file))

    if not candidates:
        raise VersionError(
            "no release version: HEAD has no tag matching "
            f"{spec.version.tag!r} and no version file is set; fix: pass --version, tag HEAD, or set version.file"
        )

    sources_said: dict[str, str] = {}
    written = candidates.get(spec.version.file) if spec.version.file else None
    if head_tag is not None and written is not None and is_post_retag(candidates[f"tag {head_tag}"], written):
        # The tag re-releases the file's version: the release is the tag's version (1.2.0.post1),
        # stamped into the build through WHEELFLOW_RELEASE_VERSION; the file keeps saying 1.2.0.
        candidates[spec.version.file] = candidates[f"tag {head_tag}"]
        sources_said[spec.version.file] = f"{written} (re-tagged as {candidates[spec.version.file]})"

    (first_source, first), *rest = candidates.items()
    for source, value in rest:
        if value != first:
            raise VersionError(
                f"version mismatch: {_named(first_source, spec)} says {first} but {_named(source, spec)} says {value}; "
                "fix: make the tag, the version file and --version agree before releasing (version.tag "
                f"{spec.version.tag!r} reads the tag; a post-release re-tag of an unchanged version, e.g. "
                f"{_example_retag(spec, candidates)}, is accepted)"
            )

    version = str(first)
    if spec.version.tag and head_tag is None:
        # A tag for this version that exists but points elsewhere means HEAD is not what was tagged.
        expected_tag = spec.version.tag.format(version=version)
        tagged = _git(project, "rev-list", "-n", "1", f"refs/tags/{expected_tag}")
        head = _git(project, "rev-parse", "HEAD")
        if tagged and head and tagged.strip() != head.strip():
            raise VersionError(
                f"version mismatch: tag {expected_tag} points at {tagged.strip()[:12]}, not at HEAD {head.strip()[:12]}; "
                "fix: check out the tagged commit, or release another version"
            )
        if spec.version.require_tag and head and _git(project, "rev-parse", "--verify", "--quiet", "HEAD:./"):
            # A committed project with version.tag set releases tagged commits only: an untagged commit
            # released as a final version could never be told apart from the real release later.
            raise VersionError(
                f"HEAD {head.strip()[:12]} has no tag matching version.tag {spec.version.tag!r}, and a final "
                f"release is built from its tagged commit; fix: tag it (git tag {expected_tag}, then push the "
                "tag) and release again, or release a development build with --dev (version.require-tag = false "
                "releases untagged commits)"
            )

    # The tag's commit is HEAD here (a tag elsewhere was refused above); naming it keeps the build on
    # exactly what was tagged even if HEAD moves before the source is exported.
    commit = resolve_commit(project, f"refs/tags/{head_tag}" if head_tag else "HEAD")
    return ResolvedVersion(
        version=version,
        tag=head_tag,
        sources={source: sources_said.get(source, str(value)) for source, value in candidates.items()},
        commit_time=commit_time(project, commit) if commit else None,
        commit=commit,
    )


def is_post_retag(tagged: Version, written: Version) -> bool:
    """The tag says the version file's version plus a post-release segment (``v1.2.0.post1``, or
    ``v1.2.0-1``, which PEP 440 reads as 1.2.0.post1) over a file that has none: an upstream re-tag of
    an unchanged release. Its files must carry another version than the first release's, because an
    index never takes the same filename twice."""
    if tagged.post is None or tagged.dev is not None or tagged.local is not None or written.post is not None:
        return False
    return Version(tagged.base_version) == written


def superseding(tags: dict[str, Version]) -> dict[str, Version]:
    """The tags at one commit without those a post-release re-tag supersedes: v1.2.0 and v1.2.0.post1
    on the same commit release 1.2.0.post1 (the highest post-release of that version)."""
    return {
        tag: value
        for tag, value in tags.items()
        if not any(
            other.post is not None and other > value and other.base_version == value.base_version
            for other in tags.values()
        )
    }


def _named(source: str, spec: ReleaseSpec) -> str:
    """A candidate's source with the spec key it comes from: "tag v1.3.0 (version.tag 'v{version}')"."""
    if source.startswith("tag "):
        return f"{source} (version.tag {spec.version.tag!r})"
    if source == spec.version.file:
        return f"{source} (version.file)"
    return source


def _example_retag(spec: ReleaseSpec, candidates: dict[str, Version]) -> str:
    base = candidates.get(spec.version.file or "") or next(iter(candidates.values()))
    return (spec.version.tag or "v{version}").format(version=f"{base.base_version}.post1")


def development_version(spec: ReleaseSpec, now: datetime) -> ResolvedVersion:
    """A nightly's version: the next micro release after the version file's, as a dated dev release
    (0.1.0 → 0.1.1.dev202611250300), so it sorts after the last release and before the next one.
    Tags are not consulted: a nightly builds whatever commit is checked out."""
    if not spec.version.file:
        raise VersionError(
            "a development build needs version.file in the spec to know the current version; "
            "fix: set [tool.wheelflow.version] file"
        )
    base = parse_version(version_from_file(spec.project_dir / spec.version.file), str(spec.version.file))
    major, minor, micro = (list(base.release) + [0, 0])[:3]
    version = str(Version(f"{major}.{minor}.{micro + 1}.dev{now.strftime('%Y%m%d%H%M')}"))
    commit = resolve_commit(spec.project_dir)
    return ResolvedVersion(
        version=version,
        tag=None,
        sources={"development build": f"{base} → {version}"},
        commit_time=commit_time(spec.project_dir, commit) if commit else None,
        commit=commit,
    )
