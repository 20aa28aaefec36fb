"""Read what a target serves, and upload the files it lacks."""

from __future__ import annotations

from prefect import get_run_logger, task

import httpx

from wheelflow.tasks.retry import NETWORK_BACKOFF, NETWORK_JITTER, NETWORK_RETRIES, only_transient
from wheelflow.distributions import Distribution
from wheelflow.indexes import Endpoints
from wheelflow.localindex import credentials_for, wheelflow_home
from wheelflow.simple_api import ServedFile
from wheelflow.spec import Target
from wheelflow.uploading import publish_file
from wheelflow.verification import read_served

READ_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def read_target(endpoints: Endpoints, name: str, version: str) -> list[ServedFile]:
    with httpx.Client(timeout=READ_TIMEOUT) as client:
        return read_served(client, endpoints.simple_url, name, version)


@task(name="read-served", task_run_name="read-served[{endpoints.name}]", retries=NETWORK_RETRIES,
      retry_delay_seconds=NETWORK_BACKOFF, retry_jitter_factor=NETWORK_JITTER, retry_condition_fn=only_transient)
def read_served_files(endpoints: Endpoints, name: str, version: str) -> list[ServedFile]:
    served = read_target(endpoints, name, version)
    get_run_logger().info("%s serves %d file(s) of %s %s", endpoints.name, len(served), name, version)
    return served


@task(name="upload-file", task_run_name="upload[{dist.filename}→{target.name}]", retries=NETWORK_RETRIES,
      retry_delay_seconds=NETWORK_BACKOFF, retry_jitter_factor=NETWORK_JITTER, retry_condition_fn=only_transient)
def upload_file(dist: Distribution, target: Target, endpoints: Endpoints, name: str, version: str) -> str:
    """Returns "uploaded" or "already present". Credentials are read here, never passed around."""
    logger = get_run_logger()
    if endpoints.upload_url is None:
        from wheelflow.errors import UploadError

        raise UploadError(f"target {target.name!r} has no upload URL; fix: set upload-url in the spec", transient=False)
    outcome = publish_file(
        dist.path, dist.sha256, endpoints.upload_url, credentials_for(target, wheelflow_home()),
        read_served=lambda: read_target(endpoints, name, version), log=logger.info,
    )
    logger.info("%s → %s: %s", dist.filename, target.name, outcome)
    return outcome
