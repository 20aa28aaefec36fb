"""Retry policy shared by the network-facing tasks.

Network steps retry with exponential backoff and jitter; deterministic failures (bad metadata,
compile errors, hash mismatches, refused credentials) are marked non-transient and never retry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger
from prefect.tasks import exponential_backoff

from wheelflow.core import cancel
from wheelflow.core.errors import WheelflowError, retries_exhausted

NETWORK_RETRIES = 4
NETWORK_BACKOFF = exponential_backoff(backoff_factor=1)  # 1, 2, 4, 8 s
NETWORK_JITTER = 0.5


def only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry unless the failure is a non-transient WheelflowError.

    A retry is announced as a WARNING log line naming the attempt and its error: Prefect's own
    AwaitingRetry state carries no message, so this line is what the UI shows of why it retried.
    Nothing is retried once the run is asked to stop (SIGTERM, SIGINT)."""
    if cancel.requested():
        return False
    try:
        state.result()
    except Exception as exc:  # unexpected errors (OSError, timeouts) are treated as infrastructure trouble
        retry = is_transient(exc)
        error = str(exc) if isinstance(exc, WheelflowError) else f"{type(exc).__name__}: {exc}"
    else:
        return False
    if retry:  # Prefect asks only while retries remain
        get_run_logger().warning(
            "attempt %d of %d failed, retrying: %s", task_run.run_count, task.retries + 1, " ".join(error.split())
        )
    return retry


def gives_up(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a retried task's function: when its last attempt fails the transient way (the way
    :func:`only_transient` retries), raise :func:`retries_exhausted`'s error instead, saying "gave up
    after N attempts: LAST ERROR; fix: ..." rather than the retry advice of the last error."""

    @functools.wraps(fn)
    def attempt(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if is_transient(exc):
                count, allowed = attempt_numbers()
                if allowed > 1 and count >= allowed:
                    raise retries_exhausted(exc, count) from exc
            raise

    return attempt


def is_transient(exc: BaseException) -> bool:
    """What :func:`only_transient` retries: a transient WheelflowError, or any unexpected error."""
    return exc.transient if isinstance(exc, WheelflowError) else True


def attempt_numbers() -> tuple[int, int]:
    """(this attempt's number, attempts allowed) of the running task; (1, 1) outside a task run."""
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    if ctx is None:
        return 1, 1
    return ctx.task_run.run_count, ctx.task.retries + 1
