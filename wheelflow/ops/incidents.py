"""Incidents: one alert when a problem opens, reminders at an interval, one message when it closes.

Planning is a plain function of (open incidents, this run's statuses, now). The open incidents live
in Prefect Variables, one per incident, so a restarted monitor (or one on another machine) picks
up where the last one stopped instead of alerting again.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from wheelflow.ops.monitor import VersionStatus

OPENED, REMINDER, RESOLVED = "opened", "reminder", "resolved"
VARIABLE_PREFIX = "wheelflow-incident-"


@dataclass(frozen=True)
class Incident:
    project: str
    index: str
    version: str
    status: str
    opened_at: str
    last_alert_at: str
    missing: tuple[str, ...] = ()
    remediation_run: str | None = None

    @property
    def key(self) -> str:
        return incident_key(self.project, self.index, self.version)

    def json(self) -> dict[str, Any]:
        return {**asdict(self), "missing": list(self.missing)}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Incident:
        return cls(**{**value, "missing": tuple(value.get("missing", ()))})


@dataclass(frozen=True)
class Notice:
    kind: str  # opened, reminder, resolved
    incident: Incident
    status: VersionStatus | None  # None when the version is no longer reported at all


def incident_key(project: str, index: str, version: str) -> str:
    return f"{project}|{index}|{version}"


def plan_notices(
    open_incidents: dict[str, Incident],
    results: list[VersionStatus],
    now: datetime,
    reminder_every: timedelta,
) -> tuple[dict[str, Incident], list[Notice]]:
    """The incidents open after this run, and what to tell people about them."""
    still_open: dict[str, Incident] = {}
    notices: list[Notice] = []
    seen: set[str] = set()
    for result in results:
        key = incident_key(result.project, result.index, result.version)
        seen.add(key)
        previous = open_incidents.get(key)
        if not result.problem:
            if previous:
                notices.append(Notice(RESOLVED, previous, result))
            continue
        if previous is None:
            incident = Incident(
                result.project,
                result.index,
                result.version,
                result.status,
                opened_at=now.isoformat(),
                last_alert_at=now.isoformat(),
                missing=tuple(result.missing),
            )
            notices.append(Notice(OPENED, incident, result))
        elif now - datetime.fromisoformat(previous.last_alert_at) >= reminder_every:
            incident = replace(
                previous, status=result.status, missing=tuple(result.missing), last_alert_at=now.isoformat()
            )
            notices.append(Notice(REMINDER, incident, result))
        else:
            incident = replace(previous, status=result.status, missing=tuple(result.missing))
        still_open[key] = incident
    # Incidents of projects or indexes this run did not look at stay as they are.
    checked = {(r.project, r.index) for r in results}
    for key, incident in open_incidents.items():
        if key not in seen:
            if (incident.project, incident.index) in checked:
                notices.append(Notice(RESOLVED, incident, None))  # the tag is gone
            else:
                still_open[key] = incident
    return still_open, notices


class IncidentStore(Protocol):
    def load(self) -> dict[str, Incident]: ...
    def save(self, incidents: dict[str, Incident]) -> None: ...


def variable_name(key: str) -> str:
    return VARIABLE_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:24]


class MemoryStore:
    """For callers without a Prefect API (and for tests of the planning around a store)."""

    def __init__(self) -> None:
        self.incidents: dict[str, Incident] = {}

    def load(self) -> dict[str, Incident]:
        return dict(self.incidents)

    def save(self, incidents: dict[str, Incident]) -> None:
        self.incidents = dict(incidents)
