"""The release recipe: resolve the version, build, check, upload, verify, report."""

from __future__ import annotations

import contextlib
import json
import logging

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL

from wheelflow.alerts import Alert, send_alert

from wheelflow.distributions import Distribution
from wheelflow.errors import HashMismatchError, PublishError, WheelflowError
from wheelflow.localindex import credentials_for, open_endpoints, wheelflow_home
from wheelflow.report import FileReport, ReleaseReport
from wheelflow.spec import ReleaseSpec, Target, load_spec
from wheelflow.tasks.build import build_release_files, resolve_release_version
from wheelflow.tasks.check import check_release_files, check_target_rules
from wheelflow.tasks.upload import read_served_files, upload_file
from wheelflow.tasks.verify import ServedCheckFailed, install_and_smoke_test, verify_served
from wheelflow.verification import HASH_MISMATCH, VERIFIED, compare


def alert_release_problem(flow, flow_run, state) -> None:
    """on_failure / on_crashed / on_cancellation: tell people, with the report's failing step."""
    report_path = wheelflow_home() / "reports" / f"{flow_run.id}.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    failed = [c for c in report.get("checks", []) if c["status"] == "failed"]
    project = report.get("name") or str(flow_run.parameters.get("project"))
    error = report.get("error") or state.message or state.name
    summary = f"release of {project} {report.get('version') or ''} {state.name.lower()}: {error}"
    ui = PREFECT_UI_URL.value()
    send_alert(
        Alert(event="release-failed", project=project, version=report.get("version"), summary=" ".join(summary.split()),
              flow_run_id=str(flow_run.id), flow_run_url=f"{ui}/runs/flow-run/{flow_run.id}" if ui else None,
              details={"state": state.name, "failed_checks": failed, "files": report.get("files", [])}),
        log=logging.getLogger("wheelflow.alerts").warning,
    )


@flow(name="release", log_prints=False, on_failure=[alert_release_problem], on_crashed=[alert_release_problem],
      on_cancellation=[alert_release_problem])
def release(
    project: str,
    spec_file: str | None = None,
    version: str | None = None,
    to: list[str] | None = None,
) -> dict:
    """Release the project at ``project`` to its targets and prove every file is served.

    Args:
        project: path of the project to release (its pyproject.toml holds [tool.wheelflow]).
        spec_file: a standalone spec TOML, for projects whose repository you don't control.
        version: the version to release; must agree with the tag at HEAD and the version file.
        to: target names (default: the spec's targets, or the embedded local index).
    """
    report = ReleaseReport(project=project, flow_run_id=flow_run.get_id())
    try:
        spec = load_spec(project, spec_file)
        report.name = spec.name
        targets = [spec.target(name) for name in (to or [t.name for t in spec.targets] or ["local"])]

        resolved = resolve_release_version(spec, version)
        report.version = resolved.version
        report.add("tag/version match", True, ", ".join(f"{k}: {v}" for k, v in resolved.sources.items()))
        for target in targets:
            credentials_for(target, wheelflow_home())  # missing credentials stop us before the build

        built = build_release_files(spec, resolved)
        report.add("built", True, ("reused from cache: " if built.cached else "") + ", ".join(d.filename for d in built.dists))
        report.files = [FileReport(d.filename, d.sha256, t.name, d.kind) for t in targets for d in routed(built.dists, t)]
        refuse_unrouted(built.dists, targets)

        check_release_files(built.dists, spec.name, resolved.version, spec.artifacts)
        report.add("checked", True, "filenames, versions, twine check --strict")

        with contextlib.ExitStack() as stack:
            endpoints = {t.name: stack.enter_context(open_endpoints(t, wheelflow_home())) for t in targets}
            present = read_present_files(spec, resolved.version, targets, endpoints, built.dists, report)
            for target in targets:
                publish(spec, resolved.version, target, endpoints[target.name], routed(built.dists, target),
                        present[target.name], report)
        confirm_published(built.dists, report)
        report.ok = True
        if all(f.upload == "already present" for f in report.files):
            report.add("nothing to upload", True, "every file was already served with the same sha256; re-verified")
    except WheelflowError as exc:
        report.error = str(exc)
        get_run_logger().error(str(exc))
        raise
    finally:
        publish_report(report)
    return report.to_json()


def routed(dists: list[Distribution], target: Target) -> list[Distribution]:
    return [d for d in dists if d.kind in target.artifacts]


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
            present: set[str], report: ReleaseReport) -> None:
    """Upload what the target lacks, then prove every routed file is served and installs."""
    for dist in dists:
        entry = report.file(dist.filename, target.name)
        if dist.filename in present:
            entry.upload = "already present"
            report.add(f"uploaded {dist.filename} to {target.name}", True, "already present: not uploaded again")
            continue
        try:
            entry.upload = upload_file(dist, target, endpoints, spec.name, version)
        except WheelflowError:
            entry.upload = "failed"
            report.add(f"uploaded {dist.filename} to {target.name}", False)
            raise
        report.add(f"uploaded {dist.filename} to {target.name}", True, entry.upload)

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


def publish_report(report: ReleaseReport) -> None:
    """The checklist table and markdown summary as Prefect artifacts, and the JSON under $WHEELFLOW_HOME."""
    if report.error and not any(c.status == "failed" for c in report.checks):
        report.add("release", False, report.error)
    key = f"release-{report.name or 'unknown'}".lower().replace("_", "-").replace(".", "-")
    create_table_artifact(key=key, table=report.table_rows(), description=f"Release checklist: {report.name} {report.version}")
    create_markdown_artifact(key=f"{key}-summary", markdown=report.markdown(), description="Release summary")
    report.save(wheelflow_home() / "reports")
