"""Matrix tasks: one build task run and one smoke task run per cell, named after the cell."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.runtime import task_run

from wheelflow.builds.buildenv import BuildSetup, build_setup
from wheelflow.builds.builders import Builder, SmokeResult, SmokeSetup
from wheelflow.builds.cells import CellBuild, build_cell_wheel
from wheelflow.config.matrix import Cell
from wheelflow.config.repairoptions import RepairOptions
from wheelflow.core.distributions import Distribution
from wheelflow.core.installerconfig import read_installer_config
from wheelflow.tasks.retry import gives_up, only_transient


@dataclass(frozen=True)
class CellJob:
    """What every cell of one release shares."""

    project: str
    source_digest: str
    name: str
    version: str
    build_env: dict[str, str]
    home: str
    run_label: str
    source_date_epoch: int | None
    repair: RepairOptions | None = None  # the spec's repair step; None: wheels are published as built
    build_requires: tuple[str, ...] = ()  # build.requires, templates over the cell's axes
    build_isolation: bool = True  # build.isolation
    build_network: bool = False  # build.network
    compiler_cache: bool = True  # build.compiler-cache = "auto"
    sdist_cell: str | None = None  # this cell builds from the unpacked sdist (proving the sdist builds)
    sdist_project: str | None = None
    sdist_digest: str | None = None

    def setup(self, cell: Cell) -> BuildSetup:
        """The cell's build environment: build.requires rendered for it, its pins, this machine's installer config."""
        return build_setup(
            self.build_requires,
            self.build_isolation,
            cell,
            compiler_cache=self.compiler_cache,
            installer=read_installer_config(),
            network=self.build_network,
        )

    def source_of(self, cell: Cell) -> tuple[str, str]:
        """(project folder, source digest) the cell builds from: the unpacked sdist for the sdist cell."""
        if cell.name == self.sdist_cell and self.sdist_project and self.sdist_digest:
            return self.sdist_project, self.sdist_digest
        return self.project, self.source_digest


# Compile errors never retry; infrastructure errors (daemon away, image missing) do, twice.
@task(
    name="build-wheel",
    task_run_name="build[{cell.name}]",
    retries=2,
    retry_delay_seconds=[5, 20],
    retry_condition_fn=only_transient,
)
@gives_up
def build_matrix_cell(builder: Builder, cell: Cell, job: CellJob) -> tuple[CellBuild, int]:
    from wheelflow.builds.builders.docker import RUN_LABEL

    logger = get_run_logger()
    project, digest = job.source_of(cell)
    if project != job.project:
        logger.info("cell %s: building from the released sdist (%s)", cell.name, Path(project).name)
    try:
        result = build_cell_wheel(
            builder,
            cell,
            project=Path(project),
            source_digest=digest,
            name=job.name,
            version=job.version,
            build_env=job.build_env,
            home=Path(job.home),
            log=logger.info,
            labels={RUN_LABEL: job.run_label},
            source_date_epoch=job.source_date_epoch,
            repair=job.repair,
            setup=job.setup(cell),
        )
    except Exception as exc:
        # The attempt count travels with the error: the API records task states asynchronously, so
        # reading run_count back from the server right after the failure may miss the last attempt.
        exc.attempts = task_run.run_count  # type: ignore[attr-defined]
        raise
    logger.info(
        "cell %s: %s sha256=%s%s",
        cell.name,
        result.wheel.filename,
        result.wheel.sha256,
        " (cached)" if result.cached else "",
    )
    return result, task_run.run_count


@task(name="smoke-cell", task_run_name="smoke[{cell.name}]", retries=0)
def smoke_matrix_cell(
    builder: Builder,
    cell: Cell,
    wheel: Distribution,
    smoke: str | None,
    run_label: str,
    setup: SmokeSetup | None = None,
) -> SmokeResult:
    from wheelflow.builds.builders.docker import RUN_LABEL

    logger = get_run_logger()
    result = builder.smoke(cell, wheel.path, smoke, logger.info, {RUN_LABEL: run_label}, setup)
    (logger.warning if result.state != "passed" else logger.info)("cell %s: %s", cell.name, result.message)
    return result
