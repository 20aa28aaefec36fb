"""``kind = "github-release"``: wheels as assets of the GitHub release of the version's tag, the way the
flash-attention family publishes (docs/github-releases.md).

Atomic for users: assets go to a draft (created, or found and reused), each is proven by downloading it
through the API and hashing it (and against GitHub's ``digest``); only when every target of the release
is proven does :meth:`GitHubReleasePublisher.finalize` publish the draft, then prove what users get:
each cell's guessed URL serves that cell's wheel, and pip and uv install from the find-links page.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wheelflow.adapters.prefect_api import read_secret
from wheelflow.checks.audits import Limits
from wheelflow.config.assetnames import guessed_url
from wheelflow.config.routing import routes_label
from wheelflow.config.spec import GitHubReleaseTarget, Target
from wheelflow.core.errors import WheelflowError
from wheelflow.core.report import SMOKE_CHECK_PREFIX, UploadOutcome
from wheelflow.flows.abigate import install_as_users_get
from wheelflow.flows.context import ReleaseContext
from wheelflow.flows.stages import PublishBookkeeping, ReleaseTransaction, Stage, proven, user_install_checks
from wheelflow.index.githubreleases import MAX_ASSET_BYTES, Asset, GitHubReleases, Release
from wheelflow.index.githubtarget import (
    ReleaseAssetsReader,
    add_to_published_fix,
    complete_assets,
    github_token,
    open_releases,
    page_bytes,
    prove_guessed_url,
    read_github_release,
    release_tag,
    served_files,
)
from wheelflow.index.indexes import PRIVATE_VERIFY_TIMEOUT, Endpoints
from wheelflow.index.simple_api import ServedFile
from wheelflow.ops.backfill import serves_cell
from wheelflow.tasks.github import ReleaseState, prove_assets, publish_release, release_rollback_hook, upload_asset


class GitHubReleasePublisher:
    """A GitHub repository's release for the version's tag: assets uploaded to its draft, proven, then
    published in :meth:`finalize`; its domain client is :mod:`wheelflow.index.githubtarget`."""

    install_option = "--find-links"

    def __init__(self) -> None:
        self._gh: GitHubReleases | None = None
        self.state = ReleaseState()  # what this run did: the rollback's to take back
        self.assets: dict[str, Asset] = {}  # name -> asset, as listed, then as uploaded
        self.page: tuple[str, str] | None = None  # the find-links page: (download URL, sha256)

    def check_credentials(self, target: Target, home: Path, read_secret: Callable[[str], Any] | None) -> None:
        github_token(self._target(target), read_secret)

    def record_keys(self, target: Target) -> tuple[str, ...]:
        target = self._target(target)
        return (f"{target.api_url.rstrip('/')}/repos/{target.repository}/releases",)

    def limits(self, target: Target) -> Limits:
        # GitHub takes assets under 2 GiB, any platform tag and local version labels (flash_attn-2.7.4+cu12...)
        return Limits(
            max_file_size=target.max_file_size or MAX_ASSET_BYTES - 1,
            project_budget=target.project_budget,
            allow_local_versions=target.allow_local_versions if target.allow_local_versions is not None else True,
            manylinux_only=bool(target.manylinux_only),
        )

    def reader(
        self, target: Target, home: Path, read_secret: Callable[[str], Any] | None = None, project: str | None = None
    ) -> contextlib.AbstractContextManager[ReleaseAssetsReader]:
        return read_github_release(self._target(target), home, read_secret)

    def open(self, ctx: ReleaseContext, targets: contextlib.ExitStack, target: Target) -> None:
        token = github_token(self._target(target), read_secret)
        self._gh = targets.enter_context(open_releases(self._target(target), token))

    def read_served(self, ctx: ReleaseContext, stage: Stage) -> list[ServedFile]:
        """The release's assets (a draft's too: the token sees it), sha256 from GitHub's digest."""
        gh, target = self.gh, self._target(stage.target)
        self.state.release = gh.release_for_tag(release_tag(target, ctx.version))
        self.assets = complete_assets(gh, self.state.release)
        return served_files(gh, self.assets.values(), [d.filename for d in stage.files])

    def inherited(self, stage: Stage, served: list[ServedFile]) -> dict[str, str]:
        return {}  # a release holds only its own assets

    def publish(self, ctx: ReleaseContext, release_txn: ReleaseTransaction, stage: Stage) -> None:
        """Upload what the release lacks to its draft (created, or found and reused), then the find-links
        page; a re-run whose files and page are all there writes nothing."""
        target, gh, state = self._target(stage.target), self.gh, self.state
        tag = release_tag(target, ctx.version)
        bookkeeping = PublishBookkeeping(ctx, stage)
        for dist in stage.files:
            if dist.filename in stage.present:
                bookkeeping.already_present(
                    dist, f"already an asset of release {tag} with these bytes: not uploaded again"
                )
        if not stage.files:
            return
        page = self._page_bytes(ctx, stage)  # None until every file is an asset
        page_current = target.page_name is None or self._holds(target.page_name, page)
        if not stage.missing and page_current:
            self._remember_page(target, page)
            return
        release, created = gh.draft_for_tag(
            tag,
            name=f"{ctx.spec.name} {ctx.version}",
            allow_published=target.add_to_published,
            published_fix=add_to_published_fix(target.name),
        )
        state.release, state.created = release, created
        release_txn.transaction.on_rollback_hooks.append(release_rollback_hook(gh, state))
        try:
            for dist in stage.missing:
                try:
                    done = upload_asset(gh, release, dist.path, dist.sha256, dist.filename)
                except WheelflowError as exc:
                    bookkeeping.failed(dist, str(exc))
                    raise
                self.assets[dist.filename] = done.asset
                if done.outcome == "uploaded":
                    state.uploaded[dist.filename] = done.asset
                    where = (
                        f"the draft of release {tag}"
                        if release.draft
                        else f"release {tag} (published: add-to-published)"
                    )
                    bookkeeping.written(dist, UploadOutcome.UPLOADED, f"uploaded to {where}")
                else:
                    bookkeeping.written(dist, UploadOutcome.ALREADY_PRESENT, f"already an asset of release {tag}")
            if not page_current:
                self._upload_page(ctx, target, release, self._page_bytes(ctx, stage))
        finally:
            bookkeeping.record()

    def prove(self, ctx: ReleaseContext, stage: Stage) -> None:
        """Each asset downloaded through the API (a draft's too) and hashed, and compared with GitHub's
        digest; the find-links page likewise. What users get is proven after publishing (finalize)."""
        if not stage.files:
            return
        gh, release, target = self.gh, self._release, self._target(stage.target)
        proven(
            ctx,
            stage,
            lambda: prove_assets(gh, release, self.assets, stage.files),
            lambda dist, _: (
                f"asset of release {release.tag_name}: downloaded and hashed, sha256 {dist.sha256[:16]}… "
                + ("matches, as GitHub's digest does" if self.assets[dist.filename].digest else "matches")
            ),
        )
        if self.page is not None and target.page_name is not None:
            with ctx.report.step(f"find-links page on {target.name}") as step:
                gh.prove(self.assets[target.page_name], self.page[1])
                step.detail = (
                    f"{self.page[0]}: downloaded and hashed; lists {len(stage.files)} file(s) with their sha256"
                )
            ctx.report.install.append(
                shlex.join(["pip", "install", f"{ctx.spec.name}=={ctx.version}", "--find-links", self.page[0]])
            )

    def finalize(self, ctx: ReleaseContext, stage: Stage) -> None:
        """Publish the draft (every target of the release is proven by now), then prove what users get:
        each cell's guessed URL serves that cell's wheel, and pip and uv install from the page."""
        if not stage.files:
            return
        target, release = self._target(stage.target), self._release
        if release.draft:
            with ctx.report.step(f"published release {release.tag_name} on {target.name}") as step:
                self.state.release = publish_release(self.gh, release)
                self.state.published = True
                step.detail = f"the draft made visible to users once its {len(stage.files)} asset(s) were proven"
        self._prove_guessed_urls(ctx, stage, target)
        served = [ServedFile(d.filename, self.assets[d.filename].browser_download_url, d.sha256) for d in stage.files]
        page_url = self.page[0] if self.page is not None else self.gh.repository
        with ctx.report.step(f"{SMOKE_CHECK_PREFIX}{target.name}") as step:  # from the users' download URLs
            endpoints = Endpoints(target.name, page_url, None, False, target.verify_timeout or PRIVATE_VERIFY_TIMEOUT)
            step.detail = install_as_users_get(ctx.spec, ctx.report, endpoints, ctx.version, served)
        if self.page is not None and any(d.filename.endswith(".whl") for d in stage.files):
            user_install_checks(ctx, stage, served, [self.page[0]])

    def still_served(self, ctx: ReleaseContext, stage: Stage, filenames: list[str]) -> set[str]:
        release = self.gh.release_for_tag(release_tag(self._target(stage.target), ctx.version))
        return set(complete_assets(self.gh, release)) & set(filenames)

    def rollback_runbook(self, ctx: ReleaseContext, stage: Stage, stayed: list[str]) -> list[str]:
        target = self._target(stage.target)
        tag = release_tag(target, ctx.version)
        return [
            f"{target.name}: these assets of release {tag} of {target.repository} stay:",
            *[f"  - {f}" for f in stayed],
            f"  1. delete them on the release's page (github.com/{target.repository}/releases/tag/{tag}, or your "
            "GitHub Enterprise host), or re-run the release: assets with its bytes are kept, not uploaded again",
            f"  2. or release {ctx.version}.post1 with the fix",
        ]

    # --- helpers ------------------------------------------------------------------------------

    def _prove_guessed_urls(self, ctx: ReleaseContext, stage: Stage, target: GitHubReleaseTarget) -> None:
        cells = ctx.spec.matrix.cells if ctx.spec.matrix is not None else ()
        if target.guessed_name is None:
            return
        wheels = [d for d in stage.files if d.filename.endswith(".whl")]
        for cell in cells:
            if not routes_label("wheel", cell.local_version, target):
                continue
            wheel = next((d for d in wheels if serves_cell(d.filename, ctx.version, cell)), None)
            if wheel is None:
                continue
            url = guessed_url(
                target.asset_url,
                target.guessed_name,
                cell.values,
                repository=target.repository,
                version=ctx.version,
                project=ctx.spec.name,
            )
            with ctx.report.step(f"guessed URL of {cell.name} on {target.name}") as step:
                prove_guessed_url(self.gh, url, cell.name, wheel.filename, wheel.sha256)
                step.detail = f"{url} serves {wheel.filename} (sha256 {wheel.sha256[:16]}…), downloaded as users do"

    def _page_bytes(self, ctx: ReleaseContext, stage: Stage) -> bytes | None:
        """The page over every file of the stage, once each is an asset (None before)."""
        if any(d.filename not in self.assets for d in stage.files):
            return None
        return page_bytes(
            self._target(stage.target),
            f"{ctx.spec.name} {ctx.version}",
            self.assets,
            {d.filename: d.sha256 for d in stage.files},
        )

    def _holds(self, name: str | None, page: bytes | None) -> bool:
        asset = self.assets.get(name or "")
        if page is None or asset is None:
            return False
        # GitHub Enterprise servers older than the digest field: the page's bytes, downloaded, decide
        return (asset.digest or self.gh.download_sha256(asset)) == hashlib.sha256(page).hexdigest()

    def _remember_page(self, target: GitHubReleaseTarget, page: bytes | None) -> None:
        if page is not None and target.page_name in self.assets:
            self.page = (self.assets[target.page_name].browser_download_url, hashlib.sha256(page).hexdigest())

    def _upload_page(
        self, ctx: ReleaseContext, target: GitHubReleaseTarget, release: Release, page: bytes | None
    ) -> None:
        name = target.page_name
        assert page is not None and name is not None
        old = self.assets.pop(name, None)
        if old is not None:  # a page of an earlier run lists fewer files: replaced by this run's
            self.gh.delete_asset(old)
        scratch = ctx.home / "tmp" / f"find-links-{release.id}"
        scratch.mkdir(parents=True, exist_ok=True)
        path = scratch / name
        path.write_bytes(page)
        sha256 = hashlib.sha256(page).hexdigest()
        with ctx.report.step(f"find-links page uploaded to {target.name}") as step:
            done = upload_asset(self.gh, release, path, sha256, name)
            step.detail = f"{name}: {done.outcome}"
        self.assets[name] = done.asset
        if done.outcome == "uploaded":
            self.state.uploaded[name] = done.asset
        self.page = (done.asset.browser_download_url, sha256)

    @property
    def gh(self) -> GitHubReleases:
        if self._gh is None:
            raise WheelflowError(
                "github-release target used before it was opened; fix: open it first (a wheelflow bug)"
            )
        return self._gh

    @property
    def _release(self) -> Release:
        if self.state.release is None:
            raise WheelflowError("github-release target: nothing was published to prove; fix: publish before proving")
        return self.state.release

    @staticmethod
    def _target(target: Target) -> GitHubReleaseTarget:
        assert isinstance(target, GitHubReleaseTarget), target  # the registry gives this publisher its kind only
        return target
