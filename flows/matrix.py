"""The build step: the sdist, then the wheel matrix, cell by cell, here or on GPU runners.

Both ways of building cells (task runs in this flow run, or runs of the build-cell deployment on a
work pool) yield the same :class:`CellOutcome` list; :func:`judge_cells` turns it into the report's
cell rows and the pass/fail decision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.task_runners import ThreadPoolTaskRunner

from wheelflow.builds.builders import Builder, SmokeResult, SmokeSetup
from wheelflow.builds.builders.choose import choose_builder
from wheelflow.builds.cells import expected_version, summarize_failures
from wheelflow.builds.sdists import missing_from_sdist, unpack_sdist
from wheelflow.config.matrix import Cell
from wheelflow.core.distributions import Distribution, describe
from wheelflow.core.errors import BuildError, CellUnbuildable, CheckError, InfrastructureError
from wheelflow.core.overlap import overlap_builds_and_smokes
from wheelflow.core.report import CellReport
from wheelflow.core.sandbox import protection, protection_label
from wheelflow.flows.context import ReleaseContext, RemoteCells
from wheelflow.flows.futures import settled
from wheelflow.index import artifactstore
from wheelflow.source.export import source_files
from wheelflow.tasks.build import build_release_files
from wheelflow.tasks.matrix import CellJob, build_matrix_cell, smoke_matrix_cell


@dataclass(frozen=True)
class CellOutcome:
    cell: Cell
    wheel: Distribution | None = None  # None: the build failed (``error`` says why)
    error: str | None = None
    cached: bool = False
    attempts: int = 0
    duration: float = 0.0
    smoke: SmokeResult | None = None  # None: not run (a build failed)
    runner: str | None = None  # the worker that built it, on a work pool
    image: str | None = None  # the build image, for containers
    platform: str | None = None  # the final wheel's platform tag, after the repair step
    unrepaired_sha256: str | None = None  # the wheel as built, when the repair step changed it
    build_torch: str | None = None  # the torch of the build environment, when it had one
    compiler_cache: tuple[int, int] | None = None  # (hits, compiles)
    from_sdist: bool = False


def build(ctx: ReleaseContext) -> tuple[list[Distribution], dict[str, str]]:
    """The release's files, and the version each must carry (variant wheels carry their cell's label)."""
    spec, report = ctx.spec, ctx.report
    kinds = spec.artifacts if spec.matrix is None else tuple(k for k in spec.artifacts if k == "sdist")
    builds_cells = spec.matrix is not None and "wheel" in spec.artifacts
    builder = matrix_builder(ctx) if builds_cells and not ctx.remote else None  # chosen and checked first
    # what contains the build backends, smoke commands and install checks this machine runs
    report.sandbox = protection_label(protection(), network=spec.build_network)
    get_run_logger().info("sandbox: %s", report.sandbox)
    dists: list[Distribution] = []
    if kinds:
        with report.step("built" if spec.matrix is None else "built sdist") as step:
            built = build_release_files(spec, ctx.resolved, kinds=kinds, source=ctx.source)
            step.detail = ("reused from cache: " if built.cached else "") + ", ".join(d.filename for d in built.dists)
        dists += built.dists
    versions = {d.filename: ctx.version for d in dists}
    if builds_cells:
        sdist = next((d for d in dists if d.kind == "sdist"), None)
        if ctx.remote:
            outcomes = build_cells_remotely(ctx, ctx.remote)
        else:
            outcomes = build_cells_here(ctx, builder, sdist_source(ctx, sdist) if sdist else None)
        for outcome in judge_cells(ctx, outcomes):
            dists.append(outcome.wheel)
            versions[outcome.wheel.filename] = expected_version(ctx.version, outcome.cell)
    return dists, versions


def judge_cells(ctx: ReleaseContext, outcomes: list[CellOutcome]) -> list[CellOutcome]:
    """The report's cell rows from the outcomes; a failed build, then a failed smoke test, fails the release."""
    report, total = ctx.report, len(outcomes)
    report.cells = [cell_row(o) for o in outcomes]
    in_container = "docker container" + ("" if ctx.spec.build_network else " (the compile without network)")
    for row in report.cells:  # a container isolates a Docker cell; a remote runner says its own in its log
        row.sandbox = {"local": report.sandbox, "docker": in_container}.get(report.builder or "")
    built = [o for o in outcomes if o.wheel is not None]
    failed = [o for o in outcomes if o.wheel is None]
    runners = {o.runner for o in outcomes if o.runner}
    where = (
        f"on {len(runners)} runner(s) via {ctx.remote.deployment}"
        if ctx.remote
        else f"by the {report.builder} builder" + (f" ({sum(o.cached for o in built)} cached)" if built else "")
    )
    report.add("built wheel matrix", not failed, f"{len(built)} of {total} cells {where}")
    if failed:
        raise BuildError(summarize_failures([(o.cell.name, o.error or "") for o in failed], total))
    bad = [o for o in outcomes if o.smoke is not None and o.smoke.state == "failed"]
    report.add("smoke test of every wheel", not bad, "; ".join(f"{r.cell}: {r.smoke}" for r in report.cells))
    if bad:
        raise CheckError(f"smoke test failed for cell {bad[0].cell.name}: {bad[0].smoke.message}")
    return outcomes


def cell_row(outcome: CellOutcome) -> CellReport:
    row = CellReport(
        outcome.cell.name,
        image=outcome.image,
        attempts=outcome.attempts,
        duration=outcome.duration,
        cached=outcome.cached,
        runner=outcome.runner,
    )
    if outcome.wheel is None:
        row.state, row.error = "failed", outcome.error
        return row
    row.state, row.wheel, row.sha256 = "built", outcome.wheel.filename, outcome.wheel.sha256
    row.size = outcome.wheel.path.stat().st_size
    row.platform, row.unrepaired_sha256 = outcome.platform, outcome.unrepaired_sha256
    row.from_sdist, row.torch = outcome.from_sdist, outcome.build_torch
    if outcome.compiler_cache is not None:
        hits, compiles = outcome.compiler_cache
        row.compiler_cache = f"{hits} of {compiles} compiles hit"
    if outcome.smoke is not None:
        row.smoke = outcome.smoke.message if outcome.smoke.state == "skipped" else outcome.smoke.state
        if outcome.smoke.torch:  # the torch the smoke test loaded
            row.torch = outcome.smoke.torch
            row.smoke = f"{row.smoke} (torch {row.torch})"
        if outcome.smoke.state == "failed":
            row.error = outcome.smoke.message
    return row


def matrix_builder(ctx: ReleaseContext) -> Builder:
    """The builder for this runner, chosen and checked before anything is built: a cell it cannot
    build (an image missing, no such interpreter) stops the release in seconds, not after the sdist."""
    builder, note = choose_builder(ctx.spec, ctx.builder, ctx.spec.matrix.cells)
    ctx.report.builder = builder.kind
    if note:
        get_run_logger().warning(note)
        ctx.report.add("builder", True, f"{builder.kind}: {note}")
    preflight(builder, ctx.spec.matrix.cells, ctx)
    return builder


def image_of(builder: Builder, cell: Cell) -> str | None:
    """The build image a cell's row shows: none for the local builder."""
    return cell.image if builder.kind == "docker" else None


def sdist_source(ctx: ReleaseContext, sdist: Distribution) -> SdistSource:
    """The released sdist unpacked for the cell that builds from it (``build.sdist-cell``, default the first)."""
    cell = ctx.spec.sdist_cell or ctx.spec.matrix.cells[0].name
    folder = unpack_sdist(sdist.path, ctx.home / "builds" / "sdist-trees" / sdist.sha256[:16])
    return SdistSource(cell, sdist, folder)


def build_cells_here(ctx: ReleaseContext, builder: Builder, sdist: SdistSource | None = None) -> list[CellOutcome]:
    """One build[cell] and one smoke[cell] task run per cell, under the matrix's concurrency; each smoke
    test starts as soon as its cell is built (:mod:`wheelflow.core.overlap`). With ``sdist``, one cell
    builds its wheel from the unpacked sdist: the sdist is proven to build, not only to exist."""
    spec, matrix = ctx.spec, ctx.spec.matrix
    job = CellJob(
        project=str(ctx.source.path),
        source_digest=ctx.source.identity,
        name=spec.name,
        version=ctx.version,
        build_env=dict(spec.build_env),
        home=str(ctx.home),
        run_label=str(ctx.report.flow_run_id),
        source_date_epoch=ctx.source.date_epoch,
        repair=spec.repair,
        build_requires=spec.build_requires,
        build_isolation=spec.build_isolation,
        build_network=spec.build_network,
        compiler_cache=spec.compiler_cache != "off",
        sdist_cell=sdist.cell if sdist else None,
        sdist_project=str(sdist.folder) if sdist else None,
        sdist_digest=f"sdist-{sdist.dist.sha256}" if sdist else None,
    )
    started: dict[str, float] = {}  # a failed build's row says how long it ran too

    def start_build(runner: ThreadPoolTaskRunner, cell: Cell) -> Any:
        started[cell.name] = time.monotonic()
        return runner.submit(build_matrix_cell, {"builder": builder, "cell": cell, "job": job})

    with ThreadPoolTaskRunner(max_workers=matrix.concurrency) as runner:
        outcomes = overlap_builds_and_smokes(
            matrix.cells,
            matrix.concurrency,
            build=lambda cell: start_build(runner, cell),
            built=lambda cell, future: built_outcome(
                cell, future, image_of(builder, cell), time.monotonic() - started[cell.name]
            ),
            ok=lambda outcome: outcome.wheel is not None,
            smoke=lambda outcome: runner.submit(
                smoke_matrix_cell,
                {
                    "builder": builder,
                    "cell": outcome.cell,
                    "wheel": outcome.wheel,
                    "smoke": spec.smoke,
                    "run_label": job.run_label,
                    "setup": SmokeSetup(job.setup(outcome.cell), outcome.build_torch),
                },
            ),
            smoked=lambda outcome, future: replace(outcome, smoke=future.result()),
        )
    if sdist is not None:
        outcomes = [sdist_verdict(ctx, sdist, o) if o.cell.name == sdist.cell else o for o in outcomes]
    if any(o.wheel is None for o in outcomes):
        return [replace(o, smoke=None) for o in outcomes]  # no smoke verdicts for a matrix that failed to build
    return outcomes


@dataclass(frozen=True)
class SdistSource:
    cell: str  # the cell that builds from it
    dist: Distribution
    folder: Path  # the sdist unpacked


def sdist_verdict(ctx: ReleaseContext, sdist: SdistSource, outcome: CellOutcome) -> CellOutcome:
    """The checklist row for the sdist cell. A failed build is blamed on the sdist only when the sdist
    lacks tracked files (named, headers first); any other failure (a timeout, a compile error the tree
    has too) stays the cell's own error."""
    name = outcome.cell.name
    if outcome.wheel is not None:
        ctx.report.add("sdist builds", True, f"cell {name} built its wheel from {sdist.dist.filename}")
        return replace(outcome, from_sdist=True)
    missing = missing_from_sdist(ctx.source.path, sdist.folder, source_files(ctx.source.path, ctx.home))
    if not missing:
        ctx.report.add("sdist builds", False, f"not proven: cell {name}, which builds from the sdist, failed")
        return replace(outcome, from_sdist=True)
    more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
    said = (outcome.error or "the build failed").removeprefix(f"cell {name}: ")
    error = (
        f"cell {name}: {sdist.dist.filename} does not build: the sdist lacks {', '.join(missing[:8])}{more} "
        f'({said}); fix: include them in the sdist (MANIFEST.in, e.g. "include csrc/*.h"), '
        'or drop "sdist" from artifacts'
    )
    ctx.report.add("sdist builds", False, error)
    return replace(outcome, error=error, from_sdist=True)


def preflight(builder: Builder, cells: tuple[Cell, ...], ctx: ReleaseContext) -> None:
    """A cell this runner cannot build stops the release before any build."""
    for cell in cells:
        try:
            builder.preflight(cell)
        except (CellUnbuildable, InfrastructureError) as exc:
            ctx.report.cells = [CellReport(c.name, image=image_of(builder, c)) for c in cells]
            ctx.report.cells[cells.index(cell)].state, ctx.report.cells[cells.index(cell)].error = "failed", str(exc)
            raise BuildError(f"cell {cell.name} cannot be built by the {builder.kind} builder: {exc}") from None


def built_outcome(cell: Cell, future: Any, image: str | None, elapsed: float = 0.0) -> CellOutcome:
    """``elapsed``: the seconds since the build was submitted, the duration of a build that failed."""
    outcome, failure = settled(future, lambda message: BuildError(message or "the build did not complete"))
    if failure is not None:
        # The attempt count travels with the error: the server records task states a moment later.
        attempts = getattr(failure, "attempts", None) or 1
        return CellOutcome(cell, error=str(failure), attempts=attempts, image=image, duration=elapsed)
    build, attempts = outcome
    return CellOutcome(
        cell,
        build.wheel,
        cached=build.cached,
        attempts=attempts,
        duration=build.duration,
        image=image,
        platform=build.platform,
        unrepaired_sha256=build.unrepaired_sha256,
        build_torch=build.build_torch,
        compiler_cache=build.compiler_cache,
    )


def build_cells_remotely(ctx: ReleaseContext, remote: RemoteCells) -> list[CellOutcome]:
    """One flow run of the build-cell deployment per cell, taken by whichever GPU worker is free;
    the wheels come back through the artifact store, checked against the sha256 the runner reported."""
    spec, matrix = ctx.spec, ctx.spec.matrix
    ctx.report.builder = f"{ctx.builder or spec.builder or 'default'} on {remote.deployment}"
    parameters = {
        "project": remote.project,
        "version": ctx.version,
        "artifact_store": remote.store,
        "spec_file": remote.spec_file,
        "builder": ctx.builder,
        "commit": ctx.source.commit,
    }
    if remote.git_secret:
        parameters["git_secret"] = remote.git_secret
    # Runs are created one after another (a SQLite-backed server handles that best) and then
    # followed together: the workers build them in parallel.
    started = {
        cell.name: run_deployment(
            remote.deployment, parameters={**parameters, "cell": cell.name}, timeout=0, as_subflow=True
        )
        for cell in matrix.cells
    }
    final = follow_cell_runs(started, deadline=time.monotonic() + max(c.timeout for c in matrix.cells) + 600)
    directory = ctx.home / "builds" / "remote" / str(ctx.report.flow_run_id)
    return [fetched_outcome(cell, final[cell.name], remote.store, directory) for cell in matrix.cells]


def fetched_outcome(cell: Cell, run: Any, store: str, directory) -> CellOutcome:
    if run.state is None or not run.state.is_completed():
        error = (
            f"flow run {run.name}: {run.state.name if run.state else 'no state'}: "
            f"{run.state.message if run.state else ''}"
        ).strip(": ")
        return CellOutcome(cell, error=error, image=cell.image)
    try:
        record = artifactstore.get_run_record(store, str(run.id))
    except artifactstore.ArtifactStoreError as missing:
        elsewhere = artifactstore.record_elsewhere_error(
            store, cell.name, cell_run_runner(run.id), artifactstore.runner_name()
        )
        raise (elsewhere or missing) from None
    wheel = describe(artifactstore.get(record["url"], directory, record["sha256"]))
    return CellOutcome(
        cell,
        wheel,
        cached=record["cached"],
        attempts=record["attempts"],
        duration=record["duration"],
        smoke=SmokeResult(record["smoke"], record["smoke_message"], record.get("smoke_torch")),
        runner=record["runner"],
        image=cell.image,
        platform=record.get("platform"),
        unrepaired_sha256=record.get("unrepaired_sha256"),
    )


def cell_run_runner(flow_run_id: Any) -> str | None:
    """The runner a build-cell run reported in its table artifact (None when it wrote none)."""
    from wheelflow.adapters.prefect_api import flow_run_table_rows

    with get_client(sync_client=True) as client:
        rows = flow_run_table_rows(client, flow_run_id, "build-cell")
    return rows[0].get("runner") if rows else None


def follow_cell_runs(runs: dict, deadline: float) -> dict:
    """Poll the cells' flow runs until each is final (or the deadline passes); the latest read of each."""
    latest = dict(runs)
    with get_client(sync_client=True) as client:
        while True:
            pending = [name for name, run in latest.items() if not (run.state and run.state.is_final())]
            if not pending or time.monotonic() > deadline:
                return latest
            # One read for all pending cells per poll, not one per cell: 96 cells are 96 reads otherwise.
            ids = {latest[name].id: name for name in pending}
            for run in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids))), limit=len(ids)
            ):
                latest[ids[run.id]] = run
            time.sleep(2)  # the API offers no push to a flow run; poll it
