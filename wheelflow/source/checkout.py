"""The source to release: a local project as it is, or a git URL (or repository) at a ref.

A URL never carries credentials (see :mod:`wheelflow.source.gitauth`): they reach git through its credential helper, from an inherited pipe.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wheelflow.core.credentials import Credentials
from wheelflow.core.errors import GitError
from wheelflow.core.redaction import redact_url
from wheelflow.source.gitauth import TOKEN_USERNAME, git_credentials, refuse_url_credentials
from wheelflow.source.gittags import _git


def is_git_url(project: str) -> bool:
    return "://" in project or project.startswith("git@")


def checkout(
    project: str,
    ref: str | None,
    home: Path,
    *,
    git_secret: str | None = None,
    read_secret: Callable[[str], Any] | None = None,
) -> Path:
    """``project`` itself when it is a local path and no ref is asked for; otherwise a clone under
    $WHEELFLOW_HOME/checkouts (reused across runs: fetched, then checked out at ``ref``).

    A URL with credentials in it is refused (SpecError); credentials for the remote come from
    WHEELFLOW_GIT_USERNAME/WHEELFLOW_GIT_PASSWORD, or from the Prefect Secret block ``git_secret``."""
    if not is_git_url(project) and ref is None:
        return Path(project)
    refuse_url_credentials(project)
    credentials = git_credentials(git_secret, read_secret=read_secret) if is_git_url(project) else None
    clone = home / "checkouts" / hashlib.sha256(project.encode()).hexdigest()[:16]
    clone.parent.mkdir(parents=True, exist_ok=True)
    # Cells of one release on one runner check out the same clone at once: one would fetch into the
    # other's half-made clone ("not a git repository"). One at a time per clone.
    with open(clone.with_name(clone.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _checked_out(project, ref, clone, credentials)


def _checked_out(project: str, ref: str | None, clone: Path, credentials: Credentials | None) -> Path:
    if not (clone / ".git").exists():
        try:
            _git("clone", "--quiet", project, str(clone), credentials=credentials)
        except GitError:
            raise GitError(
                f"cannot clone {redact_url(project)}; fix: check the URL, that this runner can reach it "
                "and, for a private repository, WHEELFLOW_GIT_USERNAME/WHEELFLOW_GIT_PASSWORD"
            ) from None
    else:
        _git("fetch", "--quiet", "--tags", "--force", "origin", cwd=clone, credentials=credentials)
    target = ref or "origin/HEAD"
    try:
        _git("checkout", "--quiet", "--force", "--detach", target, cwd=clone)
    except GitError:
        error = GitError(f"ref {target!r} is not in {redact_url(project)}; fix: push the tag or pass an existing ref")
        error.transient = False
        raise error from None
    _git("clean", "-xdfq", cwd=clone)
    return clone


def clone_code(repository: str, ref: str, token: str | None, parent: Path) -> Path:
    """A shallow clone of ``repository`` at the branch or tag ``ref`` under ``parent``, named as
    Prefect's git_clone step names it (REPO-REF), fetched again when it is there. ``token`` reaches
    git through its credential helper only: Prefect's own step puts it in the clone URL on git's
    command line (``git clone https://TOKEN@host/...``), which every user of the host can read."""
    refuse_url_credentials(repository, "repository")
    credentials = Credentials(TOKEN_USERNAME, token) if token else None
    name = repository.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git") or "code"
    destination = parent / f"{name}-{ref.replace('/', '-')}"
    if (destination / ".git").exists():
        _git("fetch", "--quiet", "--depth", "1", "--force", "origin", ref, cwd=destination, credentials=credentials)
        _git("checkout", "--quiet", "--force", "--detach", "FETCH_HEAD", cwd=destination)
    else:
        args = ("clone", "--quiet", "--depth", "1", "--branch", ref, repository, str(destination))
        try:
            _git(*args, credentials=credentials)
        except GitError as exc:  # worded as Prefect's git_clone words it: run states and docs quote it
            raise GitError(f"Failed to clone repository {redact_url(repository)!r}: {exc}") from None
    return destination
