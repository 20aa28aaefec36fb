"""Publishing, stage by stage: what each target already serves, the approval gate, uploads with
their rollback hooks, and the proof that every file is served and installs.

All targets share one Prefect transaction: a failure after uploads (a file not served, a rejected
approval) runs each upload's rollback hook, newest first. A failed *upload* keeps what landed, so
that a re-run finishes the release with each file uploaded exactly once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.runtime import flow_run
from prefect.transactions import transaction

from wheelflow.adapters.prefect_api import Decision, mark_rolled_back, read_record, read_secret
from wheelflow.config.routing import routed, routes
from wheelflow.config.spec import Target
from wheelflow.core.cancel import RunCancelled
from wheelflow.core.distributions import Distribution, describe
from wheelflow.core.errors import (
    ApprovalError,
    HashMismatchError,
    PublishError,
    UploadError,
    VerificationError,
    WheelflowError,
)
from wheelflow.core.report import FileReport, UploadOutcome, proven_targets
from wheelflow.flows.context import ReleaseContext
from wheelflow.flows.stages import ReleaseTransaction, Stage
from wheelflow.flows.targets import publisher_for
from wheelflow.index.simple_api import READ_TIMEOUT, ServedFile, download_sha256
from wheelflow.ops.approval import approval_key, needs_person
from wheelflow.ops.monitor import manifest_variable, read_manifest
from wheelflow.proof.verification import HASH_MISMATCH, VERIFIED, YANKED, compare
from wheelflow.tasks.check import check_target_rules
from wheelflow.tasks.index_upload import upload_task_run_name


@contextlib.contextmanager
def publishing(ctx: ReleaseContext, dists: list[Distribution]) -> Iterator[ReleaseTransaction]:
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
                    yield ReleaseTransaction(stages, txn)
                    finalize_stages(ctx, stages)
                    confirm_published(ctx, dists)
                except UploadError as exc:
                    upload_failure = exc  # the index refused or did not answer: what landed stays
        except (WheelflowError, RunCancelled):  # a cancelled release ends like a failed one: rolled back, accounted for
            account_for_rollback(ctx, stages)
            raise
        if upload_failure is not None:
            report.add(
                "kept uploaded files",
                True,
                "an upload failed: files already uploaded stay; re-run the release to upload the rest",
            )
            raise upload_failure


def check_credentials(ctx: ReleaseContext) -> None:
    """Every target's credentials read once, by its publisher: a missing one stops the release before the build."""
    for target in ctx.targets:
        publisher_for(target).check_credentials(target, ctx.home, read_secret)


def uploads_on_record(ctx: ReleaseContext) -> dict[str, dict[str, dict]]:
    """index → filename → {sha256, flow_run_id} of what runs of this release uploaded: the record on
    the Prefect server (every runner sees it); this home's manifest stands for every index it lacks."""
    recorded = dict((read_record(manifest_variable(ctx.spec.name, ctx.version)) or {}).get("uploads", {}))
    local = {
        filename: {"sha256": sha256, "flow_run_id": None}
        for filename, sha256 in (read_manifest(ctx.home, ctx.spec.name, ctx.version) or {}).items()
    }
    # Each publisher names its record keys, older spellings first: the current key's entries win.
    keys = {t.name: publisher_for(t).record_keys(t) for t in ctx.targets}
    return {
        keys[t.name][-1]: {**local, **{f: e for key in keys[t.name] for f, e in recorded.get(key, {}).items()}}
        for t in ctx.targets
    }


def open_stage(
    ctx: ReleaseContext, targets: contextlib.ExitStack, position: int, target: Target, dists: list[Distribution]
) -> Stage:
    """A target's stage, opened by its kind's publisher (what must run while it is open runs in ``targets``)."""
    publisher = publisher_for(target)
    publisher.open(ctx, targets, target)
    return Stage(position, target, publisher, routed(dists, target))


def read_present(
    ctx: ReleaseContext,
    stage: Stage,
    on_record: dict[str, dict[str, dict]],
    dists: list[Distribution],
    stages: list[Stage],
) -> set[str]:
    """What the target already serves with this release's bytes: the ones built now, or the ones an
    earlier run of this release uploaded (then those served bytes become the release's file: a
    rebuild on another runner may differ). Other bytes under one of our names, or a target rule
    broken, is refused."""
    target, on_record = stage.target.name, on_record[stage.publisher.record_keys(stage.target)[-1]]
    served = own_files(ctx, stage, stage.publisher.read_served(ctx, stage))
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
        known = (
            f" (this release's record: sha256 {mine['sha256']} uploaded by flow run {mine['flow_run_id']})"
            if mine and mine.get("flow_run_id")
            else ""
        )
        ctx.report.add(f"no conflicting files on {target}", False, clash.describe() + known)
        raise HashMismatchError(
            f"{target}: {clash.describe()}{known}; fix: indexes never replace a file: "
            "release a new version (e.g. a .post1)"
        )
    yanked = [s for s in statuses if s.status == YANKED]  # ours, yanked earlier: never uploaded again
    for status in yanked:
        ctx.report.file(status.filename, target).status = YANKED
    if yanked:
        ctx.report.add(f"no yanked files on {target}", False, yanked[0].describe())
        raise VerificationError(f"{target}: {yanked[0].describe()}")
    return {s.filename for s in statuses if s.status == VERIFIED} | {c.filename for c in ours}


def own_files(ctx: ReleaseContext, stage: Stage, served: list[ServedFile]) -> list[ServedFile]:
    """The files the target itself serves: those a devpi index inherits through its ``bases`` are
    not (an upload to the index is its own file); one of our names among them with other bytes is
    reported: that version exists upstream."""
    theirs = stage.publisher.inherited(stage, served)
    built = {d.filename: d.sha256 for d in stage.files}
    for served_file in served:
        if (
            served_file.filename in theirs
            and served_file.filename in built
            and served_file.sha256 != built[served_file.filename]
        ):
            detail = (
                f"{theirs[served_file.filename]} (a base of {stage.target.name}) already serves "
                f"{served_file.filename} with other bytes: this version exists upstream"
            )
            get_run_logger().warning(detail)
            ctx.report.add(f"inherited {served_file.filename} on {stage.target.name}", True, detail)
    return [f for f in served if f.filename not in theirs]


def adopt(
    ctx: ReleaseContext, served: ServedFile, record: dict, dists: list[Distribution], stages: list[Stage]
) -> None:
    """The served bytes an earlier run of this release uploaded become this release's file."""
    directory = ctx.home / "adopted" / str(ctx.report.flow_run_id)
    directory.mkdir(parents=True, exist_ok=True)
    with ctx.report.step(f"adopted {served.filename}") as step, httpx.Client(timeout=READ_TIMEOUT) as client:
        sha256 = download_sha256(client, served.url, to=directory / served.filename)
        if sha256 != record["sha256"]:
            raise HashMismatchError(
                f"{served.filename}: downloaded sha256 {sha256}, the release's record says "
                f"{record['sha256']}; fix: check what the index serves"
            )
        adopted = describe(directory / served.filename)
        step.detail = (
            f"served with the sha256 recorded by flow run {record.get('flow_run_id') or 'an earlier run'}; "
            "this run's rebuild differs: the published bytes stay the release's"
        )
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
    earlier = {t.name for t in ctx.targets[: stage.position]}
    earlier_verified = all(f.status == VERIFIED for f in ctx.report.files if f.target in earlier)
    target, policy, timeout = stage.target.name, ctx.approval, ctx.spec.approval_timeout
    with ctx.report.step(f"approval to publish to {target}") as step:
        if not needs_person(policy, earlier_verified):
            step.detail = f"policy {policy}" + (": earlier targets verified" if policy != "auto" else "")
            return
        run_id = flow_run.get_id()
        get_run_logger().warning(
            "waiting up to %d s for a decision to publish to %s: approve in the Prefect UI, or "
            "run `wheelflow approve %s` (or `--reject --reason ...`)",
            timeout,
            target,
            run_id,
        )
        form = Decision.with_initial_data(
            description=f"Publish {ctx.spec.name} {ctx.version} to **{target}**? "
            f"Verified so far on {', '.join(sorted(earlier))}.",
            approve=False,
        )
        try:
            decision = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=2, key=approval_key(target))
        except FlowPauseTimeout:
            step.detail = f"no decision within {timeout} s"
            raise ApprovalError(
                f"no decision to publish to {target} within {timeout} s: nothing was published to "
                f"{target}; fix: re-run the release and answer with `wheelflow approve RUN_ID`"
            ) from None
        reason = decision.reason or "no reason given"
        if not decision.approve:
            step.detail = f"rejected: {reason}"
            raise ApprovalError(f"publishing to {target} was rejected: {reason}; nothing was published to {target}")
        step.detail = f"approved: {reason}"


def publish_stage(ctx: ReleaseContext, release_txn: ReleaseTransaction, stage: Stage) -> None:
    """Put what the target lacks there (uploads, or a static index's files and pages), each write adding
    its rollback hook to the release's transaction."""
    stage.publisher.publish(ctx, release_txn, stage)


def prove_stage(ctx: ReleaseContext, stage: Stage) -> None:
    """Every routed file is served with its sha256, then installs from the target and passes the smoke test."""
    stage.publisher.prove(ctx, stage)


def finalize_stages(ctx: ReleaseContext, stages: list[Stage]) -> None:
    """Once every stage is proven: each target makes what it was given visible (a no-op for today's kinds),
    still inside the release's transaction, so that a failure rolls every target back."""
    for stage in stages:
        stage.publisher.finalize(ctx, stage)


def refuse_unrouted(ctx: ReleaseContext, dists: list[Distribution]) -> None:
    """A built file that no target takes would be built but never published: refuse up front."""
    for dist in dists:
        if not any(routes(dist, t) for t in ctx.targets):  # per file: routed(dists, t) per file was quadratic
            raise PublishError(
                f"built but not published: {dist.filename} is routed to no target "
                f'({", ".join(t.name for t in ctx.targets)}); fix: add "{dist.kind}" to a target\'s artifacts, '
                "or stop building it"
            )


def confirm_published(ctx: ReleaseContext, dists: list[Distribution]) -> None:
    """The last word: every built file was uploaded (or already there) and verified on every target it was routed to."""
    for entry in ctx.report.files:
        if entry.upload not in UploadOutcome.published() or entry.status != VERIFIED:
            raise PublishError(
                f"built but not published: {entry.filename} on {entry.target} "
                f"(upload: {entry.upload}, served: {entry.status})"
            )
    reached = {f.filename for f in ctx.report.files}  # a set: a scan per file was quadratic at 2,000 files
    for dist in dists:
        if dist.filename not in reached:
            raise PublishError(f"built but not published: {dist.filename} reached no target")


def account_for_rollback(ctx: ReleaseContext, stages: list[Stage]) -> None:
    """After the rollback hooks ran: read each target back, and write a runbook for what stayed."""
    report = ctx.report
    for stage in stages:
        target = stage.target.name
        uploaded = [f.filename for f in report.files if f.target == target and f.upload == UploadOutcome.UPLOADED]
        if not uploaded:
            continue
        try:
            still = stage.publisher.still_served(ctx, stage, uploaded)
        except WheelflowError:
            still = set(uploaded)  # unknown: assume the worst
        removed = [f for f in uploaded if f not in still]
        stayed = [f for f in uploaded if f in still]
        for filename in removed:
            entry = report.file(filename, target)
            entry.upload, entry.status = UploadOutcome.ROLLED_BACK, "removed"
        if removed:
            report.add(f"rolled back {target}", True, "removed " + ", ".join(removed))
            # the run graph draws their upload tasks Completed (green): mark them rolled back
            mark_rolled_back(flow_run.get_id(), [upload_task_run_name(f, target) for f in removed])
        if stayed:
            # a release that ended before its proof on this target (failed or cancelled) leaves these unproven
            proven = target in proven_targets((c.check, c.status) for c in report.checks)
            label = "published, proven" if proven else "published, not proven"
            report.add(f"rolled back {target}", False, f"still served ({label}): " + ", ".join(stayed))
            report.runbook += stage.publisher.rollback_runbook(ctx, stage, stayed)
