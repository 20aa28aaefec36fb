"""SIGTERM and SIGINT stop a release run from `wheelflow release` within seconds, in any phase, and
leave it Cancelled with the reason.

Prefect's own SIGTERM handling raises in the main thread only: uploads and install checks in worker
threads, and the compilers and installers in child processes, went on (an upload to an index that
never answers held the run for its whole attempt), and the run ended Crashed. Here the signal asks
:mod:`wheelflow.core.cancel` to stop everything of the run (uploads shut their sockets, child
process groups are killed, nothing is retried), the flow unwinds as for any failure (the rollback,
the report), and the run is marked Cancelling (the alert goes out, bounded in time), then Cancelled.
If it still runs :data:`GRACE` seconds after the signal, the cancel is recorded and the process exits 3.

A run started by a runner (a deployment, ``wheelflow serve``, a worker) is cancelled through Prefect
(UI, ``prefect flow-run cancel``, ``trigger --wait``'s SIGTERM): the runner sends SIGTERM and, once the
process has ended, runs the cancellation hook (the alert) and marks the run Cancelled. Without the
handler here, Prefect's own turned the signal into a crash of whichever task ran: nothing was rolled
back, no report written, and the uploads stayed published and unproven. So the run unwinds here too
(rollback, report, with the reason its canceller gave), and leaves the states and the alert to its runner.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.states import Cancelled, Cancelling, State

from wheelflow.core import cancel
from wheelflow.core.deadline import Deadline
from wheelflow.core.errors import ExitCode
from wheelflow.flows.hooks import alert_release_problem
from wheelflow.ops.orchestration import cancel_reason

#: Seconds from the signal to the process's end, at most (the issue's bound is 10 s).
GRACE = 9.0
#: Of which the cancellation alert may take this many (its own deadline is longer when not cancelling).
ALERT_BUDGET = 4.0


def runner_managed() -> bool:
    """A run its runner supervises: the runner cancels it and runs its hooks."""
    context = FlowRunContext.get()
    deployed = bool(context and context.flow_run and context.flow_run.deployment_id)
    return deployed or os.environ.get("PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS", "true").lower() == "false"


def cancel_message(reason: str) -> str:
    return (
        f"cancelled: {reason}; what was uploaded and verified stays as the report says: re-run the release to finish it"
    )


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`~wheelflow.core.cancel.RunCancelled` in the flow (see the module)."""
    cancel.reset()
    context = FlowRunContext.get()  # here: the grace timer's thread does not see this run's context
    flow_run_id = context.flow_run.id if context and context.flow_run else None
    by_runner = runner_managed()

    def record_now(reason: str) -> None:
        """The last resort when the run did not end within its grace: mark it Cancelled before the exit
        (a runner does that itself once the process has ended)."""
        if flow_run_id is not None and not by_runner:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(flow_run_id, Cancelled(message=cancel_message(reason)), force=True)

    with cancel.stopping_on_signals(grace=GRACE, on_overrun=record_now, exit_code=int(ExitCode.CANCELLED)):
        yield


def reason_given(signal_reason: str) -> str:
    """Why this run is being stopped: under a runner, the reason its canceller wrote on the Cancelling
    state (the runner's SIGTERM only says that it was asked); else the signal's."""
    context = FlowRunContext.get()
    if not runner_managed() or context is None or context.flow_run is None:
        return signal_reason
    try:
        with get_client(sync_client=True) as client:
            states = client.read_flow_run_states(context.flow_run.id)
    except Exception as exc:  # the rollback must go on without it
        logging.getLogger("wheelflow").warning("reading why %s was cancelled: %s", context.flow_run.id, exc)
        return signal_reason
    if not any(s.type.value == "CANCELLING" for s in states):
        return f"{signal_reason} (the runner stopped the run, e.g. a worker or serve shutting down)"
    return cancel_reason([(s.type.value, s.message) for s in states])


def cancelled_state(reason: str) -> State[Any]:
    """Mark this run Cancelling with the reason, send the alert (bounded), and the Cancelled state for the
    flow to return: Prefect then ends the run Cancelled with that message. Under a runner, only the
    Cancelled state: the runner marks the run and runs the cancellation hook (the alert, from the report
    this run wrote) once this process has ended; a second alert from here would page twice."""
    by_runner = runner_managed()
    # under a runner, the canceller's own words: they are what `status` and `trigger` show for the run
    message = reason if by_runner else cancel_message(reason)
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None and not by_runner:
        state = Cancelling(message=message)
        try:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(context.flow_run.id, state, force=True)
            alert_release_problem(context.flow, context.flow_run, state, deadline=Deadline.after(ALERT_BUDGET))
        except Exception as exc:  # the cancel itself must still be recorded
            logging.getLogger("wheelflow").warning("cancelling %s: %s", context.flow_run.id, exc)
    return Cancelled(message=message)
