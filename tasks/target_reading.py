"""Read what any kind of target serves, through its publisher's read-only reader (backfill)."""

from __future__ import annotations

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from wheelflow.index.readers import TargetReader
from wheelflow.index.simple_api import READ_TIMEOUT, ServedFile
from wheelflow.tasks.retry import NETWORK_BACKOFF, NETWORK_JITTER, NETWORK_RETRIES, gives_up, only_transient


@task(
    name="read-served",
    task_run_name="read-served[{reader.name}]",
    retries=NETWORK_RETRIES,
    retry_delay_seconds=NETWORK_BACKOFF,
    retry_jitter_factor=NETWORK_JITTER,
    retry_condition_fn=only_transient,
    # A reader holds a live client (a GitHub release's reader: a lock and a session): Prefect's default
    # cache policy cannot hash it and logged an ERROR with a traceback into every backfill's output.
    cache_policy=NO_CACHE,
)
@gives_up
def read_target_files(reader: TargetReader, name: str, version: str) -> list[ServedFile]:
    """What a target serves of a version, through its kind's read-only view (any kind of target)."""
    with httpx.Client(timeout=READ_TIMEOUT) as client:
        served = reader.read(client, name, version)
    get_run_logger().info("%s serves %d file(s) of %s %s", reader.name, len(served), name, version)
    return served
