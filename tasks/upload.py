"""Read what a target serves, and upload the files it lacks."""

from __future__ import annotations

import logging

from prefect import get_run_logger, task
from prefect.transactions import get_transaction

import httpx

from wheelflow.tasks.retry import NETWORK_BACKOFF, NETWORK_JITTER, NETWORK_RETRIES, only_transient
from wheelflow.distributions import Distribution, parse_filename
from wheelflow.removal import remove_version
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
    transaction = get_transaction()
    if transaction is not None:  # what the rollback hook needs to take it back; no credentials
        transaction.set("upload", {"target": target, "endpoints": endpoints, "name": name,
                                   "filename": dist.filename, "file_version": str(parse_filename(dist.filename)[1])})
    return outcome


@upload_file.on_rollback
def remove_uploaded_file(transaction) -> None:
    """Rollback hook: remove this run's upload, unless files of that version were served before this
    run (the index removes whole versions: those must stay, and the release's runbook lists them)."""
    upload = transaction.get("upload", None)
    if upload is None:
        return
    logger = logging.getLogger("wheelflow.rollback")
    target, endpoints = upload["target"], upload["endpoints"]
    present = transaction.get("release", {}).get("present", {}).get(target.name, [])
    if any(str(parse_filename(f)[1]) == upload["file_version"] for f in present):
        logger.warning("rollback: %s stays on %s: version %s was served there before this run",
                       upload["filename"], target.name, upload["file_version"])
        return
    removal = remove_version(endpoints, credentials_for(target, wheelflow_home()), upload["name"], upload["file_version"])
    logger.warning("rollback: %s %s on %s: %s%s", upload["name"], upload["file_version"], target.name, removal.outcome,
                   f" ({removal.detail})" if removal.detail else "")
