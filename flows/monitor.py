"""The sync monitor: for each project, compare its release tags with what each index serves,
alert once per incident (then reminders, then a resolved message), optionally start a release."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from wheelflow.adapters.prefect_api import PrefectVariableStore, read_secret, read_variable, ui_url
from wheelflow.config.spec import ReleaseSpec, load_spec_file
from wheelflow.core.errors import MonitorFoundProblems, NothingToMonitor
from wheelflow.core.home import wheelflow_home
from wheelflow.core.redaction import redact_url
from wheelflow.flows.targets import publisher_for
from wheelflow.ops.alerts import Alert
from wheelflow.ops.incidents import OPENED, RESOLVED, Notice, plan_notices
from wheelflow.ops.monitor import DEFAULT_EXPECT, VersionStatus, expectations_from_spec, name_missing_cells, table_rows
from wheelflow.source.gittags import DEFAULT_TAG_PATTERNS
from wheelflow.tasks.monitor import (
    check_index,
    check_target,
    deliver_alert,
    list_release_tags,
    trigger_backfill,
    trigger_release,
)


class MonitoredProject(BaseModel):
    """One project to watch (a form section in the Prefect UI)."""

    name: str = Field(description="Distribution name on the index")
    repo: str = Field(description="Git URL or local path whose tags are the releases")
    indexes: list[str] = Field(
        default=["pypi"],
        description="Index aliases (pypi, testpypi, local), Simple API URLs, or targets of the project's spec "
        "(any kind: a github-release target's release assets)",
    )
    expect: list[str] = Field(
        default_factory=list,
        description="Expected file patterns, e.g. "
        "{name}-{version}-py3-none-any.whl; empty: at least one file per version",
    )
    tag_patterns: list[str] = Field(default=list(DEFAULT_TAG_PATTERNS), description="Release tag patterns")
    grace_hours: float = Field(default=24.0, ge=0, description="How long after the tag files may still be missing")
    release_deployment: str | None = Field(
        default=None, description="FLOW/DEPLOYMENT started to remediate a missing version (with remediate=true)"
    )
    release_parameters: dict[str, Any] = Field(
        default_factory=dict, description="Parameters for that deployment; version is added"
    )
    backfill_deployment: str | None = Field(
        default=None,
        description="FLOW/DEPLOYMENT started to remediate an "
        "incomplete version, e.g. backfill/backfill (with remediate=true)",
    )
    backfill_parameters: dict[str, Any] = Field(
        default_factory=dict, description="Parameters for that deployment (project, to, ...); versions is added"
    )
    spec: str | None = Field(
        default=None,
        description="The project's spec (a pyproject.toml or standalone TOML): "
        "its matrix names the missing cells, and it gives the expected files when expect is empty",
    )


PROJECTS_VARIABLE = "wheelflow-monitor-projects"


def notice_alert(notice: Notice, run_url: str | None) -> Alert:
    incident, result = notice.incident, notice.status
    where = f"{incident.project} {incident.version} on {incident.index}"
    if notice.kind == RESOLVED:
        summary = f"resolved: {where} is served" + (
            f" ({result.status}, lag {result.lag_hours} h)" if result and result.lag_hours is not None else ""
        )
    else:
        summary = f"{incident.status}: {where}" + (" (reminder)" if notice.kind != OPENED else "")
    lines = [f"project: {incident.project}", f"version: {incident.version}", f"index: {incident.index}"]
    if result:
        lines.append(f"tagged: {result.tag} at {result.tag_time}")
    lines.append(f"incident open since: {incident.opened_at}")
    if notice.kind != RESOLVED and incident.missing:
        lines.append("missing: " + ", ".join(incident.missing))
    if notice.kind != RESOLVED and result and result.mismatched:
        lines.append("sha256 differs from the release manifest: " + ", ".join(result.mismatched))
    return Alert(
        event=f"incident-{notice.kind}",
        project=incident.project,
        version=incident.version,
        summary=summary,
        flow_run_id=str(flow_run.get_id()),
        flow_run_url=run_url,
        lines=tuple(lines),
        details={
            "index": incident.index,
            "status": incident.status,
            "missing": list(incident.missing),
            "opened_at": incident.opened_at,
        },
    )


def watched_spec(spec_file: str) -> ReleaseSpec:
    """The spec of a watched project, read as ``wheelflow monitor --spec`` reads it: a standalone spec
    or a pyproject.toml, without the project's files (only names, artifacts, matrix and tags count)."""
    return load_spec_file(spec_file, Path(spec_file).parent, project_files=False)


def expected_files(spec: ReleaseSpec) -> tuple[str, ...]:
    local = [c.local_version for c in spec.matrix.cells] if spec.matrix else []
    return expectations_from_spec(spec.artifacts, local)


def configured_projects(projects: list[MonitoredProject] | None) -> list[MonitoredProject]:
    """The ``projects`` parameter, else the Prefect Variable the UI edits; neither is an error."""
    if projects:
        return projects
    stored = read_variable(PROJECTS_VARIABLE)
    if stored:
        return [MonitoredProject.model_validate(p) for p in stored]
    raise NothingToMonitor(
        f"sync-monitor has no projects to watch; fix: set the deployment's `projects` parameter, "
        f"or the Prefect Variable {PROJECTS_VARIABLE!r} (a JSON list of projects: name, repo, "
        "indexes), e.g. in the UI under Variables"
    )


@flow(name="sync-monitor", log_prints=False)
def sync_monitor(
    projects: list[MonitoredProject] | None = None,
    reminder_hours: float = 24.0,
    remediate: bool = False,
    as_of: datetime | None = None,
) -> list[dict]:
    """Compare git tags with what the indexes serve; alert once per incident; optionally re-release.

    Args:
        projects: the projects to watch (default: the Prefect Variable wheelflow-monitor-projects).
        reminder_hours: how often an open incident is re-announced.
        remediate: once per incident, start the project's release deployment for a missing version and its
            backfill deployment for an incomplete one.
        as_of: replay history: only tags and uploads at or before this instant count (default: now).
    """
    logger = get_run_logger()
    seen_at = as_of or datetime.now(timezone.utc)
    watched = configured_projects(projects)
    results: list[VersionStatus] = []
    for project in watched:
        spec = watched_spec(project.spec) if project.spec else None
        expect = tuple(project.expect) or (expected_files(spec) if spec else DEFAULT_EXPECT)
        tags = list_release_tags(project.repo, tuple(project.tag_patterns))
        if not tags:
            raise NothingToMonitor(
                f"{project.name}: no tag in {redact_url(project.repo)} matches "
                f"{', '.join(project.tag_patterns)}: nothing was checked; fix: set the project's "
                "tag_patterns to the form of its release tags (e.g. v{version})"
            )
        targets = {t.name: t for t in spec.targets} if spec else {}
        for index in project.indexes:
            if index in targets:  # a target of the spec, of any kind, read through its kind's reader
                target = targets[index]
                with publisher_for(target).reader(
                    target, wheelflow_home(), read_secret, project=project.name
                ) as reader:
                    served = check_target(project.name, reader, tags, expect, seen_at, project.grace_hours)
            else:
                served = check_index(project.name, index, tags, expect, seen_at, project.grace_hours)
            results += name_missing_cells(served, spec.matrix.cells) if spec and spec.matrix else served

    run_url = ui_url(str(flow_run.get_id()))
    store = PrefectVariableStore()
    still_open, notices = plan_notices(
        store.load(), results, datetime.now(timezone.utc), timedelta(hours=reminder_hours)
    )
    for notice in notices:
        deliver_alert(notice_alert(notice, run_url))

    if remediate:
        by_name = {p.name: p for p in watched}
        for key, incident in still_open.items():
            project = by_name.get(incident.project)
            if incident.remediation_run is not None or project is None:
                continue
            # Nothing served: the release never happened, release it. Some cells missing: backfill them.
            if incident.status == "missing" and project.release_deployment:
                run_id = trigger_release(project.release_deployment, project.release_parameters, incident.version)
            elif incident.status == "incomplete" and project.backfill_deployment:
                run_id = trigger_backfill(project.backfill_deployment, project.backfill_parameters, incident.version)
            else:
                continue
            still_open[key] = replace(incident, remediation_run=run_id)
            logger.info(
                "remediation for %s %s (%s): flow run %s", incident.project, incident.version, incident.status, run_id
            )
    store.save(still_open)

    create_table_artifact(
        key="sync-monitor",
        table=table_rows(results),
        description=f"Release sync as of {seen_at.isoformat()}: versions × indexes",
    )
    problems = [r for r in results if r.problem]
    if problems:
        listed = ", ".join(f"{r.project} {r.version}@{redact_url(r.index)} {r.status}" for r in problems[:10])
        logger.error("%d problem(s): %s", len(problems), listed)
        raise MonitorFoundProblems(f"{len(problems)} version(s) not served as expected: {listed}")
    logger.info("%d version × index pair(s) checked, none overdue", len(results))
    return [r.json() for r in results]
