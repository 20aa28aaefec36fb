"""An index target's tasks: read what it serves, upload the files it lacks, and the rollback hook
that removes this run's uploads."""

from __future__ import annotations

import logging

import httpx
from prefect import get_run_logger, task

from wheelflow.adapters.prefect_api import read_secret
from wheelflow.config.spec import IndexTarget
from wheelflow.core.distributions import Distribution, parse_filename, sha256_of
from wheelflow.core.errors import HashMismatchError, UploadError
from wheelflow.core.home import wheelflow_home
from wheelflow.index.indexes import Endpoints
from wheelflow.index.localindex import credentials_for
from wheelflow.index.removal import remove_version
from wheelflow.index.simple_api import READ_TIMEOUT, ServedFile, read_served
from wheelflow.index.uploading import publish_file
from wheelflow.tasks.retry import NETWORK_BACKOFF, NETWORK_JITTER, NETWORK_RETRIES, gives_up, only_transient


def read_index_files(endpoints: Endpoints, name: str, version: str) -> list[ServedFile]:
    with httpx.Client(timeout=READ_TIMEOUT) as client:
        return read_served(client, endpoints.simple_url, name, version)


@task(
    name="read-served",
    task_run_name="read-served[{endpoints.name}]",
    retries=NETWORK_RETRIES,
    retry_delay_seconds=NETWORK_BACKOFF,
    retry_jitter_factor=NETWORK_JITTER,
    retry_condition_fn=only_transient,
)
@gives_up
def read_served_files(endpoints: Endpoints, name: str, version: str) -> list[ServedFile]:
    served = read_index_files(endpoints, name, version)
    get_run_logger().info("%s serves %d file(s) of %s %s", endpoints.name, len(served), name, version)
    return served


def upload_task_run_name(filename: str, target: str) -> str:
    """The name of the task run that uploads ``filename`` to ``target`` (what the rollback marks)."""
    return f"upload[{filename}→{target}]"


@task(
    name="upload-file",
    task_run_name="upload[{dist.filename}→{target.name}]",  # upload_task_run_name's, as Prefect formats it
    retries=NETWORK_RETRIES,
    retry_delay_seconds=NETWORK_BACKOFF,
    retry_jitter_factor=NETWORK_JITTER,
    retry_condition_fn=only_transient,
)
@gives_up
def upload_file(dist: Distribution, target: IndexTarget, endpoints: Endpoints, name: str, version: str) -> str:
    """Returns "uploaded" or "already present". Credentials are read here, never passed around."""
    logger = get_run_logger()
    if endpoints.upload_url is None:
        raise UploadError(f"target {target.name!r} has no upload URL; fix: set upload-url in the spec", transient=False)
    if sha256_of(dist.path) != dist.sha256:  # the bytes uploaded are the bytes built and checked
        raise HashMismatchError(
            f"{dist.filename} changed since it was built (sha256 {dist.sha256[:16]}… at build "
            "time); fix: re-run the release so that it is built and checked again"
        )
    outcome = publish_file(
        dist.path,
        dist.sha256,
        endpoints.upload_url,
        credentials_for(target, wheelflow_home(), read_secret),
        read_served=lambda: read_index_files(endpoints, name, version),
        log=logger.info,
        timeout=target.upload_timeout,
        target=target.name,
    )
    logger.info("%s → %s: %s", dist.filename, target.name, outcome)
    return outcome


class UploadInProgress:
    """Set while an upload task runs. Prefect rolls a transaction back as soon as a task inside it
    fails; when that task is an upload, this run's files stay, so that a re-run finishes the
    release with each file uploaded exactly once."""

    def __init__(self) -> None:
        self.active = False


def rollback_hook(
    target: IndexTarget,
    endpoints: Endpoints,
    name: str,
    filename: str,
    present_before: list[str],
    uploading: UploadInProgress,
):
    """A rollback hook for the release's transaction: remove this run's upload of ``filename``, unless
    an upload is what failed, or files of that version were served before this run (indexes remove
    whole versions: those must stay, and the release's runbook lists them). Credentials are read
    when it runs, never kept."""
    file_version = str(parse_filename(filename)[1])

    def remove_uploaded_file(transaction) -> None:
        logger = logging.getLogger("wheelflow.rollback")
        if uploading.active:
            logger.warning(
                "rollback: %s stays on %s: an upload failed, re-run the release to finish it", filename, target.name
            )
            return
        if any(str(parse_filename(f)[1]) == file_version for f in present_before):
            logger.warning(
                "rollback: %s stays on %s: version %s was served there before this run",
                filename,
                target.name,
                file_version,
            )
            return
        removal = remove_version(endpoints, credentials_for(target, wheelflow_home(), read_secret), name, file_version)
        logger.warning(
            "rollback: %s %s on %s: %s%s",
            name,
            file_version,
            target.name,
            removal.outcome,
            f" ({removal.detail})" if removal.detail else "",
        )

    return remove_uploaded_file
