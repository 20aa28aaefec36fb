"""Upload one file with twine, and classify the index's answer into one action."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import HashMismatchError, IndexReadError, UploadError
from .indexes import Credentials
from .simple_api import ServedFile
from .spec import redact_url

_HTTP_ERROR_RE = re.compile(r"HTTPError:\s*(\d{3})\s+(.*?)\s+from\s+\S+\s*(.*)", re.DOTALL)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class UploadAnswer:
    status: int | None  # None: no HTTP answer (connection error, timeout)
    reason: str


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def parse_twine_output(output: str) -> UploadAnswer:
    """Status and reason from twine's error output (``HTTPError: 400 Bad Request from URL``)."""
    clean = " ".join(_ANSI_RE.sub("", output).split())
    match = _HTTP_ERROR_RE.search(clean)
    if match:
        status, phrase, rest = int(match.group(1)), match.group(2), match.group(3)
        rest = rest.replace("Retry with the --verbose option for more details.", "").strip()
        return UploadAnswer(status, f"{phrase} {rest}".strip() if rest and rest != phrase else phrase)
    last_error = next((l for l in reversed(_ANSI_RE.sub("", output).splitlines()) if "ERROR" in l or "Error" in l), "")
    return UploadAnswer(None, last_error.replace("ERROR", "").strip() or "no answer from the index")


def is_transient(answer: UploadAnswer) -> bool:
    """5xx, 429 and no answer at all may succeed on a retry; every other answer will not."""
    return answer.status is None or answer.status >= 500 or answer.status in (408, 429)


def run_twine_upload(path: Path, upload_url: str, credentials: Credentials | None, timeout: float = 900) -> UploadAnswer | None:
    """Upload ``path``; None on success, else the index's answer. Credentials travel in the environment."""
    env = {
        **os.environ,
        "TWINE_USERNAME": credentials.username if credentials else "wheelflow",
        "TWINE_PASSWORD": credentials.password if credentials else "unused",
        "TWINE_NON_INTERACTIVE": "1",
        "NO_COLOR": "1",
        "COLUMNS": "400",
    }
    cmd = [sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
           "--repository-url", upload_url, str(path)]
    secrets = [credentials.password] if credentials else []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return UploadAnswer(None, f"no answer within {timeout:.0f} s")
    if proc.returncode == 0:
        return None
    answer = parse_twine_output(proc.stdout + "\n" + proc.stderr)
    return UploadAnswer(answer.status, redact(answer.reason, secrets))


def upload_failure(filename: str, upload_url: str, answer: UploadAnswer) -> UploadError:
    where = redact_url(upload_url)
    status = f"HTTP {answer.status} " if answer.status else ""
    if answer.status in (401, 403):
        fix = "check the target's credentials and that they may upload this project"
    elif answer.status == 413 or "too large" in answer.reason.lower():
        fix = "shrink the file or ask the index for a larger limit"
    elif "local version" in answer.reason.lower():
        fix = "drop the local version label (+...) for this index, or route the file to an index that accepts it"
    elif is_transient(answer):
        fix = "the index had trouble; wheelflow retries this upload"
    else:
        fix = "see the index's answer"
    return UploadError(f"upload of {filename} to {where} failed: {status}{answer.reason}; fix: {fix}",
                       transient=is_transient(answer), status=answer.status)


def publish_file(
    path: Path,
    sha256: str,
    upload_url: str,
    credentials: Credentials | None,
    read_served: Callable[[], list[ServedFile]],
    log: Callable[[str], None] = print,
) -> str:
    """Upload one file and return "uploaded" or "already present"; raise UploadError otherwise.

    An error answer does not prove the file is absent: a 5xx can come after the index stored it,
    and "already exists" after an earlier attempt landed. So the index is read before deciding:
    the same bytes served means done; other bytes under that name is a hard error.
    """
    answer = run_twine_upload(path, upload_url, credentials)
    if answer is None:
        return "uploaded"
    failure = upload_failure(path.name, upload_url, answer)
    if answer.status in (401, 403, 413):
        raise failure
    try:
        served = {s.filename: s for s in read_served()}
    except IndexReadError:
        served = {}
    found = served.get(path.name)
    if found is not None and found.sha256 == sha256:
        log(f"{path.name}: index answered {answer.status or 'nothing'} but serves the same bytes: already present")
        return "already present"
    if found is not None:
        raise HashMismatchError(
            f"{path.name} is already served with sha256 {found.sha256}, the built file has {sha256}; "
            "fix: indexes never replace a file: release a new version (e.g. a .post1)"
        )
    raise failure
