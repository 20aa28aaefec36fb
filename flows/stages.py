"""A release's targets as stages: the files routed to each, what it already serves, and the steps
every kind of target shares (recording uploads, the per-file proof rows, the users' install checks).

Each target is published through its :class:`Publisher` (``flows/targets.py``): an index that
takes uploads, or a static index wheelflow writes itself; a third kind is one more implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from prefect.task_runners import ThreadPoolTaskRunner
from prefect.transactions import Transaction

from wheelflow.adapters.prefect_api import read_record, write_record
from wheelflow.builds.builders.local import find_interpreter
from wheelflow.checks.audits import Limits
from wheelflow.config.spec import Target
from wheelflow.core.distributions import Distribution
from wheelflow.core.errors import CellUnbuildable, VerificationError
from wheelflow.core.report import FAILED, NOT_RUN, PASSED, Check, UploadOutcome
from wheelflow.flows.context import ReleaseContext
from wheelflow.flows.futures import all_settled, outside_transaction
from wheelflow.index.readers import TargetReader
from wheelflow.index.simple_api import ServedFile
from wheelflow.ops.monitor import manifest_variable, record_uploads
from wheelflow.proof.installchecks import install_commands, plan, runtimes
from wheelflow.proof.verification import VERIFIED
from wheelflow.tasks.index_upload import UploadInProgress
from wheelflow.tasks.verify import ServedCheckFailed, install_check

T = TypeVar("T")
INSTALL_CHECKS_AT_ONCE = 4  # fresh environments, each a few processes: more would only queue on the CPU


class Publisher(Protocol):
    """One kind of target, everything that differs between kinds: how it is opened, read, written, proven,
    finalized and read back after a rollback; its credentials, the key its uploads are recorded under,
    its default rules, the runbook for files a rollback could not take back, and how users point an
    installer at it. Registered once, by kind, in ``flows/targets.py`` (:data:`PUBLISHERS`); callers
    never branch on the kind. A publisher is made per target and release run: it may keep what
    :meth:`open` found (its domain client's endpoints, a site) for the later steps."""

    #: what follows the install command's requirement to read this kind: "--index-url" (a Simple API)
    install_option: str

    def check_credentials(self, target: Target, home: Path, read_secret: Callable[[str], Any] | None) -> None:
        """Read the target's credentials once, before any build: a missing one is refused here."""

    def record_keys(self, target: Target) -> tuple[str, ...]:
        """Where the upload record keeps this target's uploads: older spellings first, the current key last."""

    def limits(self, target: Target) -> Limits:
        """The target's rules (file size, budget, local versions, manylinux), with the kind's defaults."""

    def reader(
        self, target: Target, home: Path, read_secret: Callable[[str], Any] | None = None, project: str | None = None
    ) -> contextlib.AbstractContextManager[TargetReader]:
        """A read-only view of the target (backfill, verify): nothing is written; its embedded server runs
        while open. With ``project``, every place that lists the project is read."""

    def open(self, ctx: ReleaseContext, targets: contextlib.ExitStack, target: Target) -> None:
        """Open the target for the release (what must run while it is open runs in ``targets``)."""

    def read_served(self, ctx: ReleaseContext, stage: Stage) -> list[ServedFile]:
        """This version's files the target serves, with their sha256."""

    def inherited(self, stage: Stage, served: list[ServedFile]) -> dict[str, str]:
        """filename → the index it is inherited from, for files the target serves but does not own."""

    def publish(self, ctx: ReleaseContext, release_txn: ReleaseTransaction, stage: Stage) -> None:
        """Put what the target lacks there, each write adding its rollback hook to the transaction. Each
        file's outcome is recorded through :class:`PublishBookkeeping`; a failure after some files landed
        raises :class:`~wheelflow.core.errors.UploadError`, which keeps them."""

    def prove(self, ctx: ReleaseContext, stage: Stage) -> None:
        """Every routed file served with its sha256, installed from the target and smoke-tested."""

    def finalize(self, ctx: ReleaseContext, stage: Stage) -> None:
        """Make what was published visible, once every stage is proven (a draft published); a no-op for
        a kind whose files are visible as soon as they are written."""

    def still_served(self, ctx: ReleaseContext, stage: Stage, filenames: list[str]) -> set[str]:
        """Which of ``filenames`` the target still serves (after the rollback hooks ran)."""

    def rollback_runbook(self, ctx: ReleaseContext, stage: Stage, stayed: list[str]) -> list[str]:
        """What a person does about ``stayed``: files the rollback could not take back from the target."""


@dataclass
class Stage:
    """One target of the release: the files routed to it and those it already serves with our bytes."""

    position: int
    target: Target
    publisher: Publisher
    files: list[Distribution]
    present: set[str] = field(default_factory=set)

    @property
    def missing(self) -> list[Distribution]:
        return [d for d in self.files if d.filename not in self.present]


@dataclass
class ReleaseTransaction:
    """The release's stages and the one transaction their writes' rollback hooks join."""

    stages: list[Stage]
    transaction: Transaction
    uploading: UploadInProgress = field(default_factory=UploadInProgress)


class PublishBookkeeping:
    """What every publisher records for a file it publishes, in one place: the checklist row "uploaded
    FILE to TARGET", the file's :class:`UploadOutcome`, and the upload record on the Prefect server for
    what landed. ``rows_upfront``: every file's row is added now, so the checklist keeps the files'
    order whatever order they settle in; otherwise each row is added as its file settles."""

    def __init__(self, ctx: ReleaseContext, stage: Stage, *, rows_upfront: bool = True) -> None:
        self.ctx, self.stage = ctx, stage
        self.rows: dict[str, Check] = {}
        self.unrecorded: list[Distribution] = []
        self.record_as_written: dict[str, Any] | None = None  # read from the server at the first record()
        if rows_upfront:
            for dist in stage.files:
                self._row(dist)

    def already_present(self, dist: Distribution, detail: str) -> None:
        """Served with our bytes before this run wrote it: not written again."""
        self._settle(dist, UploadOutcome.ALREADY_PRESENT, PASSED, detail)

    def written(self, dist: Distribution, outcome: UploadOutcome, detail: str) -> None:
        """Written by this run (or found landed by a retry): on the upload record at the next :meth:`record`."""
        self._settle(dist, outcome, PASSED, detail)
        self.unrecorded.append(dist)

    def record(self) -> None:
        """Put what was written since the last call on the upload record (one write for all: 500 files
        recorded one by one cost 100 s after the uploads themselves were done). The record is read once
        per stage and kept here as written since (see :func:`note_uploads`)."""
        self.record_as_written = note_uploads(self.ctx, self.unrecorded, self.stage, self.record_as_written)
        self.unrecorded = []

    def failed(self, dist: Distribution, detail: str | None = None) -> None:
        """Not written; ``detail`` (the failure) fills its checklist row, when it has one."""
        self.ctx.report.file(dist.filename, self.stage.target.name).upload = UploadOutcome.FAILED
        if detail is not None:
            self._row(dist).status, self._row(dist).detail = FAILED, detail

    def _settle(self, dist: Distribution, outcome: UploadOutcome, status: str, detail: str) -> None:
        self.ctx.report.file(dist.filename, self.stage.target.name).upload = outcome
        row = self._row(dist)
        row.status, row.detail = status, detail

    def _row(self, dist: Distribution) -> Check:
        if dist.filename not in self.rows:
            self.rows[dist.filename] = row = Check(f"uploaded {dist.filename} to {self.stage.target.name}", NOT_RUN)
            self.ctx.report.checks.append(row)
        return self.rows[dist.filename]


def note_uploads(
    ctx: ReleaseContext, dists: list[Distribution], stage: Stage, record: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Record uploads that landed together in one write of the whole record (500 files recorded one by
    one cost 100 s after the uploads themselves were done), as before: a run stopped between two
    batches leaves every earlier batch on record for its re-run and rollback.

    ``record``: the record as this run last wrote it, returned for the next batch; None reads it from
    the server. The record only grows, and the release lock keeps any other run of this release from
    writing it meanwhile, so one read per stage is enough: reading it back per batch made recording
    quadratic (27 reads of a growing 1,000-file record cost 6.4 s)."""
    if not dists:
        return record
    key = manifest_variable(ctx.spec.name, ctx.version)
    if record is None:
        record = read_record(key)
    record = record_uploads(
        record,
        name=ctx.spec.name,
        version=ctx.version,
        index=stage.publisher.record_keys(stage.target)[-1],
        files={dist.filename: dist.sha256 for dist in dists},
        flow_run_id=str(ctx.report.flow_run_id),
    )
    write_record(
        key, record, description=f"Upload record of {ctx.spec.name} {ctx.version}: index → file → sha256, flow run"
    )
    return record


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
        stage.target.install_commands,
        ctx.spec.name,
        ctx.version,
        index_urls[0],
        index_urls[1:],
        option=stage.publisher.install_option,
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
