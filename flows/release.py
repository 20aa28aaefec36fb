"""The release recipe: resolve the version, build, check, then for each target gate → upload →
prove, and record the result. Each step lives in its own module of this package; the report
records every step, and the failure hook alerts people when the run does not end green."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from wheelflow.builds.builders.docker import RUN_LABEL, remove_containers
from wheelflow.core.cancel import RunCancelled
from wheelflow.core.codeversion import describe_code
from wheelflow.core.distributions import Distribution
from wheelflow.core.errors import ReleaseStepFailed, WheelflowError
from wheelflow.core.home import wheelflow_home
from wheelflow.core.report import ReleaseReport
from wheelflow.flows.abigate import abi_gate, wheels_of_cells
from wheelflow.flows.cancelling import cancelled_state, reason_given, stopped_by_signals
from wheelflow.flows.context import ReleaseContext, one_release_at_a_time, prepare
from wheelflow.flows.hooks import alert_release_problem
from wheelflow.flows.matrix import build
from wheelflow.flows.publishing import check_credentials, gate, prove_stage, publish_stage, publishing, refuse_unrouted
from wheelflow.ops.monitor import write_manifest
from wheelflow.tasks.check import check_release_files


@flow(
    name="release",
    log_prints=False,
    on_failure=[alert_release_problem],
    on_crashed=[alert_release_problem],
    on_cancellation=[alert_release_problem],
)
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
    git_secret: str | None = None,
    allow_dirty: bool = False,
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
        artifact_store: fsspec URL where remote cells leave their wheels (default: $WHEELFLOW_ARTIFACT_STORE, else
            $WHEELFLOW_HOME/artifacts, which other machines reach only as a shared mount).
        approval: who decides before each target after the first: manual, auto, or auto-if-staging-verified
            (default: the spec's approval, else auto).
        dev: a development build (nightly): version = next micro + .devYYYYMMDDHHMM of the checked-out commit,
            stamped through WHEELFLOW_RELEASE_VERSION; tags are not required; published to the first target only.
        git_secret: name of a Prefect Secret block holding the git credentials for a private project URL
            (default: WHEELFLOW_GIT_USERNAME/WHEELFLOW_GIT_PASSWORD); a URL itself never carries credentials.
        allow_dirty: build the working tree where its tracked files differ from the release commit (the
            report and the build manifest say dirty); by default such a release is refused before building.
    """
    home = wheelflow_home()
    report = ReleaseReport(project=project, flow_run_id=flow_run.get_id())
    get_run_logger().info(f"run by {describe_code(report.code)}")
    cancelled: RunCancelled | None = None
    published: dict[str, Any] = {}
    with stopped_by_signals():  # SIGTERM, SIGINT: RunCancelled wherever the run is
        try:
            try:
                ctx = prepare(
                    report,
                    home,
                    project=project,
                    spec_file=spec_file,
                    version=version,
                    to=to,
                    ref=ref,
                    dev=dev,
                    builder=builder,
                    approval=approval,
                    cell_deployment=cell_deployment,
                    artifact_store=artifact_store,
                    git_secret=git_secret,
                    allow_dirty=allow_dirty,
                )
                check_credentials(ctx)  # missing credentials stop us before the build
                with one_release_at_a_time(ctx):
                    dists, versions = build(ctx)
                    check(ctx, dists, versions)
                    with publishing(ctx, dists) as release_txn:
                        for stage in release_txn.stages:
                            gate(ctx, stage)
                            publish_stage(ctx, release_txn, stage)
                            prove_stage(ctx, stage)
                    record(ctx, dists)
            except WheelflowError as exc:
                report.error = str(exc)
                get_run_logger().error(str(exc))
                # the final state message (`status`, `trigger`, the alert; the UI on hover) names the step
                raise ReleaseStepFailed(report.failed_step() or "release", exc) from exc
            except RunCancelled as exc:
                cancelled = RunCancelled(reason_given(exc.reason))
                report.error = f"cancelled: {cancelled.reason}"
                get_run_logger().error("the release was cancelled: %s", cancelled.reason)
            finally:
                if report.builder == "docker":
                    remove_containers({RUN_LABEL: str(report.flow_run_id)})  # whatever a timeout or cancellation left
                published = publish_report(report, home)
        except RunCancelled as exc:  # one that landed in the finally block above
            cancelled = exc
        if cancelled is not None:
            return cancelled_state(cancelled.reason)  # type: ignore[return-value]
    return published


def check(ctx: ReleaseContext, dists: list[Distribution], versions: dict[str, str]) -> None:
    """Every file is routed somewhere and passes the audits; its sha256 becomes an artifact."""
    refuse_unrouted(ctx, dists)
    strict = ctx.spec.strict_checks
    with ctx.report.step(
        "checked",
        f"every entry read (paths, links, size), RECORD, filenames, versions, METADATA, platform tags, twine check{' (strict)' if strict else ''}",
    ) as step:
        step.detail = check_release_files(dists, ctx.spec.name, versions, ctx.spec.artifacts, strict) or step.detail
    abi_gate(ctx.spec, ctx.home, ctx.report, wheels_of_cells(ctx.report, dists, ctx.spec.name))
    create_table_artifact(
        key=f"{artifact_key(ctx.spec.name)}-sha256",
        description="sha256 of every built file: checked again before each upload and against what each index serves",
        table=[{"file": d.filename, "sha256": d.sha256, "size": d.path.stat().st_size} for d in dists],
    )


def record(ctx: ReleaseContext, dists: list[Distribution]) -> None:
    """The release manifest (what the monitor compares indexes with) and the verdict."""
    write_manifest(ctx.home, ctx.spec.name, ctx.version, {d.filename: d.sha256 for d in dists})
    ctx.report.ok = True
    if all(f.upload == "already present" for f in ctx.report.files):
        ctx.report.add("nothing to upload", True, "every file was already served with the same sha256; re-verified")


def artifact_key(name: str) -> str:
    return f"release-{name}".lower().replace("_", "-").replace(".", "-")


def publish_report(report: ReleaseReport, home) -> dict[str, Any]:
    """The checklist table and markdown summary as Prefect artifacts, and the JSON under $WHEELFLOW_HOME,
    which is returned: the flow's result (redacting it is most of its cost, so it is done once)."""
    if report.error and not any(c.status == "failed" for c in report.checks):
        report.add("release", False, report.error)
    published = report.to_json()
    report.save(home / "reports", published)
    if report.name is None:  # it failed before the project was known: its error is the run's state message
        return published
    key = artifact_key(report.name)
    create_table_artifact(
        key=key, table=report.table_rows(), description=f"Release checklist: {report.name} {report.version}"
    )
    create_table_artifact(
        key=f"{key}-files",
        table=report.file_rows(),
        description=f"Each file of {report.name} {report.version} on each target, and its proof",
    )
    if report.cells:
        create_table_artifact(
            key=f"{key}-cells",
            table=[c.table_row() for c in report.cells],
            description=f"Wheel matrix ({report.builder} builder)",
        )
    create_markdown_artifact(key=f"{key}-summary", markdown=report.markdown(), description="Release summary")
    return published
