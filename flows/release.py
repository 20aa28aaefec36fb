"""The release recipe: resolve the version, build, check, upload, verify, report."""

from __future__ import annotations

import contextlib

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from wheelflow.distributions import Distribution
from wheelflow.errors import HashMismatchError, WheelflowError
from wheelflow.localindex import credentials_for, open_endpoints, wheelflow_home
from wheelflow.report import FileReport, ReleaseReport
from wheelflow.spec import ReleaseSpec, Target, load_spec
from wheelflow.tasks.build import build_release_files, resolve_release_version
from wheelflow.tasks.check import check_release_files
from wheelflow.tasks.upload import read_served_files, upload_file
from wheelflow.tasks.verify import ServedCheckFailed, install_and_smoke_test, verify_served
from wheelflow.verification import HASH_MISMATCH, VERIFIED, compare


@flow(name="release", log_prints=False)
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

        check_release_files(built.dists, spec.name, resolved.version, spec.artifacts)
        report.add("checked", True, "filenames, versions, twine check --strict")

        with contextlib.ExitStack() as stack:
            endpoints = {t.name: stack.enter_context(open_endpoints(t, wheelflow_home())) for t in targets}
            present = read_present_files(spec, resolved.version, targets, endpoints, built.dists, report)
            for target in targets:
                publish(spec, resolved.version, target, endpoints[target.name], routed(built.dists, target),
                        present[target.name], report)
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


def read_present_files(spec, version, targets, endpoints, dists, report) -> dict[str, set[str]]:
    """What each target already serves with our bytes; other bytes under one of our names stops
    the release before the first upload anywhere."""
    present: dict[str, set[str]] = {}
    for target in targets:
        served = read_served_files(endpoints[target.name], spec.name, version)
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
