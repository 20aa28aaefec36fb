"""Retry policy shared by the network-facing tasks.

Network steps retry with exponential backoff and jitter; deterministic failures (bad metadata,
compile errors, hash mismatches, refused credentials) are marked non-transient and never retry.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.tasks import exponential_backoff

from wheelflow.core.errors import WheelflowError

NETWORK_RETRIES = 4
NETWORK_BACKOFF = exponential_backoff(backoff_factor=1)  # 1, 2, 4, 8 s
NETWORK_JITTER = 0.5


def only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry unless the failure is a non-transient WheelflowError.

    A retry is announced as a WARNING log line naming the attempt and its error: Prefect's own
    AwaitingRetry state carries no message, so this line is what the UI shows of why it retried."""
    try:
        state.result()
    except WheelflowError as exc:
        retry, error = exc.transient, str(exc)
    except Exception as exc:  # unexpected errors (OSError, timeouts) are treated as infrastructure trouble
        retry, error = True, f"{type(exc).__name__}: {exc}"
    else:
        return False
    if retry:  # Prefect asks only while retries remain
        get_run_logger().warning(
            "attempt %d of %d failed, retrying: %s", task_run.run_count, task.retries + 1, " ".join(error.split())
        )
    return retry
