"""One upload attempt through twine's API, in this process (:mod:`wheelflow.index.uploading` calls it).

twine's command line re-POSTs by itself on any 5xx (up to five times). That is the wrong reflex
when a 5xx can come after the index stored the file, so this makes exactly one attempt
(``max_redirects=1``) and leaves the decision (read the index, then retry with backoff) to
wheelflow. It used to run in a subprocess per file: about 2 s each on a busy 2-core machine (an
interpreter and twine's imports), 243.7 s of a 500-file release. In this process it costs the POST.
The credentials go to this one request only (no environment variable); twine's "Uploading ..." line
is kept off wheelflow's stdout, and each request is bounded in time.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import requests
import twine.repository
from twine.package import PackageFile
from twine.repository import Repository

# twine prints "Uploading FILE" with rich's print on stdout (which would break --json) and logs the
# username at INFO: neither belongs in wheelflow's output.
twine.repository.print = lambda *args, **kwargs: None  # type: ignore[attr-defined]
logging.getLogger("twine").setLevel(logging.WARNING)


class NotPrepared(Exception):
    """twine could not read the file or its metadata: nothing was sent."""


def upload_once(path: Path, upload_url: str, username: str, password: str, timeout: float) -> dict[str, Any]:
    """POST one file once; the index's answer as ``{"status", "reason", "text"}`` (status None: no answer)."""
    try:
        package = PackageFile.from_filename(str(path), comment=None)
    except Exception as exc:  # twine's InvalidDistribution, a zip that does not open, an unreadable file
        raise NotPrepared(f"{type(exc).__name__}: {exc}") from None
    repository = Repository(upload_url, username, password, disable_progress_bar=True)
    repository.session.request = functools.partial(repository.session.request, timeout=timeout)  # type: ignore[method-assign]
    try:
        response = repository.upload(package, max_redirects=1)
        return {"status": response.status_code, "reason": response.reason or "", "text": response.text[:500]}
    except requests.Timeout:
        return {"status": None, "reason": f"no answer within {timeout:.0f} s", "text": ""}
    except requests.RequestException as exc:
        return {"status": None, "reason": type(exc).__name__, "text": ""}
    finally:
        repository.close()
