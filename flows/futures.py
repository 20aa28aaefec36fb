"""The end of a task run submitted to a task runner, read without raising: its value, or its failure."""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prefect.transactions import Transaction


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


def all_settled(
    futures: Sequence[Any], failure: Callable[[str | None], BaseException]
) -> tuple[list[tuple[Any, BaseException | None]], BaseException | None]:
    """Wait for every one of ``futures``: their outcomes (see :func:`settled`) in submission order, and
    the failure that came first in time. That one is the cause to report: a sibling that failed after
    it may have failed because of it (a full disk, then an installer that finds nothing)."""
    index = {future.wrapped_future: n for n, future in enumerate(futures)}
    outcomes: list[tuple[Any, BaseException | None]] = [(None, None)] * len(futures)
    first: BaseException | None = None
    for done in concurrent.futures.as_completed(index):
        n = index[done]
        outcomes[n] = settled(futures[n], failure)
        if first is None and outcomes[n][1] is not None:
            first = outcomes[n][1]
    return outcomes, first


@contextlib.contextmanager
def outside_transaction() -> Iterator[None]:
    """Tasks submitted in this block run outside the enclosing transaction. Prefect rolls the enclosing
    transaction back from a task's own thread as soon as that task fails: its siblings still ran, and
    the rollback took the files they were installing from under them. The caller raises once all have
    settled (:func:`all_settled`); the rollback then runs once, with nothing running beside it."""
    token = Transaction.__var__.set(None)  # type: ignore[arg-type]
    try:
        yield
    finally:
        Transaction.__var__.reset(token)
