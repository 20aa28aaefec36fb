"""wheelflow's deployments as code: what ``wheelflow serve`` serves, what ``wheelflow setup`` registers
for workers (module entrypoints, the pull step), and what ``prefect deploy --all`` registers from
prefect.yaml (a test keeps the last two equal: names, entrypoints, pools, schedules, parameters).

Work pools: ``wheelflow-control`` (process pool: release, nightly, sync-monitor, backfill and upstream-check orchestrate and
upload; they need git, Docker access and index credentials, no GPU) and ``wheelflow-gpu`` (one
worker per GPU machine: build-cell runs a matrix cell where the GPU is).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

CONTROL_POOL = "wheelflow-control"
GPU_POOL = "wheelflow-gpu"
DEMO_PROJECT = "examples/hello-cuda"
NIGHTLY_CRON = "0 3 * * *"
MONITOR_CRON = "*/15 * * * *"
UPSTREAM_CRON = "0 6 * * *"
MONITOR_INTERVAL = 900.0  # seconds between MONITOR_CRON's runs: the silent-monitor automation waits two
NIGHTLY_INTERVAL = 86400.0  # NIGHTLY_CRON's period


#: What a worker runs before each flow (prefect.yaml's ``pull`` section says the same): clone wheelflow at
#: the ref in a Prefect Variable and run that code (deployments/pull.py).
PULL_STEPS = [
    {
        "wheelflow.deployments.pull.clone_wheelflow": {
            "id": "clone-wheelflow",
            "repository_variable": "wheelflow_code_repository",
            "ref_variable": "wheelflow_code_ref",
            "token_block": "wheelflow-git-token",
        }
    }
]

PROJECTS_VARIABLE = "wheelflow-monitor-projects"  # flows/monitor.py reads it when no projects are passed


def waiting_for_configuration(
    monitored: list[dict[str, Any]] | None,
    projects_variable: Any,
    upstream_packages: Any = None,
    nightly_project: str | None = None,
) -> dict[str, str]:
    """The scheduled deployments that would fail on every run as configured, each with what to set.
    They are registered with their schedule inactive (the same cron), so nothing fails on a schedule
    until someone configures them."""
    waiting = {}
    if not monitored and not projects_variable:
        waiting["sync-monitor"] = (
            f"set the Prefect Variable {PROJECTS_VARIABLE} (a JSON list of projects: name, repo, indexes) "
            "or pass `wheelflow serve --monitor-projects FILE`, then run `wheelflow setup` (or restart serve) "
            "to activate its schedule"
        )
    if not nightly_project or nightly_project == DEMO_PROJECT:
        # its default project is wheelflow's own demo: on a schedule it would publish that to the first target
        waiting["nightly"] = (
            "set its `project` parameter (the path or git URL of the project to build every night) on the "
            "deployment in the Prefect UI, then turn its schedule on there"
        )
    if not upstream_packages:
        waiting["upstream-check"] = (
            'set its `packages` parameter (axis -> package, e.g. {"torch": "torch"}) on the deployment in '
            "the Prefect UI, then turn its schedule on there"
        )
    return waiting


def project_deployments(
    *,
    monitored: list[dict[str, Any]] | None = None,
    monitor_interval: float | None = None,
    inactive: Collection[str] = (),
    module_entrypoints: bool = False,
) -> list[Any]:
    """RunnerDeployments of release, nightly, sync-monitor, backfill, upstream-check and build-cell. ``monitored`` gives the
    sync monitor its projects (default: none, so it reads the Prefect Variable wheelflow-monitor-projects,
    and fails saying what to configure while that is unset); ``monitor_interval`` (seconds) replaces
    its cron schedule; the deployments named in ``inactive`` get their schedules switched off
    (:func:`waiting_for_configuration`). ``module_entrypoints``: entrypoints name modules
    (``wheelflow.flows.release.release``) rather than files relative to the current folder, for
    deployments that workers run from the code their pull step fetched, wherever setup ran.
    """
    from prefect.schedules import Cron, Interval
    from prefect.types.entrypoint import EntrypointType

    from wheelflow.flows.backfill import backfill
    from wheelflow.flows.build_cell import build_cell
    from wheelflow.flows.monitor import sync_monitor
    from wheelflow.flows.release import release
    from wheelflow.flows.upstream import upstream_check

    monitor_active = "sync-monitor" not in inactive
    monitor_schedule = (
        Interval(monitor_interval, active=monitor_active)
        if monitor_interval
        else Cron(MONITOR_CRON, timezone="UTC", active=monitor_active)
    )
    entrypoint_type = EntrypointType.MODULE_PATH if module_entrypoints else EntrypointType.FILE_PATH
    return [
        release.to_deployment(
            entrypoint_type=entrypoint_type,
            name="release",
            work_pool_name=CONTROL_POOL,
            parameters={"project": DEMO_PROJECT},
            description="Build, check, upload and verify a release; parameters are typed in the run form.",
        ),
        release.to_deployment(
            entrypoint_type=entrypoint_type,
            name="nightly",
            work_pool_name=CONTROL_POOL,
            parameters={"project": DEMO_PROJECT, "dev": True},
            schedules=[Cron(NIGHTLY_CRON, timezone="UTC", active="nightly" not in inactive)],
            description="Nightly development build (next micro + .devYYYYMMDDHHMM), published to the first target only.",
        ),
        sync_monitor.to_deployment(
            entrypoint_type=entrypoint_type,
            name="sync-monitor",
            work_pool_name=CONTROL_POOL,
            schedules=[monitor_schedule],
            parameters={} if monitored is None else {"projects": monitored},
            description="Compare release tags with what the indexes serve; alert once per incident.",
        ),
        backfill.to_deployment(
            entrypoint_type=entrypoint_type,
            name="backfill",
            work_pool_name=CONTROL_POOL,
            parameters={"project": DEMO_PROJECT},
            description="Build, upload and prove the matrix cells released versions lack; files served stay untouched.",
        ),
        upstream_check.to_deployment(
            entrypoint_type=entrypoint_type,
            name="upstream-check",
            work_pool_name=CONTROL_POOL,
            parameters={"project": DEMO_PROJECT},
            schedules=[Cron(UPSTREAM_CRON, timezone="UTC", active="upstream-check" not in inactive)],
            description="Axis values the index serves that no matrix cell covers (a new torch): a table and an alert.",
        ),
        build_cell.to_deployment(
            entrypoint_type=entrypoint_type,
            name="build-cell",
            work_pool_name=GPU_POOL,
            description="Build and smoke-test one matrix cell on a GPU runner; the wheel goes to the artifact store.",
        ),
    ]
