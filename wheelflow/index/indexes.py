"""Where files go and where they are read back: index aliases, endpoints and credentials.

The public index's URLs are never written here: they come from pip's and twine's own defaults
at run time, so wheelflow follows those tools wherever they point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from wheelflow.checks.audits import Limits
from wheelflow.config.spec import IndexTarget, Target, env_prefix
from wheelflow.core import secretenv
from wheelflow.core.credentials import Credentials, secret_block_credentials
from wheelflow.core.errors import CredentialsError, SpecError
from wheelflow.core.redaction import redact_url, register_secret, url_credentials

#: Default verification deadlines (seconds). The public index's Simple API sits behind a CDN that
#: caches pages for about ten minutes, so reading a fresh upload back can take that long.
PUBLIC_VERIFY_TIMEOUT = 1800.0
PRIVATE_VERIFY_TIMEOUT = 60.0
#: Longest pause between two reads of a listing while waiting for a file: a file is seen at most this
#: long after it appears. The public index's CDN is read more gently.
PRIVATE_POLL_CAP = 2.0
PUBLIC_POLL_CAP = 10.0


@dataclass(frozen=True)
class Endpoints:
    name: str
    simple_url: str
    upload_url: str | None
    public: bool  # the public index or its test instance
    verify_timeout: float


def public_index(test_instance: bool = False) -> tuple[str, str]:
    """(Simple API URL, upload URL) of the public index (or its test instance), from pip and twine."""
    from pip._internal.models.index import PyPI, TestPyPI
    from twine.utils import DEFAULT_REPOSITORY, TEST_REPOSITORY

    if test_instance:
        return TestPyPI.simple_url + "/", TEST_REPOSITORY
    return PyPI.simple_url + "/", DEFAULT_REPOSITORY


def derive_upload_url(simple_url: str) -> str | None:
    """pypiserver serves uploads at the root beside /simple/; devpi at the index beside /+simple/."""
    path = urlsplit(simple_url).path.rstrip("/")
    for suffix in ("/+simple", "/simple"):
        if path.endswith(suffix):
            return simple_url.rstrip("/")[: -len(suffix)] + "/"
    return None


def resolve_endpoints(
    index: str, *, upload_url: str | None = None, verify_timeout: float | None = None, name: str | None = None
) -> Endpoints:
    """Endpoints for an alias (pypi, testpypi) or a Simple API URL. ``local`` is started by LocalIndex."""
    if index in ("pypi", "testpypi"):
        simple, upload = public_index(test_instance=index == "testpypi")
        return Endpoints(name or index, simple, upload_url or upload, True, verify_timeout or PUBLIC_VERIFY_TIMEOUT)
    if index == "local":
        raise ValueError("the local index has no fixed endpoints: start it with LocalIndex")
    parts = urlsplit(index)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(
            "--index",
            f"{redact_url(index)!r} is neither an index alias nor a Simple API URL",
            "use local, pypi, testpypi, a target name from the spec, or an http(s) URL",
        )
    if parts.username or parts.password:
        raise SpecError(
            "--index",
            f"{redact_url(index)!r} embeds credentials",
            "remove them from the URL and use the target's credentials source",
        )
    if parts.query or parts.fragment or index.rstrip().endswith(("?", "#")):
        # A token there would be printed wherever the URL is, and the project's path cannot follow it.
        found = [kind for kind in url_credentials(index) if "query" in kind or "fragment" in kind]
        raise SpecError(
            "--index",
            f"{redact_url(index)!r} "
            + (f"carries {found[0]}" if found else "has a query or fragment, where the project's path cannot follow"),
            "give the Simple API URL alone (…/simple/)"
            + (
                " and the token through the target's credentials source "
                '(credentials = "env": WHEELFLOW_<TARGET>_PASSWORD, or "prefect-secret:BLOCK")'
                if found
                else ""
            ),
        )
    simple = index if index.endswith("/") else index + "/"
    return Endpoints(
        name or index, simple, upload_url or derive_upload_url(simple), False, verify_timeout or PRIVATE_VERIFY_TIMEOUT
    )


def endpoints_for_target(target: IndexTarget) -> Endpoints:
    return resolve_endpoints(
        target.index, upload_url=target.upload_url, verify_timeout=target.verify_timeout, name=target.name
    )


#: The public index's per-file upload limit, unless the project was granted more.
PUBLIC_MAX_FILE_SIZE = 100 * 10**6


def limits_for(target: Target) -> Limits:
    """The target's rules, with the public index's own as defaults for pypi and testpypi."""
    public = target.public_index
    return Limits(
        max_file_size=target.max_file_size or (PUBLIC_MAX_FILE_SIZE if public else None),
        project_budget=target.project_budget,
        allow_local_versions=target.allow_local_versions if target.allow_local_versions is not None else not public,
        manylinux_only=target.manylinux_only if target.manylinux_only is not None else public,
    )


def load_credentials(target: Target, read_secret: Callable[[str], Any] | None = None) -> Credentials | None:
    """The target's credentials from their declared source; never from the spec itself. The
    password is registered for redaction before anyone can log it. ``read_secret`` reads a Prefect
    Secret block (see :func:`wheelflow.adapters.prefect_api.read_secret`)."""
    credentials = _read_credentials(target, read_secret)
    if credentials is not None:
        register_secret(credentials.password)
    return credentials


def _read_credentials(target: Target, read_secret: Callable[[str], Any] | None) -> Credentials | None:
    source = target.credentials
    if source == "none":
        return None
    prefix = env_prefix(target.name)
    if source == "env":
        password = secretenv.environ().get(f"{prefix}_PASSWORD")
        if not password:
            raise CredentialsError(
                f"target {target.name!r}: no credentials: {prefix}_PASSWORD is not set; "
                f"fix: export {prefix}_PASSWORD (and {prefix}_USERNAME unless it is an API token)"
            )
        return Credentials(secretenv.environ().get(f"{prefix}_USERNAME", "__token__"), password)
    return secret_block_credentials(
        source.split(":", 1)[1], f"target {target.name!r}", 'use credentials = "env"', read_secret
    )
