"""The release report: the checklist, the per-file outcome, and its JSON / markdown / table forms."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASSED, FAILED, NOT_RUN = "passed", "failed", "not run"
_ICON = {PASSED: "✅", FAILED: "❌", NOT_RUN: "➖"}


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
    kind: str
    upload: str = NOT_RUN  # uploaded, already present, failed, not run
    status: str = NOT_RUN  # verified, missing, hash-mismatch, not run


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

    def add(self, check: str, passed: bool, detail: str = "") -> None:
        self.checks.append(Check(check, PASSED if passed else FAILED, detail))

    def file(self, filename: str, target: str) -> FileReport | None:
        return next((f for f in self.files if f.filename == filename and f.target == target), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "name": self.name,
            "version": self.version,
            "files": [asdict(f) for f in self.files],
            "flow_run_id": self.flow_run_id,
            "checks": [asdict(c) for c in self.checks],
            "error": self.error,
        }

    def table_rows(self) -> list[dict[str, str]]:
        return [{"check": c.check, "result": f"{_ICON[c.status]} {c.status}", "detail": c.detail} for c in self.checks]

    def markdown(self) -> str:
        title = f"{self.name or self.project} {self.version or '(version unknown)'}"
        verdict = "released and verified" if self.ok else f"FAILED: {self.error}"
        lines = [f"# Release {title}: {verdict}", "", "| file | target | sha256 | upload | served |", "|---|---|---|---|---|"]
        for f in self.files:
            lines.append(f"| `{f.filename}` | {f.target} | `{f.sha256[:16]}…` | {f.upload} | {f.status} |")
        lines += ["", "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c.check} | {_ICON[c.status]} {c.status} | {c.detail} |" for c in self.checks]
        return "\n".join(lines) + "\n"

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.flow_run_id or 'no-run'}.json"
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path
