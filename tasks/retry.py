"""Retry policy shared by the network-facing tasks.

Network steps retry with exponential backoff and jitter; deterministic failures (bad metadata,
compile errors, hash mismatches, refused credentials) are marked non-transient and never retry.
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from wheelflow.errors import WheelflowError

NETWORK_RETRIES = 4
NETWORK_BACKOFF = exponential_backoff(backoff_factor=1)  # 1, 2, 4, 8 s
NETWORK_JITTER = 0.5


def only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry unless the failure is a non-transient WheelflowError."""
    try:
        state.result()
    except WheelflowError as exc:
        return exc.transient
    except Exception:
        return True  # unexpected errors (OSError, timeouts) are treated as infrastructure trouble
    return False
