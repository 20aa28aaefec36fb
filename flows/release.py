"""The release recipe: resolve the version, build, check, upload, verify, report."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.transactions import transaction

from wheelflow import artifactstore
from wheelflow.alerts import Alert, send_alert
from wheelflow.approval import ApprovalError, Decision, approval_key, needs_person
from wheelflow.artifactstore import default_store
from wheelflow.builders import Builder, CellUnbuildable, InfrastructureError
from wheelflow.builders.docker import RUN_LABEL, DockerBuilder, daemon_answers, remove_containers
from wheelflow.builders.local import LocalBuilder
from wheelflow.building import source_digest
from wheelflow.cells import expected_version
from wheelflow.checkout import checkout
from wheelflow.distributions import Distribution, describe
from wheelflow.errors import (BuildError, CheckError, HashMismatchError, PublishError, SpecError, UploadError,
                              WheelflowError)
from wheelflow.localindex import credentials_for, open_endpoints, wheelflow_home
from wheelflow.monitor import write_manifest
from wheelflow.removal import runbook as rollback_runbook
from wheelflow.report import CellReport, FileReport, ReleaseReport
from wheelflow.routing import routed
from wheelflow.spec import BUILDERS, ReleaseSpec, Target, load_spec
from wheelflow.tasks.build import build_release_files, resolve_development_version, resolve_release_version
from wheelflow.tasks.check import check_release_files, check_target_rules
from wheelflow.tasks.matrix import CellJob, build_matrix_cell, smoke_matrix_cell
from wheelflow.tasks.upload import UploadInProgress, read_served_files, read_target, rollback_hook, upload_file
from wheelflow.tasks.verify import ServedCheckFailed, install_and_smoke_test, verify_served
from wheelflow.verification import HASH_MISMATCH, VERIFIED, compare
from wheelflow.versioning import ResolvedVersion


def failed_task_attempts(flow_run_id) -> tuple[list[str], list[dict]]:
    """The failed tasks of this run with each attempt (time and error), read back from the Prefect API."""
    from prefect.client.orchestration import get_client

    from wheelflow.runhistory import describe_attempts, task_histories

    from prefect.logging.handlers import APILogWorker

    try:
        APILogWorker.drain_all(timeout=5)  # the retried attempts' errors are in this run's logs, maybe still queued
        with get_client(sync_client=True) as client:
            histories = task_histories(client, flow_run_id, settle=10.0)
    except Exception as exc:  # the alert must go out even when the API cannot be read
        return [f"(retry history unavailable: {type(exc).__name__})"], []
    lines, failed = [], []
    for history in histories:
        if history.state in ("Failed", "Crashed", "TimedOut") or history.attempts > 1:
            lines.append(f"{history.name}: {history.state} after {history.attempts} attempt(s)")
            lines += [f"  {line}" for line in describe_attempts(history)]
            failed.append(history.json())
    return lines, failed


def alert_release_problem(flow, flow_run, state) -> None:
    """on_failure / on_crashed / on_cancellation: tell people the failing step and cell, with the
    retry history of what failed, and the rollback runbook when there is one."""
    report_path = wheelflow_home() / "reports" / f"{flow_run.id}.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    failed = [c for c in report.get("checks", []) if c["status"] == "failed"]
    failed_cells = [c for c in report.get("cells", []) if c["state"] == "failed"]
    project = report.get("name") or str(flow_run.parameters.get("project"))
    error = report.get("error") or state.message or state.name
    summary = f"release of {project} {report.get('version') or ''} {state.name.lower()}: {error}"
    attempt_lines, task_runs = failed_task_attempts(flow_run.id)
    lines = [f"failed step: {c['check']}: {c['detail']}" for c in failed]
    lines += [f"failed cell: {c['cell']}" for c in failed_cells]
    lines += attempt_lines
    if report.get("runbook"):
        lines += ["rollback runbook:", *report["runbook"]]
    ui = PREFECT_UI_URL.value()
    send_alert(
        Alert(event="release-failed", project=project, version=report.get("version"), summary=" ".join(summary.split()),
              flow_run_id=str(flow_run.id), flow_run_url=f"{ui}/runs/flow-run/{flow_run.id}" if ui else None,
              details={"state": state.name, "failed_checks": failed, "files": report.get("files", []),
                       "failed_cells": failed_cells, "task_runs": task_runs},
              lines=tuple(lines)),
        log=logging.getLogger("wheelflow.alerts").warning,
    )


@flow(name="release", log_prints=False, on_failure=[alert_release_problem], on_crashed=[alert_release_problem],
      on_cancellation=[alert_release_problem])
def release(
    project: str,
    spec_file: str | None = None,
    version: str | None = None,
    to: list[str] | None = None,
    builder: Literal["docker", "local"] | None = None,
    ref: str | None = None,
    cell_deployment: str | None = None,
    artifact_store: str | None = None,
    approval: Literal["manual", "auto", "auto-if-staging-verified"] | None = None,
    dev: bool = False,
) -> dict:
    """Release the project at ``project`` to its targets and prove every file is served.

    Args:
        project: path of the project to release (its pyproject.toml holds [tool.wheelflow]), or a git URL.
        spec_file: a standalone spec TOML, for projects whose repository you don't control.
        version: the version to release; must agree with the tag at HEAD and the version file.
        to: target names (default: the spec's targets, or the embedded local index).
        builder: "docker" or "local" for the wheel matrix (default: the spec's, else docker when a daemon answers).
        ref: the git ref (tag, branch, commit) to release when project is a git URL or repository.
        cell_deployment: FLOW/DEPLOYMENT that builds one matrix cell (build-cell/build-cell) on a GPU work
            pool; default: cells build in this flow run.
        artifact_store: fsspec URL where remote cells leave their wheels (default: $WHEELFLOW_HOME/artifacts).
        approval: who decides before each target after the first: manual, auto, or auto-if-staging-verified
            (default: the spec's approval, else auto).
        dev: a development build (nightly): version = next micro + .devYYYYMMDDHHMM of the checked-out commit,
            stamped through WHEELFLOW_RELEASE_VERSION; tags are not required; published to the first target only.
    """
    report = ReleaseReport(project=project, flow_run_id=flow_run.get_id())
    try:
        project = str(checkout(project, ref, wheelflow_home()))
        spec = load_spec(project, spec_file)
        report.name = spec.name
        targets = [spec.target(name) for name in (to or [t.name for t in spec.targets] or ["local"])]
        if dev:
            targets = targets[:1]  # a development build goes to the first target (staging), never further

        if dev and version:
            raise SpecError("version", "a development build computes its own version", "drop version, or dev")
        resolved = resolve_development_version(spec) if dev else resolve_release_version(spec, version)
        report.version = resolved.version
        report.add("development version" if dev else "tag/version match", True,
                   ", ".join(f"{k}: {v}" for k, v in resolved.sources.items()))
        for target in targets:
            credentials_for(target, wheelflow_home())  # missing credentials stop us before the build

        remote = RemoteCells(cell_deployment, artifact_store or default_store(wheelflow_home()),
                             spec_file) if cell_deployment else None
        dists, versions = build_everything(spec, resolved, builder, report, remote)
        report.files = [FileReport(d.filename, d.sha256, t.name, d.kind) for t in targets for d in routed(dists, t)]
        refuse_unrouted(dists, targets)

        check_release_files(dists, spec.name, versions, spec.artifacts)
        report.add("checked", True, "filenames, versions, METADATA, RECORD, twine check --strict")
        create_table_artifact(key=f"{artifact_key(spec.name)}-sha256", description="sha256 of every built file: "
                              "checked again before each upload and against what each index serves",
                              table=[{"file": d.filename, "sha256": d.sha256, "size": d.path.stat().st_size} for d in dists])

        with contextlib.ExitStack() as stack:
            endpoints = {t.name: stack.enter_context(open_endpoints(t, wheelflow_home())) for t in targets}
            present = read_present_files(spec, resolved.version, targets, endpoints, dists, report)
            # All targets in one Prefect transaction: a failure after uploads (verification, a
            # rejected approval) runs each upload's rollback hook, newest first.
            upload_failure: UploadError | None = None
            try:
                with transaction() as txn:
                    uploading = UploadInProgress()
                    try:
                        for position, target in enumerate(targets):
                            to_publish = [d for d in routed(dists, target) if d.filename not in present[target.name]]
                            if position and to_publish:  # a target that already serves everything needs no decision
                                await_approval(approval or spec.approval, spec.approval_timeout, target,
                                               targets[:position], report)
                            publish(spec, resolved.version, target, endpoints[target.name], routed(dists, target),
                                    present[target.name], report, txn, uploading)
                        confirm_published(dists, report)
                    except UploadError as exc:
                        # The index refused or did not answer: what landed stays, so that a re-run
                        # finishes the release with each file uploaded exactly once.
                        upload_failure = exc
            except WheelflowError:
                account_for_rollback(spec, resolved.version, targets, endpoints, report)
                raise
            if upload_failure is not None:
                report.add("kept uploaded files", True, "an upload failed: files already uploaded stay; "
                           "re-run the release to upload the rest")
                raise upload_failure
        write_manifest(wheelflow_home(), spec.name, resolved.version, {d.filename: d.sha256 for d in dists})
        report.ok = True
        if all(f.upload == "already present" for f in report.files):
            report.add("nothing to upload", True, "every file was already served with the same sha256; re-verified")
    except WheelflowError as exc:
        report.error = str(exc)
        get_run_logger().error(str(exc))
        raise
    finally:
        if report.builder == "docker":
            remove_containers({RUN_LABEL: str(report.flow_run_id)})  # whatever a timeout or cancellation left
        publish_report(report)
    return report.to_json()


def build_everything(spec: ReleaseSpec, resolved: ResolvedVersion, builder_name: str | None,
                     report: ReleaseReport, remote: "RemoteCells | None" = None) -> tuple[list[Distribution], dict[str, str]]:
    """The release's files and the version each must carry (variant wheels carry their cell's label)."""
    if spec.matrix is None:
        built = build_release_files(spec, resolved)
        report.add("built", True, ("reused from cache: " if built.cached else "") + ", ".join(d.filename for d in built.dists))
        return built.dists, {d.filename: resolved.version for d in built.dists}

    dists: list[Distribution] = []
    if "sdist" in spec.artifacts:
        sdist = build_release_files(spec, resolved, kinds=("sdist",))
        report.add("built sdist", True, ("reused from cache: " if sdist.cached else "") + sdist.dists[0].filename)
        dists += sdist.dists
    versions = {d.filename: resolved.version for d in dists}
    if "wheel" in spec.artifacts and remote is not None:
        for cell_name, wheel in build_cells_on_runners(spec, resolved, builder_name, remote, report):
            dists.append(wheel)
            versions[wheel.filename] = expected_version(resolved.version, next(
                c for c in spec.matrix.cells if c.name == cell_name))
    elif "wheel" in spec.artifacts:
        for build in build_wheel_matrix(spec, resolved, choose_builder(spec, builder_name), report):
            dists.append(build.wheel)
            versions[build.wheel.filename] = expected_version(resolved.version, next(
                c for c in spec.matrix.cells if c.name == build.cell))
    return dists, versions


@dataclass(frozen=True)
class RemoteCells:
    deployment: str
    store: str
    spec_file: str | None


def build_cells_on_runners(spec: ReleaseSpec, resolved: ResolvedVersion, builder_name: str | None,
                           remote: RemoteCells, report: ReleaseReport) -> list[tuple[str, Distribution]]:
    """One flow run of the build-cell deployment per cell, taken by whichever GPU worker is free;
    the wheels come back through the artifact store, checked against the sha256 the runner reported."""
    from prefect.deployments import run_deployment

    matrix = spec.matrix
    report.builder = f"{builder_name or spec.builder or 'default'} on {remote.deployment}"
    report.cells = [CellReport(c.name, image=c.image) for c in matrix.cells]
    rows = {row.cell: row for row in report.cells}
    parameters = {"project": str(spec.project_dir), "version": resolved.version, "artifact_store": remote.store,
                  "spec_file": remote.spec_file, "builder": builder_name, "source_date_epoch": resolved.commit_time}

    # Runs are created one after another (a SQLite-backed server handles that best) and then
    # followed together: the workers build them in parallel.
    started = {cell.name: run_deployment(remote.deployment, parameters={**parameters, "cell": cell.name},
                                         timeout=0, as_subflow=True) for cell in matrix.cells}
    final = follow_cell_runs(started, deadline=time.monotonic() + max(c.timeout for c in matrix.cells) + 600)

    wheels: list[tuple[str, Distribution]] = []
    for cell in matrix.cells:
        run = final[cell.name]
        row = rows[cell.name]
        if run.state is None or not run.state.is_completed():
            row.state = "failed"
            row.error = (f"flow run {run.name}: {run.state.name if run.state else 'no state'}: "
                         f"{run.state.message if run.state else ''}").strip(": ")
            continue
        result = artifactstore.get_run_record(remote.store, str(run.id))
        directory = wheelflow_home() / "builds" / "remote" / str(report.flow_run_id)
        wheel = describe(artifactstore.get(result["url"], directory, result["sha256"]))
        row.wheel, row.sha256, row.size, row.cached = wheel.filename, wheel.sha256, result["size"], result["cached"]
        row.state, row.attempts, row.duration = "built", result["attempts"], result["duration"]
        row.smoke, row.runner = result["smoke"] if result["smoke"] != "skipped" else result["smoke_message"], result["runner"]
        wheels.append((cell.name, wheel))
    failed = [r for r in report.cells if r.state == "failed"]
    report.add("built wheel matrix", not failed, f"{len(wheels)} of {len(matrix.cells)} cells on "
               f"{len({r.runner for r in report.cells if r.runner})} runner(s) via {remote.deployment}")
    if failed:
        raise BuildError(f"{len(failed)} of {len(matrix.cells)} cells failed: "
                         + "; ".join(f"{r.cell}: {r.error}" for r in failed))
    bad = [r for r in report.cells if r.smoke == "failed"]
    report.add("smoke test of every wheel", not bad, "; ".join(f"{r.cell}: {r.smoke}" for r in report.cells))
    if bad:
        raise BuildError(f"smoke test failed for {', '.join(r.cell for r in bad)}")
    return wheels


def follow_cell_runs(runs: dict, deadline: float) -> dict:
    """Poll the cells' flow runs until each is final (or the deadline passes); the latest read of each."""
    from prefect.client.orchestration import get_client

    latest = dict(runs)
    with get_client(sync_client=True) as client:
        while True:
            pending = [name for name, run in latest.items() if not (run.state and run.state.is_final())]
            if not pending or time.monotonic() > deadline:
                return latest
            for name in pending:
                latest[name] = client.read_flow_run(latest[name].id)
            time.sleep(2)  # the API offers no push to a flow run; poll it


def choose_builder(spec: ReleaseSpec, requested: str | None) -> Builder:
    name = requested or spec.builder
    if name is not None and name not in BUILDERS:
        raise SpecError("--builder", f"unknown builder {name!r}", 'use "docker" or "local"')
    if name is None:
        name = "docker" if daemon_answers() else "local"
    return DockerBuilder(spec.docker) if name == "docker" else LocalBuilder()


def build_wheel_matrix(spec: ReleaseSpec, resolved: ResolvedVersion, builder: Builder, report: ReleaseReport):
    """One build[cell] task run per cell, in parallel under the matrix's concurrency; then a smoke test of each."""
    matrix = spec.matrix
    report.builder = builder.kind
    report.cells = [CellReport(c.name, image=c.image if builder.kind == "docker" else None) for c in matrix.cells]
    rows = {row.cell: row for row in report.cells}
    for cell in matrix.cells:  # a cell this runner cannot build stops the release before any build
        try:
            builder.preflight(cell)
        except (CellUnbuildable, InfrastructureError) as exc:
            rows[cell.name].state, rows[cell.name].error = "failed", str(exc)
            raise BuildError(f"cell {cell.name} cannot be built by the {builder.kind} builder: {exc}") from None

    job = CellJob(project=str(spec.project_dir), source_digest=source_digest(spec.project_dir), name=spec.name,
                  version=resolved.version, build_env=dict(spec.build_env), home=str(wheelflow_home()),
                  run_label=str(report.flow_run_id), source_date_epoch=resolved.commit_time)
    with ThreadPoolTaskRunner(max_workers=matrix.concurrency) as runner:
        futures = {cell.name: runner.submit(build_matrix_cell, {"builder": builder, "cell": cell, "job": job})
                   for cell in matrix.cells}
        builds = {}
        for cell in matrix.cells:
            futures[cell.name].wait()
            row, state = rows[cell.name], futures[cell.name].state
            outcome = state.result(raise_on_failure=False)
            if isinstance(outcome, BaseException) or not state.is_completed():
                row.state, row.error = "failed", str(outcome) if isinstance(outcome, BaseException) else state.message
                row.attempts = getattr(outcome, "attempts", None) or _attempts(futures[cell.name])
                continue
            build, attempts = outcome
            builds[cell.name] = build
            row.wheel, row.sha256, row.size = build.wheel.filename, build.wheel.sha256, build.wheel.path.stat().st_size
            row.cached, row.state, row.attempts, row.duration = build.cached, "built", attempts, build.duration
        failed = [r for r in report.cells if r.state == "failed"]
        report.add("built wheel matrix", not failed,
                   f"{len(builds)} of {len(matrix.cells)} cells by the {builder.kind} builder"
                   + (f" ({sum(r.cached for r in report.cells)} cached)" if builds else ""))
        if failed:
            raise BuildError(f"{len(failed)} of {len(matrix.cells)} cells failed: "
                             + "; ".join(f"{r.cell}: {r.error}" for r in failed))

        smokes = {cell.name: runner.submit(smoke_matrix_cell, {"builder": builder, "cell": cell, "build": builds[cell.name],
                                                               "smoke": spec.smoke, "run_label": job.run_label})
                  for cell in matrix.cells}
        for cell in matrix.cells:
            result = smokes[cell.name].result()
            rows[cell.name].smoke = result.message if result.state == "skipped" else result.state
            if result.state == "failed":
                rows[cell.name].error = result.message
    bad = [r for r in report.cells if r.smoke == "failed"]
    report.add("smoke test of every wheel", not bad, "; ".join(f"{r.cell}: {r.smoke}" for r in report.cells))
    if bad:
        raise CheckError(f"smoke test failed for cell {bad[0].cell}: {bad[0].error}")
    return [builds[cell.name] for cell in matrix.cells]


def _attempts(future) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_task_run(future.task_run_id).run_count


def refuse_unrouted(dists: list[Distribution], targets: list[Target]) -> None:
    """A built file that no target takes would be built but never published: refuse up front."""
    for dist in dists:
        if not any(dist in routed(dists, t) for t in targets):
            raise PublishError(
                f"built but not published: {dist.filename} is routed to no target ({', '.join(t.name for t in targets)}); "
                f"fix: add \"{dist.kind}\" to a target's artifacts, or stop building it"
            )


def confirm_published(dists: list[Distribution], report: ReleaseReport) -> None:
    """The last word: every built file was uploaded (or already there) and verified on every target it was routed to."""
    for entry in report.files:
        if entry.upload not in ("uploaded", "already present") or entry.status != VERIFIED:
            raise PublishError(f"built but not published: {entry.filename} on {entry.target} "
                               f"(upload: {entry.upload}, served: {entry.status})")
    for dist in dists:
        if not any(f.filename == dist.filename for f in report.files):
            raise PublishError(f"built but not published: {dist.filename} reached no target")


def read_present_files(spec, version, targets, endpoints, dists, report) -> dict[str, set[str]]:
    """What each target already serves with our bytes. Other bytes under one of our names, or a
    target rule broken, stops the release before the first upload anywhere."""
    present: dict[str, set[str]] = {}
    for target in targets:
        served = read_served_files(endpoints[target.name], spec.name, version)
        check_target_rules(routed(dists, target), target, served)
        expected = {d.filename: d.sha256 for d in routed(dists, target)}
        statuses = compare(expected, served)
        present[target.name] = {s.filename for s in statuses if s.status == VERIFIED}
        clashes = [s for s in statuses if s.status == HASH_MISMATCH]
        for clash in clashes:
            report.file(clash.filename, target.name).status = HASH_MISMATCH
        if clashes:
            report.add(f"no conflicting files on {target.name}", False, clashes[0].describe())
            raise HashMismatchError(
                f"{target.name}: {clashes[0].describe()}; fix: indexes never replace a file: release a new version (e.g. a .post1)"
            )
    return present


def publish(spec: ReleaseSpec, version: str, target: Target, endpoints, dists: list[Distribution],
            present: set[str], report: ReleaseReport, txn=None, uploading: UploadInProgress | None = None) -> None:
    """Upload what the target lacks, then prove every routed file is served and installs. Each upload
    adds a rollback hook to the release's transaction ``txn``."""
    for dist in dists:
        entry = report.file(dist.filename, target.name)
        if dist.filename in present:
            entry.upload = "already present"
            report.add(f"uploaded {dist.filename} to {target.name}", True, "already present: not uploaded again")
            continue
        uploading = uploading or UploadInProgress()
        uploading.active = True
        try:
            entry.upload = upload_file(dist, target, endpoints, spec.name, version)
        except WheelflowError:
            entry.upload = "failed"
            report.add(f"uploaded {dist.filename} to {target.name}", False)
            raise
        finally:
            uploading.active = False
        report.add(f"uploaded {dist.filename} to {target.name}", True, entry.upload)
        if txn is not None:
            txn.on_rollback_hooks.append(rollback_hook(target, endpoints, spec.name, dist.filename, sorted(present),
                                                       uploading))

    try:
        served = verify_served(endpoints, spec.name, version, dists)
    except ServedCheckFailed as exc:
        for status in exc.statuses:
            report.file(status.filename, target.name).status = status.status
            report.add(f"served {status.filename} on {target.name}", status.status == VERIFIED, status.describe())
        raise
    for dist in dists:
        report.file(dist.filename, target.name).status = VERIFIED
        report.add(f"served {dist.filename} on {target.name}", True, f"sha256 {dist.sha256[:16]}… matches")

    try:
        message = install_and_smoke_test(endpoints, spec.name, version, served, spec.smoke)
    except WheelflowError as exc:
        report.add(f"install + smoke on {target.name}", False, str(exc))
        raise
    report.add(f"install + smoke on {target.name}", True, message)


def await_approval(policy: str, timeout: int, target: Target, earlier: list[Target], report: ReleaseReport) -> None:
    """The gate before ``target``: pass by policy, or pause for a person's Decision."""
    names = {t.name for t in earlier}
    earlier_verified = all(f.status == VERIFIED for f in report.files if f.target in names)
    check = f"approval to publish to {target.name}"
    if not needs_person(policy, earlier_verified):
        report.add(check, True, f"policy {policy}" + (": earlier targets verified" if policy != "auto" else ""))
        return
    logger = get_run_logger()
    run_id = flow_run.get_id()
    logger.warning("waiting up to %d s for a decision to publish to %s: approve in the Prefect UI, or run "
                   "`wheelflow approve %s` (or `--reject --reason ...`)", timeout, target.name, run_id)
    form = Decision.with_initial_data(
        description=f"Publish {report.name} {report.version} to **{target.name}**? "
                    f"Verified so far on {', '.join(sorted(names))}.", approve=False)
    try:
        decision = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=2, key=approval_key(target.name))
    except FlowPauseTimeout:
        report.add(check, False, f"no decision within {timeout} s")
        raise ApprovalError(f"no decision to publish to {target.name} within {timeout} s: nothing was published to "
                            f"{target.name}; fix: re-run the release and answer with `wheelflow approve RUN_ID`") from None
    if not decision.approve:
        report.add(check, False, f"rejected: {decision.reason or 'no reason given'}")
        raise ApprovalError(f"publishing to {target.name} was rejected: {decision.reason or 'no reason given'}; "
                            f"nothing was published to {target.name}")
    report.add(check, True, f"approved: {decision.reason or 'no reason given'}")


def account_for_rollback(spec: ReleaseSpec, version: str, targets: list[Target], endpoints, report: ReleaseReport) -> None:
    """After the rollback hooks ran: read each target back, and write a runbook for what stayed."""
    runbook: list[str] = []
    for target in targets:
        uploaded = [f.filename for f in report.files if f.target == target.name and f.upload == "uploaded"]
        if not uploaded:
            continue
        try:
            still = {s.filename for s in read_target(endpoints[target.name], spec.name, version)}
        except WheelflowError:
            still = set(uploaded)  # unknown: assume the worst
        stayed = [f for f in uploaded if f in still]
        removed = [f for f in uploaded if f not in still]
        for filename in removed:
            entry = report.file(filename, target.name)
            entry.upload, entry.status = "rolled back", "removed"
        if removed:
            report.add(f"rolled back {target.name}", True, "removed " + ", ".join(removed))
        if stayed:
            report.add(f"rolled back {target.name}", False, "still served: " + ", ".join(stayed))
            runbook += rollback_runbook(spec.name, version, target.name, stayed, endpoints[target.name].public)
    report.runbook = runbook


def artifact_key(name: str) -> str:
    return f"release-{name}".lower().replace("_", "-").replace(".", "-")


def publish_report(report: ReleaseReport) -> None:
    """The checklist table and markdown summary as Prefect artifacts, and the JSON under $WHEELFLOW_HOME."""
    if report.error and not any(c.status == "failed" for c in report.checks):
        report.add("release", False, report.error)
    key = artifact_key(report.name or "unknown")
    create_table_artifact(key=key, table=report.table_rows(), description=f"Release checklist: {report.name} {report.version}")
    if report.cells:
        create_table_artifact(key=f"{key}-cells", table=[c.table_row() for c in report.cells],
                              description=f"Wheel matrix ({report.builder} builder)")
    create_markdown_artifact(key=f"{key}-summary", markdown=report.markdown(), description="Release summary")
    report.save(wheelflow_home() / "reports")
