"""The release report: the checklist, the per-file outcome, and its JSON / markdown / table forms.

Every form is redacted (:mod:`wheelflow.core.redaction`): a report quotes errors, build output and
index answers, and ends up in artifacts, files and alerts.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from wheelflow.core.codeversion import describe_code, running_wheelflow
from wheelflow.core.redaction import redact, redact_value

PASSED, FAILED, NOT_RUN = "passed", "failed", "not run"
_ICON = {PASSED: "✅", FAILED: "❌", NOT_RUN: "➖"}


class UploadOutcome(str, Enum):
    """What publishing did with one file on one target (a string: the report and its readers see the value)."""

    UPLOADED = "uploaded"
    ALREADY_PRESENT = "already present"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"

    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def published(cls) -> tuple[UploadOutcome, ...]:
        """The outcomes that leave the file on the target as the release's own."""
        return (cls.UPLOADED, cls.ALREADY_PRESENT)


@dataclass
class Check:
    check: str
    status: str  # passed, failed, not run
    detail: str = ""


@dataclass
class FileReport:
    filename: str
    sha256: str
    target: str
    kind: str  # the file's artifact kind: sdist or wheel (the report's JSON key)
    upload: str = NOT_RUN  # an UploadOutcome, or not run
    status: str = NOT_RUN  # verified, missing, hash-mismatch, not run


@dataclass
class CellReport:
    cell: str
    image: str | None = None
    wheel: str | None = None
    sha256: str | None = None
    size: int | None = None
    cached: bool = False
    state: str = NOT_RUN  # built, failed, not run
    attempts: int = 0
    duration: float = 0.0
    smoke: str = NOT_RUN  # passed, failed, skipped: <why>, not run
    error: str | None = None
    runner: str | None = None  # WHEELFLOW_RUNNER_NAME (or host) of the worker that built it, on a work pool
    platform: str | None = None  # the published wheel's platform tag (after the repair step)
    unrepaired_sha256: str | None = None  # the wheel as built, before the repair step changed it
    torch: str | None = None  # the torch the build and the smoke test ran with, when the cell has one
    compiler_cache: str | None = None  # "3 of 4 compiles hit"
    from_sdist: bool = False  # built from the released sdist, not the source tree
    sandbox: str | None = None  # what contained its build and smoke test (wheelflow.core.sandbox)

    def json(self) -> dict[str, Any]:
        return redact_value(
            {
                "cell": self.cell,
                "wheel": self.wheel,
                "sha256": self.sha256,
                "cached": self.cached,
                "state": self.state,
                "smoke": self.smoke,
                "image": self.image,
                "size": self.size,
                "attempts": self.attempts,
                "duration": round(self.duration, 2),
                "error": self.error,
                "runner": self.runner,
                "platform": self.platform,
                "unrepaired_sha256": self.unrepaired_sha256,
                "torch": self.torch,
                "compiler_cache": self.compiler_cache,
                "from_sdist": self.from_sdist,
                "sandbox": self.sandbox,
            }
        )

    def table_row(self) -> dict[str, Any]:
        return redact_value(
            {
                "cell": self.cell,
                "image": self.image or "local",
                "duration": f"{self.duration:.1f} s",
                "wheel": self.wheel or "",
                "platform": self.platform or "",
                "size": self.size or 0,
                "sha256": self.sha256 or "",
                "unrepaired sha256": self.unrepaired_sha256 or "",
                "state": f"{self.state} (cached)" if self.cached else self.state,
                "attempts": self.attempts,
                "smoke": self.smoke,
                "torch": self.torch or "",
                "built from": "sdist" if self.from_sdist else "source tree",
                "compiler cache": self.compiler_cache or "",
                "sandbox": self.sandbox or "",
            }
        )


SMOKE_CHECK_PREFIX = "install + smoke on "  # the check that proves a target (flows/targets.py names it)


def proven_targets(checks: Iterable[tuple[str, str]]) -> set[str]:
    """The targets whose install + smoke test passed, from (check, status) pairs: a file still served
    on any other target after a failed or cancelled release is "published, not proven"."""
    return {
        name.removeprefix(SMOKE_CHECK_PREFIX)
        for name, status in checks
        if name.startswith(SMOKE_CHECK_PREFIX) and status == PASSED
    }


@dataclass
class ReleaseReport:
    project: str
    name: str | None = None
    version: str | None = None
    ok: bool = False
    flow_run_id: str | None = None
    error: str | None = None
    checks: list[Check] = field(default_factory=list)
    files: list[FileReport] = field(default_factory=list)
    builder: str | None = None
    cells: list[CellReport] = field(default_factory=list)
    runbook: list[str] = field(default_factory=list)  # what a person must do for files that stayed published
    source: dict[str, Any] | None = None  # what was built: the release commit's export, or a directory
    code: dict[str, str] = field(default_factory=running_wheelflow)  # the wheelflow that ran it
    sandbox: str | None = None  # what contained the code of the project run here (wheelflow.core.sandbox)
    install: list[str] = field(default_factory=list)  # the command a user pastes, per index target proven
    # what users should know though nothing failed, e.g. the torch they get is not the one built for
    flags: list[str] = field(default_factory=list)
    # (files, its length, (filename, target) → entry): file() looked each one up by scanning every
    # entry, 2 lookups per file made a 2,000-file release quadratic; rebuilt when files is replaced or grows
    _file_index: tuple[list[FileReport], int, dict[tuple[str, str], FileReport]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def add(self, check: str, passed: bool, detail: str = "") -> None:
        self.checks.append(Check(check, PASSED if passed else FAILED, detail))

    @contextlib.contextmanager
    def step(self, check: str, detail: str = "") -> Iterator[Check]:
        """Record one step of the release: passed when the block ends, failed (with the error as its
        detail, unless the block set one) when it raises. The block may set ``.detail``."""
        entry = Check(check, NOT_RUN, detail)
        self.checks.append(entry)
        try:
            yield entry
        except Exception as exc:
            entry.status, entry.detail = FAILED, entry.detail or str(exc)
            raise
        entry.status = PASSED

    def file(self, filename: str, target: str) -> FileReport | None:
        index = self._file_index
        if index is None or index[0] is not self.files or index[1] != len(self.files):
            by_key = {(f.filename, f.target): f for f in reversed(self.files)}  # reversed: the first entry wins
            self._file_index = index = (self.files, len(self.files), by_key)
        return index[2].get((filename, target))

    def to_json(self) -> dict[str, Any]:
        return redact_value(
            {
                "ok": self.ok,
                "name": self.name,
                "version": self.version,
                "files": [asdict(f) for f in self.files],
                "flow_run_id": self.flow_run_id,
                "checks": [asdict(c) for c in self.checks],
                "error": self.error,
                "builder": self.builder,
                "cells": [c.json() for c in self.cells],
                "runbook": self.runbook,
                "source": self.source,
                "wheelflow": self.code,
                "sandbox": self.sandbox,
                "install": self.install,
                "flags": self.flags,
            }
        )

    def file_rows(self) -> list[dict[str, str]]:
        """One row per file and target: what was uploaded and what proves it is served."""
        # the outcome first: the UI's table cuts its right side, and a 64-character digest is the
        # widest column
        return [
            {
                "file": f.filename,
                "target": f.target,
                "upload": f.upload,
                "proof": f.status,
                "sha256": f.sha256,
                "name": self.name or "",
                "version": self.version or "",
            }
            for f in self.files
        ]

    def failed_step(self) -> str | None:
        """The step the release stopped at: its first failed check."""
        return next((c.check for c in self.checks if c.status == FAILED), None)

    def table_rows(self) -> list[dict[str, str]]:
        return redact_value(
            [{"check": c.check, "result": f"{_ICON[c.status]} {c.status}", "detail": c.detail} for c in self.checks]
        )

    def markdown(self) -> str:
        title = f"{self.name or self.project} {self.version or '(version unknown)'}"
        verdict = "released and verified" if self.ok else f"FAILED: {self.error}"
        lines = [
            f"# Release {title}: {verdict}",
            "",
            f"Run by {describe_code(self.code)}.",
            "",
            *[f"> ⚠️ {flag}" for flag in self.flags],  # before the tables: the UI shows the top first
            *([""] if self.flags else []),
            "| file | target | upload | proof | sha256 |",  # the one files-table layout (see file_rows)
            "|---|---|---|---|---|",
        ]
        for f in self.files:
            lines.append(f"| `{f.filename}` | {f.target} | {f.upload} | {f.status} | `{f.sha256}` |")
        if self.cells:
            lines += [
                "",
                f"Built by the **{self.builder}** builder:",
                "",
                "| cell | wheel | platform | state | smoke |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {c.cell} | `{c.wheel or '-'}` | {c.platform or '-'} | {c.state}{' (cached)' if c.cached else ''} | {c.smoke} |"
                for c in self.cells
            ]
        if self.runbook:
            lines += ["", "## Rollback runbook", "", "```", *self.runbook, "```"]
        lines += ["", "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c.check} | {_ICON[c.status]} {c.status} | {c.detail} |" for c in self.checks]
        if self.ok and self.install:  # last: what a user does next
            lines += ["", "## Install", "", "```", *self.install, "```"]
        return redact("\n".join(lines) + "\n")

    def save(self, directory: Path, as_json: dict[str, Any] | None = None) -> Path:
        """The report as JSON under ``directory``; ``as_json``: its :meth:`to_json`, when the caller has it."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.flow_run_id or 'no-run'}.json"
        path.write_text(json.dumps(self.to_json() if as_json is None else as_json, indent=2))
        return path
