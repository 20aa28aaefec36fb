"""Build and smoke-test matrix cells in one pool: a cell's smoke test starts as soon as it is built.

Plain scheduling, no Prefect: the caller passes functions that start a build or a smoke test and
return a future (anything with ``add_done_callback``), so tests drive it with ordinary futures.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


def overlap_builds_and_smokes(
    items: Sequence[Item],
    concurrency: int,
    *,
    build: Callable[[Item], Any],
    built: Callable[[Item, Any], Outcome],
    ok: Callable[[Outcome], bool],
    smoke: Callable[[Outcome], Any],
    smoked: Callable[[Outcome, Any], Outcome],
) -> list[Outcome]:
    """At most ``concurrency`` jobs at once. A built item's smoke test goes before any build still
    waiting, so smoke tests overlap the rest of the matrix instead of following it. Once a build has
    failed (``ok`` is false) no more smoke tests start: a matrix that failed to build is not
    released, and its outcomes are returned as built."""
    finished: queue.SimpleQueue[tuple[str, int, Any]] = queue.SimpleQueue()
    outcomes: list[Any] = [None] * len(items)
    waiting_builds = deque(range(len(items)))
    waiting_smokes: deque[int] = deque()
    running, failed = 0, False

    def started(kind: str, position: int, future: Any) -> None:
        future.add_done_callback(lambda done: finished.put((kind, position, done)))

    while waiting_builds or waiting_smokes or running:
        while running < concurrency and (waiting_smokes or waiting_builds):
            if waiting_smokes:
                position = waiting_smokes.popleft()
                started("smoke", position, smoke(outcomes[position]))
            else:
                position = waiting_builds.popleft()
                started("build", position, build(items[position]))
            running += 1
        kind, position, future = finished.get()
        running -= 1
        if kind == "build":
            outcomes[position] = built(items[position], future)
            if ok(outcomes[position]) and not failed:
                waiting_smokes.append(position)
            else:
                failed = True
                waiting_smokes.clear()
        else:
            outcomes[position] = smoked(outcomes[position], future)
    return outcomes
