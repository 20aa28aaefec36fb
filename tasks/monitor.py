"""Monitor steps: list release tags, check one index, send one notice, trigger one remediation."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from wheelflow.adapters.prefect_api import read_secret
from wheelflow.core.home import wheelflow_home
from wheelflow.core.redaction import redact_url
from wheelflow.index.readers import TargetReader
from wheelflow.ops.alerts import Alert, configured_channels, send_alert
from wheelflow.ops.monitor import VersionStatus, check_one_index, check_one_reader, read_tags
from wheelflow.source.gittags import ReleaseTag
from wheelflow.tasks.retry import NETWORK_BACKOFF, NETWORK_JITTER, NETWORK_RETRIES, gives_up, only_transient


@task(
    name="list-release-tags",
    task_run_name="list-release-tags",
    retries=NETWORK_RETRIES,
    retry_delay_seconds=NETWORK_BACKOFF,
    retry_jitter_factor=NETWORK_JITTER,
    retry_condition_fn=only_transient,
)
@gives_up
def list_release_tags(repo: str, patterns: tuple[str, ...]) -> list[ReleaseTag]:
    tags = read_tags(repo, patterns, wheelflow_home())
    get_run_logger().info("%d release tag(s) in %s", len(tags), redact_url(repo))
    return tags


@task(
    name="check-index",
    task_run_name="check[{project}@{index}]",
    retries=NETWORK_RETRIES,
    retry_delay_seconds=NETWORK_BACKOFF,
    retry_jitter_factor=NETWORK_JITTER,
    retry_condition_fn=only_transient,
)
@gives_up
def check_index(
    project: str, index: str, tags: list[ReleaseTag], expect: tuple[str, ...], as_of: datetime, grace_hours: float
) -> list[VersionStatus]:
    results = check_one_index(project, index, tags, expect, as_of, timedelta(hours=grace_hours), wheelflow_home())
    log_problems(project, index, results)
    return results


# no cache key: the reader holds an open client (and a token), which must not be hashed or persisted
@task(name="check-target", task_run_name="check[{reader.name}]", cache_policy=NO_CACHE)
def check_target(
    project: str,
    reader: TargetReader,
    tags: list[ReleaseTag],
    expect: tuple[str, ...],
    as_of: datetime,
    grace_hours: float,
) -> list[VersionStatus]:
    """A target of the project's spec, of any kind, read through its reader (a GitHub release's assets)."""
    results = check_one_reader(project, reader, tags, expect, as_of, timedelta(hours=grace_hours), wheelflow_home())
    log_problems(project, reader.name, results)
    return results


def log_problems(project: str, index: str, results: list[VersionStatus]) -> None:
    logger = get_run_logger()
    for result in results:
        if result.status != "ok":
            logger.warning(
                "%s %s on %s: %s%s%s",
                project,
                result.version,
                index,
                result.status,
                " (overdue)" if result.overdue else "",
                f"; missing: {', '.join(result.missing)}" if result.missing else "",
            )


@task(name="send-alert", task_run_name="alert[{alert.event}:{alert.project}]")
def deliver_alert(alert: Alert) -> int:
    """Each channel retries on its own (webhooks with backoff, SMTP); the task itself never re-sends."""
    return send_alert(alert, configured_channels(read_secret=read_secret), log=get_run_logger().info)


@task(name="trigger-release", task_run_name="remediate[{deployment}:{version}]", retries=2, retry_delay_seconds=10)
def trigger_release(deployment: str, parameters: dict, version: str) -> str:
    """Start the release deployment for a missing version; returns the new flow run's id."""
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters={**parameters, "version": version}, timeout=0, as_subflow=False)
    get_run_logger().info("started %s for %s: flow run %s", deployment, version, run.id)
    return str(run.id)


@task(name="trigger-backfill", task_run_name="remediate[{deployment}:{version}]", retries=2, retry_delay_seconds=10)
def trigger_backfill(deployment: str, parameters: dict, version: str) -> str:
    """Start the backfill deployment for an incomplete version; returns the new flow run's id."""
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters={**parameters, "versions": [version]}, timeout=0, as_subflow=False)
    get_run_logger().info("started %s for %s: flow run %s", deployment, version, run.id)
    return str(run.id)
