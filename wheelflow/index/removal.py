"""Taking back what a failed release uploaded, where the index allows it; a runbook where it does not.

pypiserver removes a version (``:action=remove_pkg``), devpi a version of a volatile index (HTTP
DELETE). Both remove every file of that version, so a version is only removed when this run
uploaded all of its files there; otherwise its files stay and the runbook lists them. The public
index never deletes through its API: files are yanked by a person, and fixed by a post-release.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from wheelflow.core.credentials import Credentials
from wheelflow.core.redaction import redact_url
from wheelflow.index.indexes import Endpoints, public_index

REMOVED, ALREADY_GONE, NOT_SUPPORTED, REFUSED = "removed", "already gone", "not supported", "refused"


@dataclass(frozen=True)
class Removal:
    target: str
    version: str
    outcome: str
    detail: str = ""


def index_flavour(endpoints: Endpoints) -> str:
    if endpoints.public:
        return "public"
    path = urlsplit(endpoints.simple_url).path.rstrip("/")
    return "devpi" if path.endswith("/+simple") else "pypiserver"


def remove_version(
    endpoints: Endpoints, credentials: Credentials | None, name: str, version: str, timeout: float = 30.0
) -> Removal:
    flavour = index_flavour(endpoints)
    if flavour == "public" or endpoints.upload_url is None:
        return Removal(endpoints.name, version, NOT_SUPPORTED, "the index removes files only by hand")
    auth = (credentials.username, credentials.password) if credentials else None
    with httpx.Client(timeout=timeout, auth=auth) as client:
        try:
            if flavour == "devpi":
                response = client.delete(endpoints.upload_url.rstrip("/") + f"/{name}/{version}")
            else:
                # pypiserver matches the name as spelled in the file names (tiny_pkg), not normalised
                for spelling in dict.fromkeys([name.replace("-", "_"), name]):
                    response = client.post(
                        endpoints.upload_url, data={":action": "remove_pkg", "name": spelling, "version": version}
                    )
                    if response.status_code != 404:
                        break
        except httpx.HTTPError as exc:
            return Removal(
                endpoints.name, version, REFUSED, f"{type(exc).__name__} from {redact_url(endpoints.upload_url)}"
            )
    if response.status_code == 404:
        return Removal(endpoints.name, version, ALREADY_GONE)
    if response.status_code >= 400:
        return Removal(
            endpoints.name,
            version,
            REFUSED,
            f"HTTP {response.status_code} (a non-volatile devpi index refuses deletion)",
        )
    return Removal(endpoints.name, version, REMOVED)


def runbook(name: str, version: str, target: str, files: list[str], public: bool) -> list[str]:
    """What a person does when files cannot be taken back automatically."""
    lines = [f"{target}: these files of {name} {version} stay published:", *[f"  - {f}" for f in files]]
    if public:
        simple, _ = public_index()
        parts = urlsplit(simple)
        manage = f"{parts.scheme}://{parts.netloc}/manage/project/{name}/release/{version}/"
        lines += [
            f"  1. open {manage} and yank {version} (Options → Yank), giving the reason",
            f"  2. fix the problem, then release {version}.post1 (a file name can never be reused)",
        ]
    else:
        lines += [
            "  1. remove them with the index's own tools (devpi remove, or delete from pypiserver's directory)",
            f"  2. or release {version}.post1 with the fix",
        ]
    return lines
