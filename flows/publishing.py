"""Publishing, stage by stage: what each target already serves, the approval gate, uploads with
their rollback hooks, and the proof that every file is served and installs.

All targets share one Prefect transaction: a failure after uploads (a file not served, a rejected
approval) runs each upload's rollback hook, newest first. A failed *upload* keeps what landed, so
that a re-run finishes the release with each file uploaded exactly once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

import httpx
from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.transactions import Transaction, transaction
from wheelflow.flows.context import ReleaseContext
from wheelflow.flows.futures import settled
from wheelflow.tasks.check import check_target_rules
from wheelflow.tasks.static import (
    publish_static_files,
    read_static,
    read_static_files,
    static_rollback_hook,
    verify_static,
)
from wheelflow.tasks.upload import UploadInProgress, read_served_files, read_target, rollback_hook, upload_file
from wheelflow.tasks.verify import ServedCheckFailed, install_and_smoke_test, install_check, verify_served

from wheelflow.ops.approval import approval_key, needs_person
from wheelflow.build.builders.local import find_interpreter
from wheelflow.core.distributions import Distribution, describe
from wheelflow.core.errors import (
    ApprovalError,
    CellUnbuildable,
    HashMismatchError,
    PublishError,
    UploadError,
    VerificationError,
    WheelflowError,
)
from wheelflow.index.indexes import Endpoints
from wheelflow.proof.installchecks import install_commands, plan, runtimes
from wheelflow.index.localindex import open_index
from wheelflow.ops.monitor import manifest_variable, read_manifest, record_upload
from wheelflow.adapters.prefect_api import Decision, read_record, write_record
from wheelflow.index.removal import runbook as rollback_runbook
from wheelflow.core.report import FAILED, NOT_RUN, PASSED, Check, FileReport
from wheelflow.config.routing import routed
from wheelflow.index.simple_api import READ_TIMEOUT, ServedFile, download_sha256, inherited_from
from wheelflow.config.spec import Target
from wheelflow.index.staticindex import StaticPublication, subindex_for
from wheelflow.index.staticsite import StaticSite, open_static
from wheelflow.proof.verification import HASH_MISMATCH, VERIFIED, compare

T = TypeVar("T")
INSTALL_CHECKS_AT_ONCE = 4  # fresh environments, each a few processes: more would only queue on the CPU


@dataclass
class Stage:
    """One target of the release: the files routed to it and those it already serves with our bytes."""

    position: int
    target: Target
    endpoints: Endpoints
    files: list[Distribution]
    present: set[str] = field(default_factory=set)
    site: StaticSite | None = None  # a static target: written by wheelflow itself, read at its public URL
    static: StaticPublication | None = None  # what this run wrote there (to prove and to roll back)

    @property
    def missing(self) -> list[Distribution]:
        return [d for d in self.files if d.filename not in self.present]


@dataclass
class Publication:
    stages: list[Stage]
    transaction: Transaction
    uploading: UploadInProgress = field(default_factory=UploadInProgress)


@contextlib.contextmanager
def publishing(ctx: ReleaseContext, dists: list[Distribution]) -> Iterator[Publication]:
    """Open every target (the embedded index runs while open), read what each already serves, and
    hold the release's transaction around the stages; afterwards, every file must be published."""
    report = ctx.report
    report.files = [FileReport(d.filename, d.sha256, t.name, d.kind) for t in ctx.targets for d in routed(dists, t)]
    with contextlib.ExitStack() as targets:
        stages = [open_stage(ctx, targets, position, target, dists) for position, target in enumerate(ctx.targets)]
        on_record = uploads_on_record(ctx)
        for stage in stages:  # a clash anywhere stops the release before the first upload anywhere
            stage.present = read_present(ctx, stage, on_record, dists, stages)
        upload_failure: UploadError | None = None
        try:
            with transaction() as txn:
                try:
                    yield Publication(stages, txn)
                    confirm_published(ctx, dists)
                except UploadError as exc:
                    upload_failure = exc  # the index refused or did not answer: what landed stays
        except WheelflowError:
            account_for_rollback(ctx, stages)
            raise
        if upload_failure is not None:
            report.add("kept uploaded files", True, "an upload failed: files already uploaded stay; "
                       "re-run the release to upload the rest")
            raise upload_failure


def index_key(target: Target) -> str:
    """What identifies a target's index in the upload record: its configured index or store URL."""
    return target.index or target.store_url or target.name


def uploads_on_record(ctx: ReleaseContext) -> dict[str, dict[str, dict]]:
    """index → filename → {sha256, flow_run_id} of what runs of this release uploaded: the record on
    the Prefect server (every runner sees it); this home's manifest stands for every index it lacks."""
    recorded = dict((read_record(manifest_variable(ctx.spec.name, ctx.version)) or {}).get("uploads", {}))
    local = {filename: {"sha256": sha256, "flow_run_id": None}
             for filename, sha256 in (read_manifest(ctx.home, ctx.spec.name, ctx.version) or {}).items()}
    return {index_key(t): {**local, **recorded.get(index_key(t), {})} for t in ctx.targets}


def note_upload(ctx: ReleaseContext, dist: Distribution, target: Target) -> None:
    """Record the upload on the Prefect server at once: a run killed after it still counts it."""
    key = manifest_variable(ctx.spec.name, ctx.version)
    write_record(key, record_upload(read_record(key), name=ctx.spec.name, version=ctx.version, index=index_key(target),
                                    filename=dist.filename, sha256=dist.sha256, flow_run_id=str(ctx.report.flow_run_id)),
                 description=f"Upload record of {ctx.spec.name} {ctx.version}: index → file → sha256, flow run")


def open_stage(ctx: ReleaseContext, targets: contextlib.ExitStack, position: int, target: Target,
               dists: list[Distribution]) -> Stage:
    """A target's stage; what must run while it is open (the embedded index or static server) runs in ``targets``."""
    if target.is_static:
        site = targets.enter_context(open_static(target, ctx.home))
        return Stage(position, target, site.endpoints(), routed(dists, target), site=site)
    return Stage(position, target, targets.enter_context(open_index(target, ctx.home)), routed(dists, target))


def read_present(ctx: ReleaseContext, stage: Stage, on_record: dict[str, dict[str, dict]],
                 dists: list[Distribution], stages: list[Stage]) -> set[str]:
    """What the target already serves with this release's bytes: the ones built now, or the ones an
    earlier run of this release uploaded (then those served bytes become the release's file: a
    rebuild on another runner may differ). Other bytes under one of our names, or a target rule
    broken, is refused."""
    target, on_record = stage.target.name, on_record[index_key(stage.target)]
    if stage.site is not None:  # each file read from the sub-index it belongs to
        served = read_static_files(stage.site, ctx.spec.name, ctx.version, [d.filename for d in stage.files])
    else:
        served = read_served_files(stage.endpoints, ctx.spec.name, ctx.version)
    served = own_files(ctx, stage, served)
    check_target_rules(stage.files, stage.target, served)
    statuses = compare({d.filename: d.sha256 for d in stage.files}, served)
    clashes = [s for s in statuses if s.status == HASH_MISMATCH]
    ours = [c for c in clashes if (on_record.get(c.filename) or {}).get("sha256") == (c.served_sha256 or "").lower()]
    for clash in ours:
        adopt(ctx, next(f for f in served if f.filename == clash.filename), on_record[clash.filename], dists, stages)
    clashes = [c for c in clashes if c not in ours]
    for clash in clashes:
        ctx.report.file(clash.filename, target).status = HASH_MISMATCH
    if clashes:
        clash = clashes[0]
        mine = on_record.get(clash.filename)
        known = (f" (this release's record: sha256 {mine['sha256']} uploaded by flow run {mine['flow_run_id']})"
                 if mine and mine.get("flow_run_id") else "")
        ctx.report.add(f"no conflicting files on {target}", False, clash.describe() + known)
        raise HashMismatchError(f"{target}: {clash.describe()}{known}; fix: indexes never replace a file: "
                                "release a new version (e.g. a .post1)")
    return {s.filename for s in statuses if s.status == VERIFIED} | {c.filename for c in ours}


def own_files(ctx: ReleaseContext, stage: Stage, served: list[ServedFile]) -> list[ServedFile]:
    """The files the target itself serves: those a devpi index inherits through its ``bases`` are
    not (an upload to the index is its own file); one of our names among them with other bytes is
    reported: that version exists upstream."""
    theirs = {f.filename: home for f in served
              if stage.site is None and (home := inherited_from(stage.endpoints.simple_url, f.url))}
    built = {d.filename: d.sha256 for d in stage.files}
    for served_file in served:
        if served_file.filename in theirs and served_file.filename in built and served_file.sha256 != built[served_file.filename]:
            detail = (f"{theirs[served_file.filename]} (a base of {stage.target.name}) already serves "
                      f"{served_file.filename} with other bytes: this version exists upstream")
            get_run_logger().warning(detail)
            ctx.report.add(f"inherited {served_file.filename} on {stage.target.name}", True, detail)
    return [f for f in served if f.filename not in theirs]


def adopt(ctx: ReleaseContext, served: ServedFile, record: dict, dists: list[Distribution], stages: list[Stage]) -> None:
    """The served bytes an earlier run of this release uploaded become this release's file."""
    directory = ctx.home / "adopted" / str(ctx.report.flow_run_id)
    directory.mkdir(parents=True, exist_ok=True)
    with ctx.report.step(f"adopted {served.filename}") as step, httpx.Client(timeout=READ_TIMEOUT) as client:
        sha256 = download_sha256(client, served.url, to=directory / served.filename)
        if sha256 != record["sha256"]:
            raise HashMismatchError(f"{served.filename}: downloaded sha256 {sha256}, the release's record says "
                                    f"{record['sha256']}; fix: check what the index serves")
        adopted = describe(directory / served.filename)
        step.detail = (f"served with the sha256 recorded by flow run {record.get('flow_run_id') or 'an earlier run'}; "
                       "this run's rebuild differs: the published bytes stay the release's")
    dists[:] = [adopted if d.filename == served.filename else d for d in dists]
    for stage in stages:
        stage.files[:] = [adopted if d.filename == served.filename else d for d in stage.files]
    for entry in ctx.report.files:
        if entry.filename == served.filename:
            entry.sha256 = sha256


def gate(ctx: ReleaseContext, stage: Stage) -> None:
    """Before each target after the first that lacks files: pass by policy, or pause for a person's Decision."""
    if not stage.position or not stage.missing:
        return  # the first target needs no decision, nor one that already serves everything
    earlier = {t.name for t in ctx.targets[:stage.position]}
    earlier_verified = all(f.status == VERIFIED for f in ctx.report.files if f.target in earlier)
    target, policy, timeout = stage.target.name, ctx.approval, ctx.spec.approval_timeout
    with ctx.report.step(f"approval to publish to {target}") as step:
        if not needs_person(policy, earlier_verified):
            step.detail = f"policy {policy}" + (": earlier targets verified" if policy != "auto" else "")
            return
        run_id = flow_run.get_id()
        get_run_logger().warning("waiting up to %d s for a decision to publish to %s: approve in the Prefect UI, or "
                                 "run `wheelflow approve %s` (or `--reject --reason ...`)", timeout, target, run_id)
        form = Decision.with_initial_data(description=f"Publish {ctx.spec.name} {ctx.version} to **{target}**? "
                                                      f"Verified so far on {', '.join(sorted(earlier))}.", approve=False)
        try:
            decision = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=2, key=approval_key(target))
        except FlowPauseTimeout:
            step.detail = f"no decision within {timeout} s"
            raise ApprovalError(f"no decision to publish to {target} within {timeout} s: nothing was published to "
                                f"{target}; fix: re-run the release and answer with `wheelflow approve RUN_ID`") from None
        reason = decision.reason or "no reason given"
        if not decision.approve:
            step.detail = f"rejected: {reason}"
            raise ApprovalError(f"publishing to {target} was rejected: {reason}; nothing was published to {target}")
        step.detail = f"approved: {reason}"


def upload(ctx: ReleaseContext, publication: Publication, stage: Stage) -> None:
    """Upload what the target lacks, up to the target's upload-concurrency files at once; each upload
    is recorded and adds its rollback hook to the release's transaction. The checklist keeps the
    files' order."""
    if stage.site is not None:
        return publish_to_static(ctx, publication, stage)
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
            upload_batch(ctx, publication, stage, batch, limit, steps)


def upload_batch(ctx: ReleaseContext, publication: Publication, stage: Stage, dists: list[Distribution], limit: int,
                 steps: dict[str, Check]) -> None:
    """Upload ``dists``, at most ``limit`` at a time; record each outcome as it lands (one writer: this
    thread), then raise the first failure."""
    target = stage.target.name
    failure: BaseException | None = None
    publication.uploading.active = True
    try:
        with ThreadPoolTaskRunner(max_workers=limit) as runner:
            futures = [runner.submit(upload_file, {"dist": d, "target": stage.target, "endpoints": stage.endpoints,
                                                   "name": ctx.spec.name, "version": ctx.version}) for d in dists]
            for dist, future in zip(dists, futures):
                entry, step = ctx.report.file(dist.filename, target), steps[dist.filename]
                outcome, failed = settled(future, lambda message: UploadError(message or "upload failed"))
                if failed is not None:
                    entry.upload, step.status, step.detail = "failed", FAILED, str(failed)
                    failure = failure or failed
                    continue
                entry.upload = step.detail = outcome
                step.status = PASSED
                note_upload(ctx, dist, stage.target)
                publication.transaction.on_rollback_hooks.append(rollback_hook(
                    stage.target, stage.endpoints, ctx.spec.name, dist.filename, sorted(stage.present),
                    publication.uploading))
    finally:
        publication.uploading.active = False
    if failure is not None:
        raise failure


def publish_to_static(ctx: ReleaseContext, publication: Publication, stage: Stage) -> None:
    """Write the routed files and pages to the static index (files listed already are kept as they are),
    and add the restore-every-page hook to the release's transaction."""
    assert stage.site is not None
    target, site = stage.target.name, stage.site
    with ctx.report.step(f"published to {target} (static index)") as step:
        try:
            stage.static = publish_static_files(stage.files, stage.target, site)
        except WheelflowError:
            for dist in stage.missing:
                ctx.report.file(dist.filename, target).upload = "failed"
            raise
        step.detail = (f"{len(stage.static.added)} file(s) and sidecar(s), {len(stage.static.pages)} page(s) written "
                       f"under the lock {site.lock_name}; read at {site.simple_url()}")
    if stage.static.pages or stage.static.added:
        publication.transaction.on_rollback_hooks.append(static_rollback_hook(stage.target, site, stage.static))
    for dist in stage.files:
        entry = ctx.report.file(dist.filename, target)
        where = subindex_for(dist.filename, site.layout) or "the root index"
        if dist.filename in stage.present:
            entry.upload = "already present"
            ctx.report.add(f"uploaded {dist.filename} to {target}", True, f"already listed in {where}: not written again")
        else:
            entry.upload = "uploaded"
            ctx.report.add(f"uploaded {dist.filename} to {target}", True, f"written, listed in {where}")


def prove(ctx: ReleaseContext, stage: Stage) -> None:
    """Every routed file is served with its sha256, then installs from the target and passes the smoke test."""
    if stage.site is not None:
        return prove_static(ctx, stage)
    report, target = ctx.report, stage.target.name
    served = proven(ctx, stage, lambda: verify_served(stage.endpoints, ctx.spec.name, ctx.version, stage.files),
                    lambda dist, _: f"downloaded, sha256 {dist.sha256[:16]}… matches")
    with report.step(f"install + smoke on {target}") as step:
        step.detail = install_and_smoke_test(stage.endpoints, ctx.spec.name, ctx.version, served, ctx.spec.smoke,
                                             ctx.spec.dependencies)
    if any(d.filename.endswith(".whl") for d in stage.files):  # an sdist-only target is its users' source fallback
        user_install_checks(ctx, stage, served, [stage.endpoints.simple_url])


def proven(ctx: ReleaseContext, stage: Stage, verify: Callable[[], T], detail: Callable[[Distribution, T], str]) -> T:
    """Run the target's proof and record each file's outcome: a row per file, its status in the report."""
    report, target = ctx.report, stage.target.name
    try:
        result = verify()
    except ServedCheckFailed as exc:
        for status in exc.statuses:
            report.file(status.filename, target).status = status.status
            report.add(f"served {status.filename} on {target}", status.status == VERIFIED, status.describe())
        raise
    for dist in stage.files:
        report.file(dist.filename, target).status = VERIFIED
        report.add(f"served {dist.filename} on {target}", True, detail(dist, result))
    return result


def prove_static(ctx: ReleaseContext, stage: Stage) -> None:
    """Each sub-index lists its files with their sha256 and serves their bytes (downloaded and hashed);
    then the release installs from each sub-index that lists a wheel, as its users would."""
    assert stage.site is not None and stage.static is not None
    report, site = ctx.report, stage.site

    def where(dist: Distribution, listings: dict) -> str:
        subs = [sub or "root" for sub, files in listings.items() if any(f.filename == dist.filename for f in files)]
        return f"listed in {', '.join(subs)} with sha256 {dist.sha256[:16]}…; downloaded and hashed"

    listings = proven(ctx, stage, lambda: verify_static(site, stage.static, ctx.spec.name, ctx.version, stage.files),
                      where)
    with_wheels = [sub for sub, files in listings.items() if any(f.filename.endswith(".whl") for f in files)]
    for subindex in with_wheels or [""]:  # an index of sdists only is installed from its root (a source build)
        endpoints = site.subindex_endpoints(subindex)
        with report.step(f"install + smoke on {endpoints.name}") as step:
            step.detail = install_and_smoke_test(endpoints, ctx.spec.name, ctx.version, listings.get(subindex, []),
                                                 ctx.spec.smoke, ctx.spec.dependencies)
    served = list({f.filename: f for files in listings.values() for f in files}.values())
    user_install_checks(ctx, stage, served, [site.subindex_endpoints(sub).simple_url for sub in with_wheels])


def user_install_checks(ctx: ReleaseContext, stage: Stage, served: list[ServedFile], index_urls: list[str]) -> None:
    """Each install command users type × runtime Python × installer (pip, uv): a checklist row each,
    asserting a wheel of the release is what they get. All run; the first failure then fails the
    release. Once per target and runtime, not per cell. ``index_urls``: the target's Simple API URL
    first, then its variant sub-indexes (a static index of sdists only has none: nothing to check)."""
    if not index_urls:
        return
    commands = install_commands(stage.target.install_commands, ctx.spec.name, ctx.version, index_urls[0],
                                index_urls[1:])
    pythons = [c.values["python"] for c in ctx.spec.matrix.cells if "python" in c.values] if ctx.spec.matrix else []
    runs = []
    with ThreadPoolTaskRunner(max_workers=INSTALL_CHECKS_AT_ONCE) as runner:  # separate environments: independent
        for check in plan(commands, runtimes(pythons)):
            row = Check(check.title(stage.target.name), NOT_RUN)
            ctx.report.checks.append(row)
            try:  # asked here, not in the task: a task that fails inside the transaction rolls it back
                interpreter = find_interpreter(check.python)
            except CellUnbuildable as exc:
                row.detail = str(exc)
                continue
            runs.append((row, runner.submit(install_check, {
                "target": stage.target.name, "check": check, "name": ctx.spec.name, "version": ctx.version,
                "served": served, "interpreter": interpreter})))
        failures: list[BaseException] = []
        for row, future in runs:
            outcome, failed = settled(future,
                                      lambda message: VerificationError(message or "install check did not complete"))
            if failed is not None:
                row.status, row.detail = FAILED, str(failed)
                failures.append(failed)
            else:
                row.status, row.detail = PASSED, outcome
    if failures:
        raise failures[0]


def refuse_unrouted(ctx: ReleaseContext, dists: list[Distribution]) -> None:
    """A built file that no target takes would be built but never published: refuse up front."""
    for dist in dists:
        if not any(dist in routed(dists, t) for t in ctx.targets):
            raise PublishError(
                f"built but not published: {dist.filename} is routed to no target "
                f"({', '.join(t.name for t in ctx.targets)}); fix: add \"{dist.kind}\" to a target's artifacts, "
                "or stop building it"
            )


def confirm_published(ctx: ReleaseContext, dists: list[Distribution]) -> None:
    """The last word: every built file was uploaded (or already there) and verified on every target it was routed to."""
    for entry in ctx.report.files:
        if entry.upload not in ("uploaded", "already present") or entry.status != VERIFIED:
            raise PublishError(f"built but not published: {entry.filename} on {entry.target} "
                               f"(upload: {entry.upload}, served: {entry.status})")
    for dist in dists:
        if not any(f.filename == dist.filename for f in ctx.report.files):
            raise PublishError(f"built but not published: {dist.filename} reached no target")


def account_for_rollback(ctx: ReleaseContext, stages: list[Stage]) -> None:
    """After the rollback hooks ran: read each target back, and write a runbook for what stayed."""
    report = ctx.report
    for stage in stages:
        target = stage.target.name
        uploaded = [f.filename for f in report.files if f.target == target and f.upload == "uploaded"]
        if not uploaded:
            continue
        try:
            if stage.site is not None:
                still = {s.filename for s in read_static(stage.site, ctx.spec.name, ctx.version, uploaded)}
            else:
                still = {s.filename for s in read_target(stage.endpoints, ctx.spec.name, ctx.version)}
        except WheelflowError:
            still = set(uploaded)  # unknown: assume the worst
        removed = [f for f in uploaded if f not in still]
        stayed = [f for f in uploaded if f in still]
        for filename in removed:
            entry = report.file(filename, target)
            entry.upload, entry.status = "rolled back", "removed"
        if removed:
            report.add(f"rolled back {target}", True, "removed " + ", ".join(removed))
        if stayed:
            report.add(f"rolled back {target}", False, "still served: " + ", ".join(stayed))
            report.runbook += rollback_runbook(ctx.spec.name, ctx.version, target, stayed, stage.endpoints.public)
