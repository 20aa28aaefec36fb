"""One release at a time (``held_alone``) on a real Prefect server: a second holder that merely waits
says so once, at its own level, and nothing is logged at ERROR (it used to be, on every wait: a
1-second probe acquisition timed out inside Prefect's slot service, which logs that at ERROR)."""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid

from wheelflow.adapters.prefect_api import held_alone


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_holder_that_waits_logs_no_error(prefect_api: str) -> None:
    key = f"wheelflow-test-lock-{uuid.uuid4().hex[:8]}"
    collect = _Collect()
    loggers = [logging.getLogger(), logging.getLogger("prefect")]  # Prefect's loggers do not propagate to root
    said: list[str] = []
    waiting, entered = threading.Event(), threading.Event()

    def wait_log(message: str) -> None:
        said.append(message)
        waiting.set()

    def second() -> None:
        with held_alone(key, timeout=300, log=wait_log):
            entered.set()

    for logger in loggers:
        logger.addHandler(collect)
    try:
        with held_alone(key, log=wait_log):
            assert not said  # the first holder found the slot free: nothing to say
            # The thread runs in a copy of this context: Prefect's settings (the test server's URL) live in it.
            waiter = threading.Thread(target=contextvars.copy_context().run, args=(second,))
            waiter.start()
            assert waiting.wait(120), "the second holder never said that it waits"
            assert not entered.is_set()  # it is waiting: the first still holds the slot
        waiter.join(300)
    finally:
        for logger in loggers:
            logger.removeHandler(collect)
    assert entered.is_set(), "the second holder never got the slot after the first let go"
    assert len(said) == 1 and said[0].startswith("waiting up to 300 s for flow run ") and said[0].endswith(key)
    assert [f"{r.name}: {r.getMessage()}" for r in collect.records] == []
