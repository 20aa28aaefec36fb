"""Task run histories as plain values: each attempt with its time and error, for alerts and terminals.

Reading them from the Prefect API is :func:`wheelflow.adapters.prefect_api.task_histories`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


@dataclass(frozen=True)
class StateEntry:
    time: str
    type: str  # SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, ...
    name: str  # "Retrying", "AwaitingRetry", "Failed", ...
    message: str | None


@dataclass(frozen=True)
class TaskHistory:
    name: str
    flow_run: str
    state: str
    duration_s: float | None
    attempts: int
    history: list[StateEntry] = field(default_factory=list)

    @property
    def errors(self) -> list[StateEntry]:
        """One entry per failed attempt: the retry states and a final failure, with their messages."""
        return [s for s in self.history if s.name == "AwaitingRetry" or s.type in ("FAILED", "CRASHED")]

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "flow_run": self.flow_run,
            "state": self.state,
            "duration_s": self.duration_s,
            "attempts": self.attempts,
            "history": [s.__dict__ for s in self.history],
        }


def entry_from_state(state: Any, error: str | None = None) -> StateEntry:
    """A Prefect state (any object with timestamp, type, name, message) as a plain entry."""
    message = state.message or error
    return StateEntry(time=state.timestamp.isoformat(), type=state.type.value, name=state.name, message=message or None)


_RETRY_LOG = re.compile(r"^Task run failed with (?:exception|state)?:? ?(?P<error>.*) - Retry \d+/\d+ will start", re.S)
_REPR = re.compile(r"^(?P<type>\w+)\((?P<quote>['\"])(?P<message>.*)(?P=quote)\)$", re.S)


def retry_errors(log_messages: list[str]) -> list[str]:
    """The error of each retried attempt, from Prefect's "Task run failed with ... - Retry n/m" lines:
    an AwaitingRetry state carries no message of its own."""
    errors = []
    for text in log_messages:
        match = _RETRY_LOG.match(text)
        if match:
            error = match.group("error").strip()
            as_repr = _REPR.match(error)
            errors.append(f"{as_repr.group('type')}: {as_repr.group('message')}" if as_repr else error)
    return errors


def describe_attempts(history: TaskHistory) -> list[str]:
    """'attempt N at TIME: error' lines for an alert or a terminal."""
    lines = []
    for number, entry in enumerate(history.errors, start=1):
        when = datetime.fromisoformat(entry.time).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"attempt {number} at {when} UTC: {entry.name}: {entry.message or ''}".rstrip(": "))
    return lines
