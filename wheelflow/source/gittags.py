"""Release tags of a git repository, with the time each was made.

The time is the tagger date of an annotated tag, else the commit date of a lightweight tag's commit.
A URL is mirrored once (bare, no blobs) under $WHEELFLOW_HOME/git and fetched on later runs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from packaging.version import InvalidVersion, Version

from wheelflow.core.credentials import Credentials
from wheelflow.core.errors import GitError
from wheelflow.core.redaction import redact
from wheelflow.source.gitauth import git_credentials, refuse_url_credentials, run_git

DEFAULT_TAG_PATTERNS = ("v{version}", "{version}")


@dataclass(frozen=True)
class ReleaseTag:
    tag: str
    version: str  # normalised
    time: datetime  # aware


def _git(*args: str, cwd: Path | None = None, credentials: Credentials | None = None) -> str:
    """Run git with the allow-listed environment; ``credentials`` reach it through its credential helper only."""
    proc = run_git(args, cwd=cwd, credentials=credentials)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode
        raise GitError(f"git {args[0]} failed: {redact(str(last))}")
    return proc.stdout


def local_repository(repo: str, cache: Path) -> Path:
    """A local path as it is; a URL mirrored (bare, blobless) into ``cache`` and fetched."""
    path = Path(repo)
    if path.exists():
        return path
    refuse_url_credentials(repo, "repo")
    credentials = git_credentials()
    mirror = cache / hashlib.sha256(repo.encode()).hexdigest()[:16]
    if not mirror.exists():
        cache.mkdir(parents=True, exist_ok=True)
        _git("clone", "--bare", "--filter=blob:none", "--quiet", repo, str(mirror), credentials=credentials)
    else:
        _git("fetch", "--quiet", "--tags", "--force", "--prune", cwd=mirror, credentials=credentials)
    return mirror


def tag_regexes(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    regexes = []
    for pattern in patterns:
        before, after = pattern.split("{version}")
        regexes.append(re.compile("^" + re.escape(before) + r"(?P<version>.+)" + re.escape(after) + "$"))
    return regexes


def release_tags(repository: Path, patterns: tuple[str, ...] = DEFAULT_TAG_PATTERNS) -> list[ReleaseTag]:
    """Tags that name a PEP 440 version under one of the patterns, oldest first."""
    fmt = "%(refname:short)%09%(taggerdate:iso-strict)%09%(*committerdate:iso-strict)%09%(committerdate:iso-strict)"
    regexes = tag_regexes(patterns)
    found: dict[str, ReleaseTag] = {}
    for line in _git("for-each-ref", "refs/tags", f"--format={fmt}", cwd=repository).splitlines():
        name, tagger, peeled_commit, commit = (line.split("\t") + ["", "", ""])[:4]
        for regex in regexes:
            match = regex.match(name)
            if not match:
                continue
            try:
                version = str(Version(match.group("version")))
            except InvalidVersion:
                continue
            when = datetime.fromisoformat((tagger or peeled_commit or commit).replace("Z", "+00:00"))
            # v1.0 and 1.0 both tagged: the earlier tag is when the release was announced.
            if version not in found or when < found[version].time:
                found[version] = ReleaseTag(name, version, when)
            break
    return sorted(found.values(), key=lambda t: (t.time, Version(t.version)))
