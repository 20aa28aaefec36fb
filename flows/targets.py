"""The kinds of target, each one :class:`~wheelflow.flows.stages.Publisher`: an index that takes
uploads (pypiserver, devpi, the public index, the embedded local index) and a static PEP 503 index
that wheelflow writes itself (a folder or a bucket behind a web server)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from wheelflow.checks.audits import Limits
from wheelflow.config.spec import LOCAL_STORE, TARGET_MODELS, IndexTarget, StaticTarget, Target
from wheelflow.core.distributions import Distribution
from wheelflow.core.errors import UploadError, WheelflowError
from wheelflow.core.report import SMOKE_CHECK_PREFIX, UploadOutcome
from wheelflow.flows.abigate import install_as_users_get
from wheelflow.flows.context import ReleaseContext
from wheelflow.flows.futures import settled
from wheelflow.flows.githubrelease import GitHubReleasePublisher
from wheelflow.flows.stages import PublishBookkeeping, Publisher, ReleaseTransaction, Stage, proven, user_install_checks
from wheelflow.index.indexes import Endpoints, limits_for
from wheelflow.index.localindex import credentials_for, open_index
from wheelflow.index.readers import TargetReader, read_index, read_static
from wheelflow.index.removal import runbook as index_runbook
from wheelflow.index.simple_api import ServedFile, inherited_from
from wheelflow.index.staticindex import StaticIndexWrite, store_location, subindex_for
from wheelflow.index.staticsite import StaticSite, open_static, storage_options_for
from wheelflow.proof.installchecks import needs_dependencies, user_install_command
from wheelflow.proof.installsource import dependency_source
from wheelflow.tasks.index_upload import read_index_files, read_served_files, rollback_hook, upload_file
from wheelflow.tasks.static import (
    publish_static_files,
    read_static_files,
    static_rollback_hook,
    verify_static,
)
from wheelflow.tasks.static import read_static as read_static_listing
from wheelflow.tasks.verify import verify_served


class IndexPublisher:
    """An index that takes uploads: twine uploads, each with its rollback hook; proven by download.
    Its domain client is :mod:`wheelflow.index` (``localindex``, ``uploading``, ``removal``); its
    :class:`~wheelflow.index.indexes.Endpoints` stay inside this class."""

    install_option = "--index-url"

    def __init__(self) -> None:
        self._endpoints: Endpoints | None = None

    def check_credentials(self, target: Target, home: Path, read_secret: Callable[[str], Any] | None) -> None:
        credentials_for(self._target(target), home, read_secret)

    def record_keys(self, target: Target) -> tuple[str, ...]:
        return (self._target(target).index,)

    def limits(self, target: Target) -> Limits:
        return limits_for(target)

    def reader(
        self, target: Target, home: Path, read_secret: Callable[[str], Any] | None = None, project: str | None = None
    ) -> contextlib.AbstractContextManager[TargetReader]:
        return read_index(self._target(target), home)

    def open(self, ctx: ReleaseContext, targets: contextlib.ExitStack, target: Target) -> None:
        self._endpoints = targets.enter_context(open_index(self._target(target), ctx.home))

    def read_served(self, ctx: ReleaseContext, stage: Stage) -> list[ServedFile]:
        return read_served_files(self.endpoints, ctx.spec.name, ctx.version)

    def inherited(self, stage: Stage, served: list[ServedFile]) -> dict[str, str]:
        # a devpi index serves its bases' files too; an upload to the index is its own file
        return {f.filename: home for f in served if (home := inherited_from(self.endpoints.simple_url, f.url))}

    def publish(self, ctx: ReleaseContext, release_txn: ReleaseTransaction, stage: Stage) -> None:
        """Upload what the target lacks, up to the target's upload-concurrency files at once; each upload
        is recorded and adds its rollback hook to the release's transaction. The checklist keeps the
        files' order."""
        target = self._target(stage.target)
        bookkeeping = PublishBookkeeping(ctx, stage)
        for dist in stage.files:
            if dist.filename in stage.present:
                bookkeeping.already_present(dist, "already present: not uploaded again")
        # The first file goes alone: an answer that holds for every file (bad credentials, a closed
        # project) stops the release after one request, not after a burst of them.
        first, rest = stage.missing[:1], stage.missing[1:]
        for batch, limit in ((first, 1), (rest, target.upload_concurrency)):
            if batch:
                self._upload_batch(ctx, release_txn, stage, batch, limit, bookkeeping)

    def _upload_batch(
        self,
        ctx: ReleaseContext,
        release_txn: ReleaseTransaction,
        stage: Stage,
        dists: list[Distribution],
        limit: int,
        bookkeeping: PublishBookkeeping,
    ) -> None:
        """Upload ``dists``, at most ``limit`` at a time; record each outcome as it lands (one writer: this
        thread), then raise the first failure."""
        failure: BaseException | None = None
        release_txn.uploading.active = True
        try:
            with ThreadPoolTaskRunner(max_workers=limit) as runner:
                futures = [
                    runner.submit(
                        upload_file,
                        {
                            "dist": d,
                            "target": stage.target,
                            "endpoints": self.endpoints,
                            "name": ctx.spec.name,
                            "version": ctx.version,
                        },
                    )
                    for d in dists
                ]
                for n, (dist, future) in enumerate(zip(dists, futures)):
                    outcome, failed = settled(future, lambda message: UploadError(message or "upload failed"))
                    if failed is not None:
                        bookkeeping.failed(dist, str(failed))
                        failure = failure or failed
                    else:
                        bookkeeping.written(dist, UploadOutcome(outcome), outcome)
                    # Recorded as soon as this thread would otherwise wait: together with every upload
                    # that landed meanwhile (one read and one write of the record, not one per file).
                    if bookkeeping.unrecorded and (n + 1 == len(futures) or not futures[n + 1].wrapped_future.done()):
                        bookkeeping.record()
                    if failed is not None:
                        continue
                    release_txn.transaction.on_rollback_hooks.append(
                        rollback_hook(
                            stage.target,
                            self.endpoints,
                            ctx.spec.name,
                            dist.filename,
                            sorted(stage.present),
                            release_txn.uploading,
                        )
                    )
        finally:
            release_txn.uploading.active = False
        if failure is not None:
            raise failure

    def prove(self, ctx: ReleaseContext, stage: Stage) -> None:
        report, target = ctx.report, stage.target.name
        served = proven(
            ctx,
            stage,
            lambda: verify_served(self.endpoints, ctx.spec.name, ctx.version, stage.files),
            lambda dist, _: f"downloaded, sha256 {dist.sha256[:16]}… matches",
        )
        with report.step(f"{SMOKE_CHECK_PREFIX}{target}") as step:
            step.detail = install_as_users_get(ctx.spec, report, self.endpoints, ctx.version, served)
        if any(d.filename.endswith(".whl") for d in stage.files):  # an sdist-only target is its users' source fallback
            user_install_checks(ctx, stage, served, [self.endpoints.simple_url])
        ctx.report.install.append(
            user_install_command(
                ctx.spec.name,
                ctx.version,
                self.endpoints.simple_url,
                dependency_source(ctx.spec.dependencies).index_url,
                needs_dependencies(d.path for d in stage.files),
            )
        )

    def finalize(self, ctx: ReleaseContext, stage: Stage) -> None:
        """Nothing: an upload is served as soon as it lands."""

    def still_served(self, ctx: ReleaseContext, stage: Stage, filenames: list[str]) -> set[str]:
        return {s.filename for s in read_index_files(self.endpoints, ctx.spec.name, ctx.version)}

    def rollback_runbook(self, ctx: ReleaseContext, stage: Stage, stayed: list[str]) -> list[str]:
        return index_runbook(ctx.spec.name, ctx.version, stage.target.name, stayed, self.endpoints.public)

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise WheelflowError("index target used before it was opened; fix: open it first (a wheelflow bug)")
        return self._endpoints

    @staticmethod
    def _target(target: Target) -> IndexTarget:
        assert isinstance(target, IndexTarget), target  # the registry gives this publisher index targets only
        return target


class StaticPublisher:
    """A static index written by wheelflow: files and pages under the store's lock, read back at its
    public URL; each file is read from the sub-index its local version label belongs to."""

    install_option = "--index-url"

    def __init__(self) -> None:
        self.site: StaticSite | None = None
        self.written: StaticIndexWrite | None = None  # what this run wrote (to prove and to roll back)

    def check_credentials(self, target: Target, home: Path, read_secret: Callable[[str], Any] | None) -> None:
        # its store's options are read (and a missing Secret block refused) here, then dropped
        storage_options_for(self._target(target), read_secret)

    def record_keys(self, target: Target) -> tuple[str, ...]:
        # two spellings of one store are one index, as they are one lock; uploads recorded before the key
        # was the store's location are under the URL as spelled
        store_url = self._target(target).store_url
        return (store_url, store_url if store_url == LOCAL_STORE else store_location(store_url))

    def limits(self, target: Target) -> Limits:
        return limits_for(target)

    def reader(
        self, target: Target, home: Path, read_secret: Callable[[str], Any] | None = None, project: str | None = None
    ) -> contextlib.AbstractContextManager[TargetReader]:
        return read_static(self._target(target), home, read_secret, project)

    def open(self, ctx: ReleaseContext, targets: contextlib.ExitStack, target: Target) -> None:
        self.site = targets.enter_context(open_static(self._target(target), ctx.home))

    def read_served(self, ctx: ReleaseContext, stage: Stage) -> list[ServedFile]:
        return read_static_files(self._site, ctx.spec.name, ctx.version, [d.filename for d in stage.files])

    def inherited(self, stage: Stage, served: list[ServedFile]) -> dict[str, str]:
        return {}  # a static index serves only what was written to it

    def publish(self, ctx: ReleaseContext, release_txn: ReleaseTransaction, stage: Stage) -> None:
        """Write the routed files and pages (files listed already are kept as they are), and add the
        rollback hook to the release's transaction."""
        target, site = stage.target.name, self._site
        bookkeeping = PublishBookkeeping(ctx, stage, rows_upfront=False)  # rows once the store is written
        with ctx.report.step(f"published to {target} (static index)") as step:
            try:
                self.written = written = publish_static_files(stage.files, stage.target, site)
            except WheelflowError:
                for dist in stage.missing:
                    bookkeeping.failed(dist)
                raise
            step.detail = (
                f"{len(written.added)} file(s) and sidecar(s), {len(written.pages)} page(s) written "
                f"under the lock {site.lock_name}; read at {site.simple_url()}"
            )
        if written.pages or written.added:
            release_txn.transaction.on_rollback_hooks.append(static_rollback_hook(stage.target, site, written))
        for dist in stage.files:
            where = subindex_for(dist.filename, site.layout) or "the root index"
            if dist.filename in stage.present:
                bookkeeping.already_present(dist, f"already listed in {where}: not written again")
            else:
                bookkeeping.written(dist, UploadOutcome.UPLOADED, f"written, listed in {where}")
        # kept as it was: a static store's writes are not on the upload record (its pages are the record)

    def prove(self, ctx: ReleaseContext, stage: Stage) -> None:
        """Each sub-index lists its files with their sha256 and serves their bytes (downloaded and hashed);
        then the release installs from each sub-index that lists a wheel, as its users would."""
        report, site, written = ctx.report, self._site, self.written
        if written is None:
            raise WheelflowError(f"{stage.target.name}: nothing was published to prove; fix: publish before proving")

        def where(dist: Distribution, listings: dict) -> str:
            subs = [sub or "root" for sub, files in listings.items() if any(f.filename == dist.filename for f in files)]
            return f"listed in {', '.join(subs)} with sha256 {dist.sha256[:16]}…; downloaded and hashed"

        listings = proven(
            ctx, stage, lambda: verify_static(site, written, ctx.spec.name, ctx.version, stage.files), where
        )
        with_wheels = [sub for sub, files in listings.items() if any(f.filename.endswith(".whl") for f in files)]
        for subindex in with_wheels or [""]:  # an index of sdists only is installed from its root (a source build)
            endpoints = site.subindex_endpoints(subindex)
            with report.step(f"{SMOKE_CHECK_PREFIX}{endpoints.name}") as step:
                step.detail = install_as_users_get(ctx.spec, report, endpoints, ctx.version, listings.get(subindex, []))
        served = list({f.filename: f for files in listings.values() for f in files}.values())
        user_install_checks(ctx, stage, served, [site.subindex_endpoints(sub).simple_url for sub in with_wheels])

    def finalize(self, ctx: ReleaseContext, stage: Stage) -> None:
        """Nothing: the pages list the files as soon as they are written."""

    def still_served(self, ctx: ReleaseContext, stage: Stage, filenames: list[str]) -> set[str]:
        return {s.filename for s in read_static_listing(self._site, ctx.spec.name, ctx.version, filenames)}

    def rollback_runbook(self, ctx: ReleaseContext, stage: Stage, stayed: list[str]) -> list[str]:
        site = self._site
        return [
            f"{stage.target.name}: these files of {ctx.spec.name} {ctx.version} stay published:",
            *[f"  - {f}" for f in stayed],
            f"  1. delete them from {site.store_url} and take their entries out of the project's pages "
            f"(their sub-index under {site.public_url})",
            f"  2. or release {ctx.version}.post1 with the fix",
        ]

    @staticmethod
    def _target(target: Target) -> StaticTarget:
        assert isinstance(target, StaticTarget), target  # the registry gives this publisher static targets only
        return target

    @property
    def _site(self) -> StaticSite:
        if self.site is None:
            raise WheelflowError("static target used before it was opened; fix: open it first (a wheelflow bug)")
        return self.site


#: target ``kind`` → its publisher; the kind's model is registered under the same kind in
#: :data:`wheelflow.config.spec.TARGET_MODELS` (a new kind is one model there and one publisher here).
PUBLISHERS: dict[str, Callable[[], Publisher]] = {
    "index": IndexPublisher,
    "static": StaticPublisher,
    "github-release": GitHubReleasePublisher,
}
assert set(PUBLISHERS) == set(TARGET_MODELS), "every kind of target has one model and one publisher"


def publisher_for(target: Target) -> Publisher:
    """A fresh publisher for ``target`` (one per target and run: it keeps what it opened)."""
    return PUBLISHERS[target.kind]()


def index_key(target: Target) -> str:
    """What identifies a target's index in the upload record: its publisher's current record key."""
    return publisher_for(target).record_keys(target)[-1]
