"""Tasks that decide what is released: the version and the built files."""

from __future__ import annotations

from dataclasses import replace

from prefect import get_run_logger, task

from wheelflow.builds.buildenv import BuildSetup, build_setup
from wheelflow.builds.building import BuildResult, build_distributions
from wheelflow.config.spec import ReleaseSpec
from wheelflow.core.home import wheelflow_home
from wheelflow.core.installerconfig import read_installer_config
from wheelflow.source.export import Source, prepare_source
from wheelflow.source.versioning import ResolvedVersion, development_version, resolve_version


@task(
    name="resolve-version", task_run_name="resolve-version", retries=0
)  # a mismatch is a decision, not a fault: never retried
def resolve_release_version(spec: ReleaseSpec, requested: str | None) -> ResolvedVersion:
    resolved = resolve_version(spec, requested)
    get_run_logger().info(
        "release version %s (%s)", resolved.version, ", ".join(f"{k}: {v}" for k, v in resolved.sources.items())
    )
    return resolved


@task(name="development-version", task_run_name="development-version", retries=0)
def resolve_development_version(spec: ReleaseSpec) -> ResolvedVersion:
    from datetime import datetime, timezone

    resolved = development_version(spec, datetime.now(timezone.utc))
    get_run_logger().info("development build %s (%s)", resolved.version, resolved.sources["development build"])
    return resolved


@task(
    name="prepare-source", task_run_name="prepare-source", retries=0
)  # a dirty tree is a decision, not a fault: never retried
def prepare_release_source(spec: ReleaseSpec, resolved: ResolvedVersion, allow_dirty: bool = False) -> Source:
    """The release commit's tracked files of the project, exported under $WHEELFLOW_HOME/sources;
    a working tree that differs from that commit is refused here, before any build."""
    source = prepare_source(spec.project_dir, home=wheelflow_home(), commit=resolved.commit, allow_dirty=allow_dirty)
    (get_run_logger().warning if source.dirty else get_run_logger().info)("source: %s", source.description)
    return source


@task(
    name="build-distributions", task_run_name="build-distributions", retries=0
)  # compile errors are deterministic: never retried
def build_release_files(
    spec: ReleaseSpec, resolved: ResolvedVersion, kinds: tuple[str, ...] | None = None, source: Source | None = None
) -> BuildResult:
    """The spec's artifacts built on this machine (``kinds``: only these, e.g. the sdist beside a matrix),
    from ``source`` (default: the project directory as it is, see ``build_distributions``)."""
    logger = get_run_logger()
    setup, cell_env = release_build_setup(spec)
    # build.network: the compile reaches the network only when the spec allows it
    setup = replace(setup or BuildSetup(installer=read_installer_config()), network=spec.build_network)
    result = build_distributions(
        source or spec.project_dir,
        name=spec.name,
        version=resolved.version,
        artifacts=kinds or spec.artifacts,
        # The build reads the version to stamp from here (a nightly's differs from the version file).
        env={**spec.build_env, **cell_env, "WHEELFLOW_RELEASE_VERSION": resolved.version},
        setup=setup,
        home=wheelflow_home(),
        log=logger.info,
        source_date_epoch=None if source else resolved.commit_time,  # a Source brings its commit's time
        pass_env=spec.pass_env,  # build.pass-env: read from this runner at build time, not in the cache key
    )
    for dist in result.dists:
        logger.info("%s %s sha256=%s%s", dist.kind, dist.filename, dist.sha256, " (cached)" if result.cached else "")
    return result


def release_build_setup(spec: ReleaseSpec) -> tuple[BuildSetup | None, dict[str, str]]:
    """The environment the sdist (and a matrix-less wheel) builds in when the spec prepares one
    (build.requires, build.isolation = false): the sdist cell's (default the first cell's), with its
    pins and environment, since a setup.py that imports torch runs for the sdist too."""
    if not spec.build_requires and spec.build_isolation:
        return None, {}
    cells = spec.matrix.cells if spec.matrix is not None else ()
    cell = next((c for c in cells if c.name == spec.sdist_cell), cells[0] if cells else None)
    setup = build_setup(
        spec.build_requires, spec.build_isolation, cell, compiler_cache=False, installer=read_installer_config()
    )
    return setup, dict(cell.env) if cell is not None else {}
