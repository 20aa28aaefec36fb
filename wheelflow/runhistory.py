"""Every task run of a flow run (and its subflows), with its full state history, from the Prefect API.

Prefect 3 records task run states from events, a moment after they happen; callers that need the
final state of a run that just ended pass ``settle`` to wait until every task run reached one.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from uuid import UUID



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
        return {"name": self.name, "flow_run": self.flow_run, "state": self.state, "duration_s": self.duration_s,
                "attempts": self.attempts, "history": [s.__dict__ for s in self.history]}


def _entry(state: Any, error: str | None = None) -> StateEntry:
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


def _retry_logs(client: Any, task_run_ids: list[UUID]) -> dict[UUID, list[str]]:
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
    from prefect.client.schemas.sorting import LogSort

    if not task_run_ids:
        return {}
    found: dict[UUID, list[str]] = {}
    for log in client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=task_run_ids)),
                                sort=LogSort.TIMESTAMP_ASC):
        found.setdefault(log.task_run_id, []).append(log.message)
    return found


def flow_run_tree(client: Any, flow_run_id: UUID) -> list[Any]:
    """The flow run and its subflow runs, depth first."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    runs = [client.read_flow_run(flow_run_id)]
    children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
    for child in children:
        runs += flow_run_tree(client, child.id)
    return runs


def task_histories(client: Any, flow_run_id: UUID | str, *, settle: float = 0.0) -> list[TaskHistory]:
    """Every task run of the flow run and its subflows, oldest first.

    With ``settle`` > 0, re-read (up to that many seconds) until no task run is left in a
    non-final state: the server records states from events a moment after they happen.
    """
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + settle
    while True:
        runs = flow_run_tree(client, UUID(str(flow_run_id)))
        names = {run.id: run.name for run in runs}
        task_runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=list(names))),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )
        unsettled = [t for t in task_runs if t.state is None or not t.state.is_final()]
        if not unsettled or time.monotonic() >= deadline:
            break
        time.sleep(0.2)  # polling the API for a recorded state, bounded by ``settle``
    states_of = {t.id: sorted(client.read_task_run_states(t.id), key=lambda s: s.timestamp) for t in task_runs}
    retried = [t.id for t in task_runs if any(s.name == "AwaitingRetry" for s in states_of[t.id])]
    logs = _retry_logs(client, retried)
    histories = []
    for task_run in task_runs:
        states = states_of[task_run.id]
        errors = iter(retry_errors(logs.get(task_run.id, [])))
        entries = [_entry(s, next(errors, None) if s.name == "AwaitingRetry" else None) for s in states]
        duration = task_run.total_run_time.total_seconds() if task_run.total_run_time else None
        histories.append(TaskHistory(
            name=task_run.name,
            flow_run=names.get(task_run.flow_run_id, str(task_run.flow_run_id)),
            state=task_run.state.name if task_run.state else "Unknown",
            duration_s=duration,
            attempts=max(1, sum(1 for s in states if s.type.value == "RUNNING")),
            history=entries,
        ))
    return histories


def describe_attempts(history: TaskHistory) -> list[str]:
    """'attempt N at TIME: error' lines for an alert or a terminal."""
    lines = []
    for number, entry in enumerate(history.errors, start=1):
        when = datetime.fromisoformat(entry.time).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"attempt {number} at {when} UTC: {entry.name}: {entry.message or ''}".rstrip(": "))
    return lines
