"""Prove the release is served: listing with sha256, then install and smoke test."""

from __future__ import annotations

from pathlib import Path

import httpx
from prefect import get_run_logger, task

from wheelflow.checks.userstorch import FLAG
from wheelflow.core.distributions import Distribution
from wheelflow.core.errors import HashMismatchError, VerificationError
from wheelflow.core.home import wheelflow_home
from wheelflow.index.indexes import PRIVATE_POLL_CAP, PUBLIC_POLL_CAP, Endpoints
from wheelflow.index.simple_api import READ_TIMEOUT, ServedFile, read_served
from wheelflow.proof.installchecks import InstallCheck, run_install_check
from wheelflow.proof.verification import (
    HASH_MISMATCH,
    VERIFIED,
    FileStatus,
    InstallResult,
    install_and_smoke,
    poll_until_served,
)


class ServedCheckFailed(VerificationError):
    def __init__(self, message: str, statuses: list[FileStatus]) -> None:
        self.statuses = statuses
        super().__init__(message)


class HashMismatchFailed(ServedCheckFailed, HashMismatchError):
    pass


@task(name="verify-served", task_run_name="verify-served[{endpoints.name}]", retries=0)  # polls to its own deadline
def verify_served(endpoints: Endpoints, name: str, version: str, dists: list[Distribution]) -> list[ServedFile]:
    logger = get_run_logger()
    expected = {d.filename: d.sha256 for d in dists}
    with httpx.Client(timeout=READ_TIMEOUT) as client:
        statuses, served = poll_until_served(
            lambda: read_served(client, endpoints.simple_url, name, version),
            expected,
            endpoints.verify_timeout,
            on_wait=logger.info,
            max_delay=PUBLIC_POLL_CAP if endpoints.public else PRIVATE_POLL_CAP,
        )
    for status in statuses:
        (logger.info if status.status == VERIFIED else logger.error)("%s: %s", endpoints.name, status.describe())
    bad = [s for s in statuses if s.status != VERIFIED]
    if bad:
        error = HashMismatchFailed if any(s.status == HASH_MISMATCH for s in bad) else ServedCheckFailed
        raise error(f"{endpoints.name}: " + "; ".join(s.describe() for s in bad), statuses)
    return served


@task(name="install-and-smoke", task_run_name="install-and-smoke[{endpoints.name}]", retries=0)
def install_and_smoke_test(
    endpoints: Endpoints,
    name: str,
    version: str,
    served: list[ServedFile],
    smoke: str | None,
    dependencies: str = "pypi",
    built_torch: dict[str, str] | None = None,
    users_torch: str = FLAG,
) -> tuple[str, tuple[str, ...]]:
    """``dependencies``: the spec's install.dependencies (where pip resolves them); ``built_torch``:
    each wheel's build torch, compared with the torch the install resolved (``users_torch``: the
    spec's abi.users-torch). Returns the one line and the flags for the report (logged as warnings)."""
    logger = get_run_logger()
    result = install_and_smoke(
        name,
        version,
        endpoints.simple_url,
        served,
        smoke=smoke,
        workdir=scratch(),
        log=logger.info,
        dependencies=dependencies,
        built_torch=built_torch,
        users_torch=users_torch,
    )
    for flag in result.flags:
        logger.warning("%s: %s", endpoints.name, flag)
    return verdict(endpoints.name, result), result.flags


@task(name="install-check", task_run_name="install[{target}|{check.installer}|{check.runtime}]", retries=0)
def install_check(
    target: str, check: InstallCheck, name: str, version: str, served: list[ServedFile], interpreter: str
) -> str:
    """One install command with one installer in a fresh environment of one runtime: a wheel of this
    release must be what gets installed."""
    logger = get_run_logger()
    return verdict(
        target, run_install_check(check, name, version, served, interpreter, workdir=scratch(), log=logger.info)
    )


def scratch() -> Path:
    """Where install environments are made: under $WHEELFLOW_HOME, not the system's /tmp."""
    work = wheelflow_home() / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    return work


def verdict(where: str, result: InstallResult) -> str:
    """The result's one line, logged; a failure raises it, with the installer's output in the log."""
    logger = get_run_logger()
    if not result.ok:
        if result.output_tail:
            logger.error(result.output_tail)
        raise VerificationError(f"{where}: {result.message}")
    logger.info(result.message)
    return result.message
