"""One release at a time (``held_alone``) without the 2 s stall: a free slot is taken with wheelflow's
own request, retried at once when the SQLite server answers 503 ("database is locked" while it writes
the run's task states), instead of after the back-off Prefect's client waits (2 s, or the answer's
Retry-After). The slot is still held for the block and released after it."""

from __future__ import annotations

import contextvars
import threading
import uuid

import pytest
from faultproxy import FaultProxy, Rule

from wheelflow.adapters.prefect_api import held_alone

INCREMENT = "/api/v2/concurrency_limits/increment-with-lease"


def active_slots(key: str) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(key).active_slots


@pytest.mark.case(
    "fault",
    "the Prefect server answers 503 (SQLite busy) when a release takes its free one-at-a-time slot",
    "the slot is asked for again at once, not after the client's back-off; held for the release, then released",
)
def test_a_503_on_a_free_slot_is_retried_at_once(prefect_api: str) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    key = f"wheelflow-test-lock-{uuid.uuid4().hex[:8]}"
    inside: list[int] = []
    entered, done = threading.Event(), threading.Event()

    def hold() -> None:
        with temporary_settings(updates={PREFECT_API_URL: proxy.url + "api"}):
            with held_alone(key, timeout=60):
                entered.set()
                inside.append(active_slots(key))
        done.set()

    with FaultProxy(prefect_api.removesuffix("/api")) as proxy:
        # Retry-After: a client that honours it (Prefect's) would wait an hour: the test would never see the block
        proxy.rules.append(Rule("POST", 503, "database is locked", path_prefix=INCREMENT, retry_after="3600"))
        holder = threading.Thread(target=contextvars.copy_context().run, args=(hold,), daemon=True)
        holder.start()
        assert done.wait(120), "held_alone waited out the 503's back-off instead of asking again at once"
    assert inside == [1]  # the slot was held during the block ...
    assert active_slots(key) == 0  # ... and released after it
    increments = [status for method, path, status in proxy.seen if path.startswith(INCREMENT)]
    assert increments[:2] == [503, 200]


def test_the_fast_path_still_makes_a_second_holder_wait(prefect_api: str) -> None:
    """The slot taken by wheelflow's own request is Prefect's slot: a second holder (Prefect's waiting
    path) does not get in until the first lets go."""
    key = f"wheelflow-test-lock-{uuid.uuid4().hex[:8]}"
    order: list[str] = []
    waiting, second_in = threading.Event(), threading.Event()

    def second() -> None:
        with held_alone(key, timeout=300, log=lambda message: waiting.set()):
            order.append("second in")
            second_in.set()

    with held_alone(key):
        assert active_slots(key) == 1
        waiter = threading.Thread(target=contextvars.copy_context().run, args=(second,), daemon=True)
        waiter.start()
        assert waiting.wait(120), "the second holder never said that it waits"
        assert not second_in.is_set()
        order.append("first out")
    assert second_in.wait(300)
    assert order == ["first out", "second in"]
