"""What one release run knows once it has started: the spec, the version, the targets, the report."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name
from prefect import get_run_logger

from wheelflow.adapters.prefect_api import held_alone, read_secret
from wheelflow.config.spec import ReleaseSpec, Target, load_spec
from wheelflow.core.errors import SpecError
from wheelflow.core.report import ReleaseReport
from wheelflow.index.artifactstore import default_store
from wheelflow.source.checkout import checkout, is_git_url
from wheelflow.source.export import Source
from wheelflow.source.versioning import ResolvedVersion
from wheelflow.tasks.build import prepare_release_source, resolve_development_version, resolve_release_version


@dataclass(frozen=True)
class RemoteCells:
    """Matrix cells built by runs of a build-cell deployment, their wheels left in an artifact store."""

    deployment: str
    store: str
    spec_file: str | None
    project: str  # what each runner checks out: the release's git URL (at the commit), else its path
    git_secret: str | None = None


@dataclass(frozen=True)
class ReleaseContext:
    spec: ReleaseSpec
    resolved: ResolvedVersion
    targets: tuple[Target, ...]
    home: Path
    report: ReleaseReport
    builder: str | None  # "docker", "local", or None: the spec's, else docker when a daemon answers
    approval: str  # the gate's policy before each target after the first
    source: Source  # the release commit's export (or the directory, for a project not under git)
    remote: RemoteCells | None = None  # None: cells build in this flow run

    @property
    def version(self) -> str:
        return self.resolved.version


def prepare(
    report: ReleaseReport,
    home: Path,
    *,
    project: str,
    spec_file: str | None,
    version: str | None,
    to: list[str] | None,
    ref: str | None,
    dev: bool,
    builder: str | None,
    approval: str | None,
    cell_deployment: str | None,
    artifact_store: str | None,
    git_secret: str | None = None,
    allow_dirty: bool = False,
) -> ReleaseContext:
    """Check out the project, read its spec, resolve the version, the release commit's source and the
    targets; stop before any build when the version's sources disagree, the working tree differs from
    the commit (unless ``allow_dirty``). Each target's credentials are then checked by its publisher
    (``publishing.check_credentials``), still before the build."""
    spec = load_spec(checkout(project, ref, home, git_secret=git_secret, read_secret=read_secret), spec_file)
    report.name = spec.name
    targets = tuple(spec.target(name) for name in (to or [t.name for t in spec.targets] or ["local"]))
    if dev:
        targets = targets[:1]  # a development build goes to the first target (staging), never further
        if version:
            raise SpecError("version", "a development build computes its own version", "drop version, or dev")
    with report.step("development version" if dev else "tag/version match") as step:
        resolved = resolve_development_version(spec) if dev else resolve_release_version(spec, version)
        step.detail = ", ".join(f"{k}: {v}" for k, v in resolved.sources.items())
    report.version = resolved.version
    with report.step("source") as step:
        source = prepare_release_source(spec, resolved, allow_dirty)
        step.detail = source.description
    report.source = source.json()
    remote = (
        RemoteCells(
            cell_deployment,
            artifact_store or default_store(home),
            spec_file,
            project if is_git_url(project) else str(spec.project_dir),
            git_secret,
        )
        if cell_deployment
        else None
    )
    return ReleaseContext(spec, resolved, targets, home, report, builder, approval or spec.approval, source, remote)


#: How long a second run of one release waits for the first (its approval gate may take an hour).
RELEASE_WAIT = 4 * 3600.0


def one_release_at_a_time(ctx: ReleaseContext):
    """One run of a project's version at a time, across workers and machines: a Prefect global
    concurrency limit named after it. A second run waits, then finds what the first published."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{canonicalize_name(ctx.spec.name)}-{ctx.version}".lower()).strip("-")
    return held_alone(f"wheelflow-release-{slug}", timeout=RELEASE_WAIT, log=get_run_logger().warning)
