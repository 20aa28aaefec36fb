"""The kinds of target, each one :class:`~wheelflow.flows.stages.Publisher`: an index that takes
uploads (pypiserver, devpi, the public index, the embedded local index) and a static PEP 503 index
that wheelflow writes itself (a folder or a bucket behind a web server)."""

from __future__ import annotations

import contextlib

from prefect.task_runners import ThreadPoolTaskRunner

from wheelflow.config.spec import Target
from wheelflow.core.distributions import Distribution
from wheelflow.core.errors import UploadError, WheelflowError
from wheelflow.core.report import FAILED, NOT_RUN, PASSED, SMOKE_CHECK_PREFIX, Check
from wheelflow.flows.abigate import install_as_users_get
from wheelflow.flows.context import ReleaseContext
from wheelflow.flows.futures import settled
from wheelflow.flows.stages import Publication, Publisher, Stage, note_uploads, proven, user_install_checks
from wheelflow.index.indexes import Endpoints
from wheelflow.index.localindex import open_index
from wheelflow.index.simple_api import ServedFile, inherited_from
from wheelflow.index.staticindex import StaticPublication, subindex_for
from wheelflow.index.staticsite import StaticSite, open_static
from wheelflow.proof.installchecks import needs_dependencies, user_install_command
from wheelflow.proof.installsource import dependency_source
from wheelflow.tasks.static import (
    publish_static_files,
    read_static,
    read_static_files,
    static_rollback_hook,
    verify_static,
)
from wheelflow.tasks.upload import read_served_files, read_target, rollback_hook, upload_file
from wheelflow.tasks.verify import verify_served


class IndexPublisher:
    """An index that takes uploads: twine uploads, each with its rollback hook; proven by download."""

    def open(self, ctx: ReleaseContext, targets: contextlib.ExitStack, target: Target) -> Endpoints:
        return targets.enter_context(open_index(target, ctx.home))

    def read_served(self, ctx: ReleaseContext, stage: Stage) -> list[ServedFile]:
        return read_served_files(stage.endpoints, ctx.spec.name, ctx.version)

    def inherited(self, stage: Stage, served: list[ServedFile]) -> dict[str, str]:
        # a devpi index serves its bases' files too; an upload to the index is its own file
        return {f.filename: home for f in served if (home := inherited_from(stage.endpoints.simple_url, f.url))}

    def publish(self, ctx: ReleaseContext, publication: Publication, stage: Stage) -> None:
        """Upload what the target lacks, up to the target's upload-concurrency files at once; each upload
        is recorded and adds its rollback hook to the release's transaction. The checklist keeps the
        files' order."""
        target = stage.target.name
        steps: dict[str, Check] = {}
        for dist in stage.files:
            steps[dist.filename] = step = Check(f"uploaded {dist.filename} to {target}", NOT_RUN)
            ctx.report.checks.append(step)
            if dist.filename in stage.present:
                ctx.report.file(dist.filename, target).upload = "already present"
                step.status, step.detail = PASSED, "already present: not uploaded again"
        # The first file goes alone: an answer that holds for every file (bad credentials, a closed
        # project) stops the release after one request, not after a burst of them.
        first, rest = stage.missing[:1], stage.missing[1:]
        for batch, limit in ((first, 1), (rest, stage.target.upload_concurrency)):
            if batch:
                self._upload_batch(ctx, publication, stage, batch, limit, steps)

    def _upload_batch(
        self,
        ctx: ReleaseContext,
        publication: Publication,
        stage: Stage,
        dists: list[Distribution],
        limit: int,
        steps: dict[str, Check],
    ) -> None:
        """Upload ``dists``, at most ``limit`` at a time; record each outcome as it lands (one writer: this
        thread), then raise the first failure."""
        target = stage.target.name
        failure: BaseException | None = None
        publication.uploading.active = True
        try:
            with ThreadPoolTaskRunner(max_workers=limit) as runner:
                futures = [
                    runner.submit(
                        upload_file,
                        {
                            "dist": d,
                            "target": stage.target,
                            "endpoints": stage.endpoints,
                            "name": ctx.spec.name,
                            "version": ctx.version,
                        },
                    )
                    for d in dists
                ]
                landed: list[Distribution] = []  # settled, not yet recorded
                for n, (dist, future) in enumerate(zip(dists, futures)):
                    entry, step = ctx.report.file(dist.filename, target), steps[dist.filename]
                    outcome, failed = settled(future, lambda message: UploadError(message or "upload failed"))
                    if failed is not None:
                        entry.upload, step.status, step.detail = "failed", FAILED, str(failed)
                        failure = failure or failed
                    else:
                        entry.upload = step.detail = outcome
                        step.status = PASSED
                        landed.append(dist)
                    # Recorded as soon as this thread would otherwise wait: together with every upload
                    # that landed meanwhile (one read and one write of the record, not one per file).
                    if landed and (n + 1 == len(futures) or not futures[n + 1].wrapped_future.done()):
                        note_uploads(ctx, landed, stage.target)
                        landed = []
                    if failed is not None:
                        continue
                    publication.transaction.on_rollback_hooks.append(
                        rollback_hook(
                            stage.target,
                            stage.endpoints,
                            ctx.spec.name,
                            dist.filename,
                            sorted(stage.present),
                            publication.uploading,
                        )
                    )
        finally:
            publication.uploading.active = False
        if failure is not None:
            raise failure

    def prove(self, ctx: ReleaseContext, stage: Stage) -> None:
        report, target = ctx.report, stage.target.name
        served = proven(
            ctx,
            stage,
            lambda: verify_served(stage.endpoints, ctx.spec.name, ctx.version, stage.files),
            lambda dist, _: f"downloaded, sha256 {dist.sha256[:16]}… matches",
        )
        with report.step(f"{SMOKE_CHECK_PREFIX}{target}") as step:
            step.detail = install_as_users_get(ctx.spec, report, stage.endpoints, ctx.version, served)
        if any(d.filename.endswith(".whl") for d in stage.files):  # an sdist-only target is its users' source fallback
            user_install_checks(ctx, stage, served, [stage.endpoints.simple_url])
        ctx.report.install.append(
            user_install_command(
                ctx.spec.name,
                ctx.version,
                stage.endpoints.simple_url,
                dependency_source(ctx.spec.dependencies).index_url,
                needs_dependencies(d.path for d in stage.files),
            )
        )

    def still_served(self, ctx: ReleaseContext, stage: Stage, filenames: list[str]) -> set[str]:
        return {s.filename for s in read_target(stage.endpoints, ctx.spec.name, ctx.version)}


class StaticPublisher:
    """A static index written by wheelflow: files and pages under the store's lock, read back at its
    public URL; each file is read from the sub-index its local version label belongs to."""

    def __init__(self) -> None:
        self.site: StaticSite | None = None
        self.publication: StaticPublication | None = None  # what this run wrote (to prove and to roll back)

    def open(self, ctx: ReleaseContext, targets: contextlib.ExitStack, target: Target) -> Endpoints:
        self.site = targets.enter_context(open_static(target, ctx.home))
        return self.site.endpoints()

    def read_served(self, ctx: ReleaseContext, stage: Stage) -> list[ServedFile]:
        return read_static_files(self._site, ctx.spec.name, ctx.version, [d.filename for d in stage.files])

    def inherited(self, stage: Stage, served: list[ServedFile]) -> dict[str, str]:
        return {}  # a static index serves only what was written to it

    def publish(self, ctx: ReleaseContext, publication: Publication, stage: Stage) -> None:
        """Write the routed files and pages (files listed already are kept as they are), and add the
        rollback hook to the release's transaction."""
        target, site = stage.target.name, self._site
        with ctx.report.step(f"published to {target} (static index)") as step:
            try:
                self.publication = written = publish_static_files(stage.files, stage.target, site)
            except WheelflowError:
                for dist in stage.missing:
                    ctx.report.file(dist.filename, target).upload = "failed"
                raise
            step.detail = (
                f"{len(written.added)} file(s) and sidecar(s), {len(written.pages)} page(s) written "
                f"under the lock {site.lock_name}; read at {site.simple_url()}"
            )
        if written.pages or written.added:
            publication.transaction.on_rollback_hooks.append(static_rollback_hook(stage.target, site, written))
        for dist in stage.files:
            entry = ctx.report.file(dist.filename, target)
            where = subindex_for(dist.filename, site.layout) or "the root index"
            if dist.filename in stage.present:
                entry.upload = "already present"
                ctx.report.add(
                    f"uploaded {dist.filename} to {target}", True, f"already listed in {where}: not written again"
                )
            else:
                entry.upload = "uploaded"
                ctx.report.add(f"uploaded {dist.filename} to {target}", True, f"written, listed in {where}")

    def prove(self, ctx: ReleaseContext, stage: Stage) -> None:
        """Each sub-index lists its files with their sha256 and serves their bytes (downloaded and hashed);
        then the release installs from each sub-index that lists a wheel, as its users would."""
        report, site, written = ctx.report, self._site, self.publication
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

    def still_served(self, ctx: ReleaseContext, stage: Stage, filenames: list[str]) -> set[str]:
        return {s.filename for s in read_static(self._site, ctx.spec.name, ctx.version, filenames)}

    @property
    def _site(self) -> StaticSite:
        if self.site is None:
            raise WheelflowError("static target used before it was opened; fix: open it first (a wheelflow bug)")
        return self.site


#: target ``kind`` → its publisher (a new kind of target is one more entry here)
PUBLISHERS: dict[str, type[IndexPublisher] | type[StaticPublisher]] = {
    "index": IndexPublisher,
    "static": StaticPublisher,
}


def publisher_for(target: Target) -> Publisher:
    return PUBLISHERS[target.kind]()
