"""Validate built files before anything is uploaded."""

from __future__ import annotations

from prefect import get_run_logger, task

from wheelflow.distributions import Distribution, check_filenames, twine_check
from wheelflow.errors import CheckError


@task(name="check-distributions", retries=0)  # bad metadata does not fix itself: never retried
def check_release_files(dists: list[Distribution], name: str, version: str, artifacts: tuple[str, ...]) -> None:
    findings = check_filenames(dists, name, version, artifacts) + twine_check([d.path for d in dists])
    logger = get_run_logger()
    for finding in findings:
        logger.error(str(finding))
    if findings:
        raise CheckError(f"{len(findings)} problem(s) in the built files: {findings[0]}")
    logger.info("checked %d file(s): filenames, versions and twine check all pass", len(dists))
