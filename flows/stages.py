"""A release's targets as stages: the files routed to each, what it already serves, and the steps
every kind of target shares (recording uploads, the per-file proof rows, the users' install checks).

Each target is published through its :class:`Publisher` (``flows/targets.py``): an index that
takes uploads, or a static index wheelflow writes itself; a third kind is one more implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from prefect.task_runners import ThreadPoolTaskRunner
from prefect.transactions import Transaction

from wheelflow.adapters.prefect_api import read_record, write_record
from wheelflow.builds.builders.local import find_interpreter
from wheelflow.config.spec import LOCAL_STORE, Target
from wheelflow.core.distributions import Distribution
from wheelflow.core.errors import CellUnbuildable, VerificationError
from wheelflow.core.report import FAILED, NOT_RUN, PASSED, Check
from wheelflow.flows.context import ReleaseContext
from wheelflow.flows.futures import all_settled, outside_transaction
from wheelflow.index.indexes import Endpoints
from wheelflow.index.simple_api import ServedFile
from wheelflow.index.staticindex import store_location
from wheelflow.ops.monitor import manifest_variable, record_upload
from wheelflow.proof.installchecks import install_commands, plan, runtimes
from wheelflow.proof.verification import VERIFIED
from wheelflow.tasks.upload import UploadInProgress
from wheelflow.tasks.verify import ServedCheckFailed, install_check

T = TypeVar("T")
INSTALL_CHECKS_AT_ONCE = 4  # fresh environments, each a few processes: more would only queue on the CPU


class Publisher(Protocol):
    """One kind of target: how it is opened, read, written, proven and read back after a rollback."""

    def open(self, ctx: ReleaseContext, targets: contextlib.ExitStack, target: Target) -> Endpoints:
        """Open the target for the release (what must run while it is open runs in ``targets``)."""

    def read_served(self, ctx: ReleaseContext, stage: Stage) -> list[ServedFile]:
        """This version's files the target serves, with their sha256."""

    def inherited(self, stage: Stage, served: list[ServedFile]) -> dict[str, str]:
        """filename → the index it is inherited from, for files the target serves but does not own."""

    def publish(self, ctx: ReleaseContext, publication: Publication, stage: Stage) -> None:
        """Put what the target lacks there, each write adding its rollback hook to the transaction."""

    def prove(self, ctx: ReleaseContext, stage: Stage) -> None:
        """Every routed file served with its sha256, installed from the target and smoke-tested."""

    def still_served(self, ctx: ReleaseContext, stage: Stage, filenames: list[str]) -> set[str]:
        """Which of ``filenames`` the target still serves (after the rollback hooks ran)."""


@dataclass
class Stage:
    """One target of the release: the files routed to it and those it already serves with our bytes."""

    position: int
    target: Target
    publisher: Publisher
    endpoints: Endpoints
    files: list[Distribution]
    present: set[str] = field(default_factory=set)

    @property
    def missing(self) -> list[Distribution]:
        return [d for d in self.files if d.filename not in self.present]


@dataclass
class Publication:
    stages: list[Stage]
    transaction: Transaction
    uploading: UploadInProgress = field(default_factory=UploadInProgress)


def index_key(target: Target) -> str:
    """What identifies a target's index in the upload record: its configured index, or its static
    store's one location (two spellings of one store are one index, as they are one lock)."""
    if target.store_url is not None and target.store_url != LOCAL_STORE:
        return store_location(target.store_url)
    return target.index or target.store_url or target.name


def note_upload(ctx: ReleaseContext, dist: Distribution, target: Target) -> None:
    """Record the upload on the Prefect server at once: a run killed after it still counts it."""
    note_uploads(ctx, [dist], target)


def note_uploads(ctx: ReleaseContext, dists: list[Distribution], target: Target) -> None:
    """Record uploads that landed together in one read and one write of the record (500 files recorded
    one by one cost 100 s after the uploads themselves were done)."""
    if not dists:
        return
    key = manifest_variable(ctx.spec.name, ctx.version)
    record = read_record(key)
    for dist in dists:
        record = record_upload(
            record,
            name=ctx.spec.name,
            version=ctx.version,
            index=index_key(target),
            filename=dist.filename,
            sha256=dist.sha256,
            flow_run_id=str(ctx.report.flow_run_id),
        )
    write_record(
        key, record, description=f"Upload record of {ctx.spec.name} {ctx.version}: index → file → sha256, flow run"
    )


def proven(ctx: ReleaseContext, stage: Stage, verify: Callable[[], T], detail: Callable[[Distribution, T], str]) -> T:
    """Run the target's proof and record each file's outcome: a row per file, its status in the report."""
    report, target = ctx.report, stage.target.name
    try:
        result = verify()
    except ServedCheckFailed as exc:
        for status in exc.statuses:
            report.file(status.filename, target).status = status.status
            report.add(f"served {status.filename} on {target}", status.status == VERIFIED, status.describe())
        raise
    for dist in stage.files:
        report.file(dist.filename, target).status = VERIFIED
        report.add(f"served {dist.filename} on {target}", True, detail(dist, result))
    return result


def user_install_checks(ctx: ReleaseContext, stage: Stage, served: list[ServedFile], index_urls: list[str]) -> None:
    """Each install command users type × runtime Python × installer (pip, uv): a checklist row each,
    asserting a wheel of the release is what they get. All run; the first failure then fails the
    release. Once per target and runtime, not per cell. ``index_urls``: the target's Simple API URL
    first, then its variant sub-indexes (a static index of sdists only has none: nothing to check)."""
    if not index_urls:
        return
    commands = install_commands(
        stage.target.install_commands, ctx.spec.name, ctx.version, index_urls[0], index_urls[1:]
    )
    pythons = [c.values["python"] for c in ctx.spec.matrix.cells if "python" in c.values] if ctx.spec.matrix else []
    runs = []
    # outside the release's transaction: a check that fails must not roll the release back (removing
    # the files) while its siblings still install them; the rollback comes once all have settled
    with outside_transaction(), ThreadPoolTaskRunner(max_workers=INSTALL_CHECKS_AT_ONCE) as runner:
        for check in plan(commands, runtimes(pythons)):
            row = Check(check.title(stage.target.name), NOT_RUN)
            ctx.report.checks.append(row)
            try:
                interpreter = find_interpreter(check.python)
            except CellUnbuildable as exc:
                row.detail = str(exc)
                continue
            runs.append(
                (
                    row,
                    runner.submit(
                        install_check,
                        {
                            "target": stage.target.name,
                            "check": check,
                            "name": ctx.spec.name,
                            "version": ctx.version,
                            "served": served,
                            "interpreter": interpreter,
                        },
                    ),
                )
            )
        outcomes, first_failure = all_settled(
            [future for _, future in runs],
            lambda message: VerificationError(message or "install check did not complete"),
        )
    for (row, _), (outcome, failed) in zip(runs, outcomes):
        if failed is not None:
            row.status, row.detail = FAILED, str(failed)
        else:
            row.status, row.detail = PASSED, outcome
    if first_failure is not None:
        raise first_failure  # the first in time: the others may have failed because of it
