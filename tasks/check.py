"""Validate built files before anything is uploaded, with the same audits as `wheelflow check`."""

from __future__ import annotations

import re
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from wheelflow.checks.abi import abi_findings, compat_grid, gpu_arch_rows, install_runtime
from wheelflow.checks.audits import audit_target, preflight
from wheelflow.checks.devicecode import find_cuobjdump
from wheelflow.config.gpuarch import DEFAULT_ARCH_POLICY, ArchSpec
from wheelflow.config.spec import Target
from wheelflow.core.distributions import Distribution, Finding, blocking, warnings_line
from wheelflow.core.errors import CheckError
from wheelflow.index.indexes import limits_for
from wheelflow.index.simple_api import ServedFile


def _raise_on(findings: list[Finding], what: str) -> None:
    logger = get_run_logger()
    for finding in findings:
        logger.error(str(finding))
    if findings:
        more = f" (and {len(findings) - 1} more, see the log)" if len(findings) > 1 else ""
        raise CheckError(f"{what}: {findings[0]}{more}")


@task(
    name="check-distributions", task_run_name="check-distributions", retries=0
)  # bad metadata does not fix itself: never retried
def check_release_files(
    dists: list[Distribution], name: str, versions: dict[str, str], artifacts: tuple[str, ...], strict: bool = False
) -> str:
    """``versions``: the version each file must carry (variant wheels carry their cell's local label).
    Returns "passed with warnings: ..." when twine check warned (``strict``: its warnings fail), else ""."""
    findings = preflight(dists, name=name, version=versions, artifacts=artifacts, strict=strict)
    _raise_on(blocking(findings), "built files fail their checks")
    for finding in findings:
        get_run_logger().warning(str(finding))
    get_run_logger().info(
        "checked %d file(s): every entry read (paths, links, size), RECORD, filenames, METADATA, platform tags, twine check",
        len(dists),
    )
    return warnings_line(findings)


@task(name="check-target-rules", task_run_name="check-target-rules[{target.name}]", retries=0)
def check_target_rules(dists: list[Distribution], target: Target, served: list[ServedFile]) -> None:
    served_sdists = [s.filename for s in served if s.filename.endswith((".tar.gz", ".zip"))]
    _raise_on(
        audit_target(dists, limits_for(target), target.name, served_sdists),
        f"refused before any upload by {target.name}'s rules",
    )


@task(name="check-abi", task_run_name="check-abi[{label}]", retries=0)  # a binary does not change: never retried
def check_abi(
    dists: list[Distribution],
    label: str,
    archs: ArchSpec | None,
    runtime: dict[str, list[Path]],
    grid: dict[str, list[Path]] | None = None,
    arch_policy: str = DEFAULT_ARCH_POLICY,
) -> str:
    """The ABI gate for one cell's wheels (``label``: the cell's name): declared GPU architectures and
    symbols against the cell's ``runtime``; table artifacts of device code (PTX reported) and, for the
    runtimes in ``grid``, which ones each wheel loads against. Returns "passed with warnings: ..."
    when it warned (SASS for undeclared architectures under ``arch_policy`` "at-least"), else ""."""
    wheels = [d.path for d in dists if d.kind == "wheel"]
    slug = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")
    cuobjdump = find_cuobjdump()
    arch_rows = gpu_arch_rows(wheels, cuobjdump)
    if arch_rows:
        create_table_artifact(
            key=f"gpu-archs-{slug}",
            table=arch_rows,
            description=f"Device code in {label}'s wheels (PTX: JIT-compiled on newer GPUs)",
        )
    if grid:
        create_table_artifact(
            key=f"abi-grid-{slug}",
            table=[row for w in wheels for row in compat_grid(w, grid)],
            description=f"Which runtimes {label}'s wheels load against (undefined symbols)",
        )
    findings = abi_findings(dists, archs, runtime, cuobjdump=cuobjdump, arch_policy=arch_policy)
    _raise_on(blocking(findings), f"{label}: refused by the ABI gate")
    for finding in findings:
        get_run_logger().warning(str(finding))
    get_run_logger().info(
        "ABI gate passed%s for %d wheel(s) of %s", " with warnings" if findings else "", len(wheels), label
    )
    return warnings_line(findings)


@task(name="install-abi-runtime", task_run_name="install-abi-runtime[{label}]", retries=2, retry_delay_seconds=[10, 30])
def install_abi_runtime(label: str, requirements: list[str], pip_args: list[str], home: str) -> list[str]:
    """One runtime of ``[tool.wheelflow.abi]`` installed (or reused) under $WHEELFLOW_HOME/abi-runtimes;
    its library directories. Retried: an index that does not answer may answer later."""
    dirs = install_runtime(
        requirements, Path(home) / "abi-runtimes" / re.sub(r"[^A-Za-z0-9._-]+", "_", label), pip_args
    )
    get_run_logger().info("runtime %s (%s): %d library folder(s)", label, " ".join(requirements), len(dirs))
    return [str(d) for d in dirs]
