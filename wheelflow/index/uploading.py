"""Upload one file with twine, and classify the index's answer into one action."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wheelflow.config.spec import DEFAULT_UPLOAD_TIMEOUT
from wheelflow.core import cancel, redaction
from wheelflow.core.credentials import Credentials
from wheelflow.core.errors import HashMismatchError, IndexReadError, UploadError
from wheelflow.core.redaction import redact_url
from wheelflow.index.simple_api import ServedFile

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class UploadAnswer:
    status: int | None  # None: no HTTP answer (connection error, timeout)
    reason: str
    deadline: float | None = None  # the attempt's deadline in seconds, when it ran out (no complete answer)


def redact(text: str, secrets: list[str]) -> str:
    """``text`` without ``secrets`` nor any secret registered with :mod:`wheelflow.core.redaction`."""
    return redaction.redact(text, secrets)


HARD = "hard error"  # the index refused for a reason a retry cannot change
CHECK_THEN_RETRY = "read the index, then retry"  # the file may have landed despite the answer
CHECK_THEN_FAIL = "read the index, then fail"  # e.g. "already exists": same bytes means done

# (substring of the index's answer, fix) for answers that no retry can change.
_HARD_REASONS = (
    (
        "local version",
        "drop the local version label (+...) for this index, or route the file to an index that accepts it",
    ),
    ("project size too large", "delete old releases or files, or ask the index for a larger project limit"),
    (
        "file too large",
        "shrink the file (strip symbols, fewer CUDA architectures) or ask the index for a larger file limit",
    ),
    ("only one sdist", "upload a single sdist per release; this release already has one on the index"),
)


def classify(answer: UploadAnswer) -> tuple[str, str]:
    """The one action for an index's answer to an upload, and the fix shown to the user."""
    reason = answer.reason.lower()
    if answer.status in (401, 403):
        return HARD, "check the target's credentials and that they may upload this project"
    for fragment, fix in _HARD_REASONS:
        if fragment in reason:
            return HARD, fix
    if answer.status == 413:
        return HARD, _HARD_REASONS[2][1]
    if answer.status is None or answer.status >= 500 or answer.status in (408, 429):
        return CHECK_THEN_RETRY, "the index had trouble; wheelflow reads it and retries with backoff"
    if "already exists" in reason:
        return CHECK_THEN_FAIL, "indexes never replace a file: release a new version (e.g. a .post1)"
    return CHECK_THEN_FAIL, "see the index's answer"


def run_twine_upload(
    path: Path, upload_url: str, credentials: Credentials | None, timeout: float = DEFAULT_UPLOAD_TIMEOUT
) -> UploadAnswer | None:
    """One upload attempt, ended within ``timeout`` seconds whatever the server does; None on success,
    else the index's answer.

    In this process (see :mod:`wheelflow.index._twine_upload`): the credentials of this one target
    go to this one request, never to an environment another process could read."""
    from wheelflow.index._twine_upload import NotPrepared, upload_once

    username, password = (credentials.username, credentials.password) if credentials else ("wheelflow", "unused")
    secrets = [credentials.password] if credentials else []
    try:
        answer = upload_once(path, upload_url, username, password, timeout)
    except NotPrepared as exc:  # twine failed before talking to the index (unreadable file or metadata)
        raise UploadError(
            f"upload of {path.name}: twine could not prepare it: {redact(_ANSI_RE.sub('', str(exc)).strip(), secrets)}",
            transient=False,
        ) from None
    if answer["status"] == 200:
        return None
    if (stopped := cancel.requested()) is not None:  # no retry, no read-back: the run is ending
        raise UploadError(f"upload of {path.name} stopped: {stopped}", transient=False)
    text_lines = answer["text"].strip().splitlines()
    reason = answer["reason"] or (text_lines[0] if text_lines else "no reason given")
    return UploadAnswer(answer["status"], redact(reason, secrets), timeout if answer.get("deadline") else None)


def upload_failure(filename: str, upload_url: str, answer: UploadAnswer, target: str | None = None) -> UploadError:
    action, fix = classify(answer)
    status = f"HTTP {answer.status} " if answer.status else ""
    deadline_fix = None
    if answer.deadline is not None:
        deadline_fix = fix = (
            "check that the index answers uploads, then re-run the release (files already served are not "
            f"uploaded again); a large file or a slow link needs more: raise upload-timeout (now {answer.deadline:g} s) "
            f"of [tool.wheelflow.targets.{target or 'NAME'}]"
        )
    return UploadError(
        f"upload of {filename} to {redact_url(upload_url)} failed: {status}{answer.reason}; fix: {fix}",
        transient=action == CHECK_THEN_RETRY,
        status=answer.status,
        deadline_fix=deadline_fix,
    )


def publish_file(
    path: Path,
    sha256: str,
    upload_url: str,
    credentials: Credentials | None,
    read_served: Callable[[], list[ServedFile]],
    log: Callable[[str], None] = print,
    *,
    timeout: float = DEFAULT_UPLOAD_TIMEOUT,
    target: str | None = None,
) -> str:
    """Upload one file and return "uploaded" or "already present"; raise UploadError otherwise.

    An error answer does not prove the file is absent: a 5xx can come after the index stored it,
    and "already exists" after an earlier attempt landed. So the index is read before deciding:
    the same bytes served means done; other bytes under that name is a hard error. An attempt that
    ran out of ``timeout`` (the target's upload-timeout) is read back the same way: its fate is unknown.
    """
    answer = run_twine_upload(path, upload_url, credentials, timeout)
    if answer is None:
        return "uploaded"
    failure = upload_failure(path.name, upload_url, answer, target)
    if classify(answer)[0] == HARD:
        raise failure
    try:
        served = {s.filename: s for s in read_served()}
    except IndexReadError:
        served = {}
    found = served.get(path.name)
    if found is not None and found.sha256 == sha256:
        # Only files absent before this upload reach here (the flow skips the others), so the bytes
        # the index now serves were stored by this attempt or an earlier one of this run.
        log(
            f"{path.name}: index answered {answer.status or 'nothing'} ({answer.reason}) but serves the same bytes: uploaded"
        )
        return "uploaded"
    if found is not None:
        raise HashMismatchError(
            f"{path.name} is already served with sha256 {found.sha256}, the built file has {sha256}; "
            "fix: indexes never replace a file: release a new version (e.g. a .post1)"
        )
    raise failure
