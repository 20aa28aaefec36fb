"""One matrix cell on a GPU runner: build, smoke-test, and put the wheel in the artifact store.

The release flow starts one run of this deployment per cell (``cell_deployment``) when the matrix is
spread over a work pool of GPU machines; whichever worker takes a run builds that cell.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from wheelflow.adapters.prefect_api import read_secret
from wheelflow.builds.builders import SmokeSetup
from wheelflow.builds.builders.choose import choose_builder
from wheelflow.config.spec import load_spec
from wheelflow.core.errors import SpecError
from wheelflow.core.home import wheelflow_home
from wheelflow.index import artifactstore
from wheelflow.source.checkout import checkout, is_git_url
from wheelflow.source.export import commit_source, prepare_source
from wheelflow.tasks.matrix import CellJob, build_matrix_cell, smoke_matrix_cell


@flow(name="build-cell", flow_run_name="build-cell[{cell}]")
def build_cell(
    project: str,
    cell: str,
    version: str,
    artifact_store: str,
    spec_file: str | None = None,
    builder: str | None = None,
    commit: str | None = None,
    git_secret: str | None = None,
) -> dict:
    """Build one cell of the project's wheel matrix and store the wheel.

    Args:
        project: the project's git URL (this runner clones it at ``commit``: the release passes its own
            URL), or its path on this runner (a shared checkout, or the release's own machine).
        cell: the cell's name, e.g. py3.11-cu13.0.
        version: the release version (already resolved and checked by the release flow).
        artifact_store: fsspec URL of the store the release flow reads the wheel from.
        spec_file: a standalone spec TOML, when the project's pyproject.toml has none.
        builder: docker or local (default: the spec's, else docker when a daemon answers).
        commit: the release commit: this runner builds that commit's export (default: HEAD of its checkout).
        git_secret: name of a Prefect Secret block holding the credentials for a private git URL.
    """
    if is_git_url(project):
        project = str(checkout(project, commit, wheelflow_home(), git_secret=git_secret, read_secret=read_secret))
    spec = load_spec(project, spec_file)
    cells = {c.name: c for c in (spec.matrix.cells if spec.matrix else ())}
    if cell not in cells:
        raise SpecError("cell", f"{spec.name} has no matrix cell {cell!r}", f"use one of: {', '.join(cells) or 'none'}")
    chosen, _ = choose_builder(spec, builder, [cells[cell]])
    run_label = str(flow_run.get_id())
    source = (
        commit_source(spec.project_dir, home=wheelflow_home(), commit=commit)
        if commit
        else prepare_source(spec.project_dir, home=wheelflow_home())
    )
    job = CellJob(
        project=str(source.path),
        source_digest=source.identity,
        name=spec.name,
        version=version,
        build_env=dict(spec.build_env),
        home=str(wheelflow_home()),
        run_label=run_label,
        source_date_epoch=source.date_epoch,
        repair=spec.repair,
        build_requires=spec.build_requires,
        build_isolation=spec.build_isolation,
        build_network=spec.build_network,
        compiler_cache=spec.compiler_cache != "off",
    )
    build, attempts = build_matrix_cell(chosen, cells[cell], job)
    setup = SmokeSetup(job.setup(cells[cell]), build.build_torch)
    smoke = smoke_matrix_cell(chosen, cells[cell], build.wheel, spec.smoke, run_label, setup)
    url = artifactstore.put(artifact_store, build.wheel.path, build.wheel.sha256)
    # Each flow run is a fresh process, so the runner is named by its worker's environment (or host).
    runner = artifactstore.runner_name()
    get_run_logger().info("cell %s built on %s: %s → %s", cell, runner, build.wheel.filename, url)
    record = {
        "cell": cell,
        "wheel": build.wheel.filename,
        "sha256": build.wheel.sha256,
        "url": url,
        "size": Path(build.wheel.path).stat().st_size,
        "cached": build.cached,
        "attempts": attempts,
        "duration": build.duration,
        "builder": chosen.kind,
        "smoke": smoke.state,
        "smoke_message": smoke.message,
        "smoke_torch": smoke.torch,
        "runner": runner,
        "platform": build.platform,
        "unrepaired_sha256": build.unrepaired_sha256,
    }
    artifactstore.put_run_record(artifact_store, run_label, record)  # the release flow reads it there
    create_table_artifact(
        key="build-cell",
        table=[{k: str(v) for k, v in record.items()}],
        description=f"Cell {cell} of {spec.name} {version}",
    )
    return record
