"""A ``kind = "github-release"`` target as the release, backfill and verify see it: its token, its
release client, what the release of a version's tag serves, and a read-only reader of it.

The REST client is :mod:`wheelflow.index.githubreleases`; the find-links page :mod:`~wheelflow.index.findlinks`;
the URL templates :mod:`wheelflow.config.assetnames`. No Prefect here: the publisher
(``flows/githubrelease.py``) and its tasks call these functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from wheelflow.config.spec import GitHubReleaseTarget, env_prefix
from wheelflow.core import secretenv
from wheelflow.core.credentials import secret_block_value
from wheelflow.core.deadline import Deadline
from wheelflow.core.errors import CredentialsError, VerificationError, WheelflowError
from wheelflow.core.redaction import register_secret
from wheelflow.index.findlinks import Link, find_links_page
from wheelflow.index.githubreleases import DEFAULT_DEADLINE, Asset, GitHubReleases, Release, published_refusal
from wheelflow.index.indexes import PRIVATE_VERIFY_TIMEOUT
from wheelflow.index.readers import TargetReader
from wheelflow.index.simple_api import ServedFile


def github_token(target: GitHubReleaseTarget, read_secret: Callable[[str], Any] | None = None) -> str:
    """The target's token: ``WHEELFLOW_<TARGET>_TOKEN`` (credentials = "env") or a Prefect Secret block
    holding the token (or ``{"token": ...}``); registered for redaction before anyone can log it."""
    prefix = env_prefix(target.name)
    owner = f"target {target.name!r}"
    if target.credentials == "env":
        token = secretenv.environ().get(f"{prefix}_TOKEN", "")
        if not token:
            raise CredentialsError(
                f"{owner}: no GitHub token: {prefix}_TOKEN is not set; fix: export {prefix}_TOKEN (a fine-grained "
                f'token with Contents read and write on {target.repository}), or set credentials = "prefect-secret:BLOCK"'
            )
    else:
        block = target.credentials.split(":", 1)[1]
        value = secret_block_value(block, owner, 'use credentials = "env"', read_secret)
        token = value.get("token") if isinstance(value, dict) else value
        if not isinstance(token, str) or not token:
            raise CredentialsError(
                f'{owner}: Secret block {block!r} must hold the GitHub token (or {{"token": ...}}); '
                "fix: store the token in one of those forms"
            )
    register_secret(token)
    return token


def open_releases(
    target: GitHubReleaseTarget,
    token: str,
    *,
    deadline: Deadline | None = None,
    log: Callable[[str], None] | None = None,
) -> GitHubReleases:
    """The target's repository, spoken to with ``token`` (to its API and uploads hosts only)."""
    return GitHubReleases(
        target.repository,
        token,
        api_url=target.api_url,
        uploads_url=target.uploads_url,
        deadline=deadline or Deadline.after(DEFAULT_DEADLINE),
        **({"log": log} if log is not None else {}),
    )


def release_tag(target: GitHubReleaseTarget, version: str) -> str:
    return target.tag.format(version=version)


def complete_assets(gh: GitHubReleases, release: Release | None) -> dict[str, Asset]:
    """name -> asset of the release's complete assets (none when there is no release): a half-made
    upload (state "starter") is no file, the next upload replaces it."""
    if release is None:
        return {}
    return {a.name: a for a in gh.assets(release) if a.state == "uploaded"}


def served_files(gh: GitHubReleases, assets: Iterable[Asset], wanted: Iterable[str] = ()) -> list[ServedFile]:
    """Assets as served files: sha256 from GitHub's ``digest``, else (for the ``wanted`` names only) from
    the bytes downloaded through the API; the URL is the users' one."""
    wanted = set(wanted)
    return [
        ServedFile(a.name, a.browser_download_url, a.digest or (gh.download_sha256(a) if a.name in wanted else None))
        for a in assets
    ]


def page_bytes(
    target: GitHubReleaseTarget, title: str, assets: Mapping[str, Asset], sha256s: Mapping[str, str]
) -> bytes:
    """The release's find-links page: every file of ``sha256s`` at its asset's download URL, with its sha256."""
    return find_links_page(title, [Link(name, assets[name].browser_download_url, sha256s[name]) for name in sha256s])


def prove_guessed_url(gh: GitHubReleases, url: str, cell: str, filename: str, sha256: str) -> str:
    """The URL a project's setup.py guesses for ``cell`` serves that cell's wheel (downloaded as users do,
    without a token); else one line naming the URL users would have gotten."""
    try:
        served = gh.download_url_sha256(url)
    except WheelflowError as exc:  # a 404, a redirect loop, the deadline: each fails users alike
        raise VerificationError(
            f"cell {cell}: the URL users' setup.py guesses, {url}, does not serve {filename} ({exc}); they would "
            "build from source; fix: make guessed-name match the wheel's file name (or rename the wheel as the "
            "project's setup.py expects)"
        ) from None
    if served != sha256:
        raise VerificationError(
            f"cell {cell}: {url} (the URL users' setup.py guesses) serves sha256 {served}, not the cell's wheel "
            f"{filename} ({sha256}); fix: make guessed-name name only this cell's wheel"
        )
    return served


def add_to_published_fix(target_name: str) -> str:
    """The fix for a published release that may not take new assets (release and backfill say the same)."""
    return (
        f"release a new version, or set add-to-published = true on target {target_name} "
        "(its users then see the new assets appear one by one)"
    )


@dataclass(frozen=True)
class ReleaseAssetsReader(TargetReader):
    """A github-release target, read-only: the assets of the release of a version's tag (a draft too,
    with the token), as served files at their users' download URLs. ``simple_urls`` holds the
    project's releases page (there is no Simple API)."""

    gh: GitHubReleases | None = field(default=None, compare=False, repr=False)
    target: GitHubReleaseTarget | None = field(default=None, compare=False, repr=False)

    def read_each(
        self, client: httpx.Client, name: str, version: str, *, deadline: Deadline | None = None
    ) -> dict[str, list[ServedFile]]:
        return {self.simple_urls[0]: self.read(client, name, version, deadline=deadline)}

    def read(
        self, client: httpx.Client, name: str, version: str, *, deadline: Deadline | None = None
    ) -> list[ServedFile]:
        assert self.gh is not None and self.target is not None
        release = self.gh.release_for_tag(release_tag(self.target, version))
        assets = complete_assets(self.gh, release)
        return [f for f in served_files(self.gh, assets.values()) if f.filename != self.target.page_name]

    def refuses_new_files(self, name: str, version: str) -> str | None:
        """A published release takes new assets only with add-to-published (its users would see them
        appear one by one); a draft, or no release yet, takes them."""
        assert self.gh is not None and self.target is not None
        tag = release_tag(self.target, version)
        release = self.gh.release_for_tag(tag)
        if release is None or release.draft or self.target.add_to_published:
            return None
        return published_refusal(tag, self.target.repository, add_to_published_fix(self.target.name))

    def install_url(self, client: httpx.Client, name: str, version: str) -> str:
        """The release's find-links page (installers read it with ``--find-links``)."""
        assert self.gh is not None and self.target is not None
        release = self.gh.release_for_tag(release_tag(self.target, version))
        page = complete_assets(self.gh, release).get(self.target.page_name or "")
        return page.browser_download_url if page is not None else self.simple_urls[0]


@contextlib.contextmanager
def read_github_release(
    target: GitHubReleaseTarget, home: Path, read_secret: Callable[[str], Any] | None = None
) -> Iterator[ReleaseAssetsReader]:
    """A github-release target, read-only (nothing is written; the token reads drafts too)."""
    with open_releases(target, github_token(target, read_secret)) as gh:
        yield ReleaseAssetsReader(
            target.name,
            (f"{target.api_url.rstrip('/')}/repos/{target.repository}/releases",),
            target.verify_timeout or PRIVATE_VERIFY_TIMEOUT,
            False,
            gh=gh,
            target=target,
        )
