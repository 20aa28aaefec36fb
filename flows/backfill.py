"""The backfill recipe: keep every released version's matrix whole.

For each released version (a git tag matching the spec's version.tag): read what each target
serves, prove the cells it has (each wheel downloaded and hashed), build only the cells it lacks
from a clean export of the tag (the version stamped through WHEELFLOW_RELEASE_VERSION, as releases
do), check them (the file audits and the ABI gate), then upload and prove them target by target
with the release's own publishing steps. Files already served are never touched. A cell whose
build fails on the old commit is a failed row with its reason, and the other cells go on; the run
ends Failed when any cell failed, and green only when every cell asked for was proven served.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import httpx
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from wheelflow.adapters.prefect_api import read_secret
from wheelflow.builds.builders.choose import choose_builder
from wheelflow.builds.builders.docker import RUN_LABEL, remove_containers
from wheelflow.builds.cells import expected_version
from wheelflow.config.matrix import Cell
from wheelflow.config.spec import ReleaseSpec, Target, load_spec
from wheelflow.core.distributions import Distribution
from wheelflow.core.errors import (
    BackfillFailed,
    CellUnbuildable,
    InfrastructureError,
    NothingToBackfill,
    SourceError,
    SpecError,
    WheelflowError,
)
from wheelflow.core.home import wheelflow_home
from wheelflow.core.report import ReleaseReport
from wheelflow.flows.abigate import abi_gate
from wheelflow.flows.context import ReleaseContext
from wheelflow.flows.matrix import CellOutcome, built_outcome
from wheelflow.flows.publishing import prove_stage, publish_stage, publishing
from wheelflow.flows.targets import publisher_for
from wheelflow.index.simple_api import READ_TIMEOUT, download_sha256
from wheelflow.ops.backfill import Gap, find_gap, released_versions, select_cells
from wheelflow.ops.monitor import read_manifest, write_manifest
from wheelflow.source.checkout import checkout
from wheelflow.source.export import Source, commit_source, resolve_commit
from wheelflow.source.gittags import ReleaseTag
from wheelflow.source.versioning import ResolvedVersion
from wheelflow.tasks.check import check_release_files
from wheelflow.tasks.matrix import CellJob, build_matrix_cell, smoke_matrix_cell
from wheelflow.tasks.target_reading import read_target_files

PRESENT, BACKFILLED, FAILED, NOT_ROUTED = "present", "backfilled", "failed", "not routed"


@dataclass
class Row:
    version: str
    cell: str
    target: str
    state: str  # present, backfilled, failed, not routed
    file: str = ""
    detail: str = ""


@flow(name="backfill", log_prints=False)
def backfill(
    project: str,
    spec_file: str | None = None,
    versions: list[str] | None = None,
    since: str | None = None,
    cells: dict[str, str] | None = None,
    to: list[str] | None = None,
    builder: Literal["docker", "local"] | None = None,
) -> dict:
    """Build, upload and prove the cells of the current matrix that released versions lack.

    Args:
        project: path of the project (its git tags are the releases), or a git URL.
        spec_file: a standalone spec TOML whose matrix is the one to complete (default: the project's).
        versions: only these released versions (default: every one).
        since: only released versions at or above this one.
        cells: only cells with these axis values, e.g. {"torch": "2.9.1"}.
        to: target names (default: the spec's targets, or the embedded local index).
        builder: "docker" or "local" (default: the spec's, else docker when a daemon answers).
    """
    home = wheelflow_home()
    run_id = str(flow_run.get_id())
    logger = get_run_logger()
    source = checkout(project, None, home)
    spec = load_spec(source, spec_file)
    if spec.matrix is None:
        raise SpecError(
            "matrix",
            "the spec has no matrix, so no released version can lack a cell",
            "add [tool.wheelflow.matrix], or use `wheelflow release` for a version with nothing served",
        )
    if versions and since:
        raise SpecError("--since", "given together with --versions", "pass one of them")
    tags = released_versions(source, spec.version.tag, versions or (), since)
    if not tags:
        raise NothingToBackfill(
            f"no released version of {spec.name} (tags {spec.version.tag}"
            + (f", since {since}" if since else "")
            + "): nothing was checked; fix: tag the "
            "releases as version.tag says, or pass released versions"
        )
    chosen = select_cells(spec.matrix.cells, cells or {})
    targets = tuple(spec.target(name) for name in (to or [t.name for t in spec.targets] or ["local"]))
    for target in targets:
        publisher_for(target).check_credentials(target, home, read_secret)  # missing ones stop us before any build
    rows: list[Row] = []
    try:
        for tag in tags:
            rows += backfill_version(spec, source, tag, chosen, targets, home, builder, run_id)
    finally:
        remove_containers({RUN_LABEL: run_id})
        summary = publish_summary(spec.name, rows, home, run_id)
    failed = [r for r in rows if r.state == FAILED]
    if failed:
        raise BackfillFailed(
            f"{len(failed)} cell(s) not backfilled: "
            + "; ".join(f"{r.version} {r.cell} on {r.target}: {r.detail}" for r in failed[:5])
        )
    logger.info("%s", summary["verdict"])
    return summary


def backfill_version(
    spec: ReleaseSpec,
    source: Path,
    tag: ReleaseTag,
    cells: list[Cell],
    targets: tuple[Target, ...],
    home: Path,
    builder: str | None,
    run_id: str,
) -> list[Row]:
    """One released version: prove what is served, build what is missing, publish it target by target."""
    version = tag.version
    gaps = [read_gap(spec, target, version, cells, home) for target in targets]
    rows = [row for gap in gaps for row in gap_rows(gap)]
    # A target that refuses new files (a published github release without add-to-published) fails its
    # missing cells now: building them first would cost the compile (hours for a CUDA matrix) for nothing.
    rows += [
        Row(version, c.name, gap.target, FAILED, detail=gap.refused) for gap in gaps if gap.refused for c in gap.missing
    ]
    gaps = [gap if gap.refused is None else replace(gap, missing=()) for gap in gaps]
    wanted = [c for c in cells if any(c in gap.missing for gap in gaps)]
    if not wanted:
        return rows
    report = ReleaseReport(project=str(source), name=spec.name, version=version, flow_run_id=run_id)
    exported = tag_source(source, tag, home)
    outcomes = build_missing(spec, exported, tag, wanted, home, builder, report)
    built: dict[str, Distribution] = {}
    problems: dict[str, str] = {}
    for outcome in outcomes:
        if outcome.wheel is None:
            problems[outcome.cell.name] = f"build failed on {tag.tag}: {outcome.error}"
        elif outcome.smoke is not None and outcome.smoke.state == "failed":
            problems[outcome.cell.name] = f"smoke test failed: {outcome.smoke.message}"
        else:
            try:
                check_release_files(
                    [outcome.wheel],
                    spec.name,
                    {outcome.wheel.filename: expected_version(version, outcome.cell)},
                    ("wheel",),
                )
                abi_gate(spec, home, report, {outcome.cell.name: [outcome.wheel]})
                built[outcome.cell.name] = outcome.wheel
            except WheelflowError as exc:
                problems[outcome.cell.name] = str(exc)
    resolved = ResolvedVersion(version, tag.tag, {f"tag {tag.tag}": version}, exported.date_epoch, exported.commit)
    published: dict[str, str] = {}
    for gap, target in zip(gaps, targets):
        for cell in gap.missing:
            if cell.name in problems:
                rows.append(Row(version, cell.name, gap.target, FAILED, detail=problems[cell.name]))
        dists = [built[c.name] for c in gap.missing if c.name in built]
        if not dists:
            continue
        ctx = ReleaseContext(spec, resolved, (target,), home, report, builder, "auto", exported)
        try:
            with publishing(ctx, dists) as release_txn:
                for stage in release_txn.stages:
                    publish_stage(ctx, release_txn, stage)
                    prove_stage(ctx, stage)
        except WheelflowError as exc:
            rows += [
                Row(version, c.name, gap.target, FAILED, built[c.name].filename, f"publishing failed: {exc}")
                for c in gap.missing
                if c.name in built
            ]
            continue
        rows += [
            Row(
                version,
                c.name,
                gap.target,
                BACKFILLED,
                built[c.name].filename,
                f"built from {tag.tag}, uploaded, served with sha256 {built[c.name].sha256[:16]}…, installed",
            )
            for c in gap.missing
            if c.name in built
        ]
        published.update({d.filename: d.sha256 for d in dists})
    if published:  # what the monitor compares indexes with: the release's manifest, now with the new cells
        write_manifest(home, spec.name, version, {**(read_manifest(home, spec.name, version) or {}), **published})
    return rows


def read_gap(spec: ReleaseSpec, target: Target, version: str, cells: list[Cell], home: Path) -> Gap:
    """The target's cells of ``version``; each present wheel downloaded and hashed against the listing
    (and the release manifest), so that "nothing missing" is a proven result."""
    with publisher_for(target).reader(target, home, read_secret, project=spec.name) as reader:
        served = read_target_files(reader, spec.name, version)
        gap = find_gap(version, target, cells, served)
        refused = reader.refuses_new_files(spec.name, version) if gap.missing else None
        manifest = read_manifest(home, spec.name, version) or {}
        mismatched: dict[str, str] = {}
        with httpx.Client(timeout=READ_TIMEOUT) as client:
            for cell, file in gap.present.items():
                digest = download_sha256(client, file.url)
                expected = manifest.get(file.filename) or file.sha256
                if expected and digest != expected:
                    mismatched[cell] = f"{file.filename} is served with sha256 {digest}, expected {expected}"
    # Other bytes under a cell's name are a failed row, never rebuilt over.
    present = {c: f for c, f in gap.present.items() if c not in mismatched}
    return replace(gap, present=present, mismatched=mismatched, refused=refused)


def gap_rows(gap: Gap) -> list[Row]:
    rows = [
        Row(gap.version, cell, gap.target, PRESENT, file.filename, "served; downloaded and hashed")
        for cell, file in gap.present.items()
    ]
    rows += [
        Row(
            gap.version,
            cell,
            gap.target,
            FAILED,
            detail=why + "; fix: indexes never replace a file: release a new version",
        )
        for cell, why in gap.mismatched.items()
    ]
    rows += [
        Row(gap.version, cell, gap.target, NOT_ROUTED, detail="the target takes no such wheel")
        for cell in gap.not_routed
    ]
    return rows


def tag_source(project: Path, tag: ReleaseTag, home: Path) -> Source:
    """The tag's commit, exported as the release exported it (whatever the working tree holds now)."""
    commit = resolve_commit(project, f"{tag.tag}^{{commit}}")
    if commit is None:
        raise SourceError(f"tag {tag.tag} names no commit in {project}; fix: fetch the tags")
    return commit_source(project, home=home, commit=commit)


def build_missing(
    spec: ReleaseSpec,
    exported: Source,
    tag: ReleaseTag,
    cells: list[Cell],
    home: Path,
    builder_choice: str | None,
    report: ReleaseReport,
) -> list[CellOutcome]:
    """The cells built from the tag's export, then smoke-tested; failures are outcomes, not errors."""
    builder, _ = choose_builder(spec, builder_choice, cells)
    report.builder = builder.kind
    image = (lambda cell: cell.image) if builder.kind == "docker" else (lambda cell: None)
    job = CellJob(
        project=str(exported.path),
        source_digest=exported.identity,
        name=spec.name,
        version=tag.version,
        build_env=dict(spec.build_env),
        home=str(home),
        run_label=str(report.flow_run_id),
        source_date_epoch=exported.date_epoch,
        repair=spec.repair,
        build_network=spec.build_network,
    )
    unbuildable: list[CellOutcome] = []
    buildable: list[Cell] = []
    for cell in cells:
        try:
            builder.preflight(cell)
            buildable.append(cell)
        except (CellUnbuildable, InfrastructureError) as exc:
            unbuildable.append(CellOutcome(cell, error=f"cannot be built by the {builder.kind} builder: {exc}"))
    with ThreadPoolTaskRunner(max_workers=spec.matrix.concurrency) as runner:
        futures = [
            runner.submit(build_matrix_cell, {"builder": builder, "cell": cell, "job": job}) for cell in buildable
        ]
        outcomes = [built_outcome(cell, future, image(cell)) for cell, future in zip(buildable, futures)]
        smokes = {
            o.cell.name: runner.submit(
                smoke_matrix_cell,
                {"builder": builder, "cell": o.cell, "wheel": o.wheel, "smoke": spec.smoke, "run_label": job.run_label},
            )
            for o in outcomes
            if o.wheel is not None
        }
        outcomes = [replace(o, smoke=smokes[o.cell.name].result()) if o.cell.name in smokes else o for o in outcomes]
    return outcomes + unbuildable


def publish_summary(name: str, rows: list[Row], home: Path, run_id: str) -> dict:
    """The table artifact (version × cell × target), a markdown verdict, and the JSON the CLI reads."""
    counts = {state: sum(r.state == state for r in rows) for state in (PRESENT, BACKFILLED, FAILED, NOT_ROUTED)}
    versions = sorted(
        {r.version for r in rows}, key=lambda v: [int(p) if p.isdigit() else 0 for p in re.split(r"\D+", v)]
    )
    verdict = (
        f"checked {len(versions)} version(s) × {len({r.cell for r in rows})} cell(s) × "
        f"{len({r.target for r in rows})} target(s): {counts[BACKFILLED]} backfilled, {counts[PRESENT]} already "
        f"served (downloaded and hashed), {counts[FAILED]} failed"
        + (f", {counts[NOT_ROUTED]} not routed" if counts[NOT_ROUTED] else "")
    )
    key = "backfill-" + re.sub(r"[^a-z0-9-]+", "-", name.lower())
    if rows:
        create_table_artifact(key=key, table=[asdict(r) for r in rows], description=f"Backfill of {name}: {verdict}")
    create_markdown_artifact(
        key=f"{key}-summary", markdown=f"# Backfill of {name}\n\n{verdict}\n", description="Backfill verdict"
    )
    summary = {
        "ok": counts[FAILED] == 0 and bool(rows),
        "name": name,
        "flow_run_id": run_id,
        "versions": versions,
        "counts": counts,
        "verdict": verdict,
        "rows": [asdict(r) for r in rows],
    }
    path = home / "reports" / f"backfill-{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    return summary
