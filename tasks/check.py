"""Validate built files before anything is uploaded, with the same audits as `wheelflow check`."""

from __future__ import annotations

from prefect import get_run_logger, task

from wheelflow.audits import audit_target, preflight
from wheelflow.distributions import Distribution, Finding
from wheelflow.errors import CheckError
from wheelflow.indexes import limits_for
from wheelflow.simple_api import ServedFile
from wheelflow.spec import Target


def _raise_on(findings: list[Finding], what: str) -> None:
    logger = get_run_logger()
    for finding in findings:
        logger.error(str(finding))
    if findings:
        more = f" (and {len(findings) - 1} more, see the log)" if len(findings) > 1 else ""
        raise CheckError(f"{what}: {findings[0]}{more}")


@task(name="check-distributions", task_run_name="check-distributions", retries=0)  # bad metadata does not fix itself: never retried
def check_release_files(dists: list[Distribution], name: str, versions: dict[str, str], artifacts: tuple[str, ...]) -> None:
    """``versions``: the version each file must carry (variant wheels carry their cell's local label)."""
    findings = preflight(dists, name=name, version=versions, artifacts=artifacts)
    _raise_on(findings, "built files fail their checks")
    get_run_logger().info("checked %d file(s): filenames, METADATA, RECORD, twine check", len(dists))


@task(name="check-target-rules", task_run_name="check-target-rules[{target.name}]", retries=0)
def check_target_rules(dists: list[Distribution], target: Target, served: list[ServedFile]) -> None:
    served_sdists = [s.filename for s in served if s.filename.endswith((".tar.gz", ".zip"))]
    _raise_on(audit_target(dists, limits_for(target), target.name, served_sdists),
              f"refused before any upload by {target.name}'s rules")
