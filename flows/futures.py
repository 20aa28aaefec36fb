"""The end of a task run submitted to a task runner, read without raising: its value, or its failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def settled(future: Any, failure: Callable[[str | None], BaseException]) -> tuple[Any, BaseException | None]:
    """Wait for ``future``; (its value, None), or (None, the exception it raised). A run that ended
    neither completed nor raising (crashed, cancelled) fails as ``failure(its state's message)``."""
    future.wait()
    state = future.state
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        return None, outcome
    if not state.is_completed():
        return None, failure(state.message)
    return outcome, None
