"""How wheelflow's API calls meet a busy Prefect server. No server starts here: each call is a plain
function that answers as the server would (tests/e2e start real servers)."""

from __future__ import annotations

import httpx
import pytest
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

from wheelflow.adapters.prefect_api import without_waiting


def refused(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("PATCH", "http://127.0.0.1:4200/api/variables/name/x")
    response = httpx.Response(status, request=request, json={"exception_message": "Service Unavailable"})
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


def test_a_write_refused_by_a_locked_database_is_retried_at_once_instead_of_after_the_clients_pause() -> None:
    retries_allowed: list[int] = []

    def write() -> str:
        retries_allowed.append(PREFECT_CLIENT_MAX_RETRIES.value())
        if len(retries_allowed) < 3:
            raise refused(503)  # SQLite's "database is locked", as a Prefect server answers it
        return "written"

    assert without_waiting(write) == "written"
    # Prefect's client (which would pause 2 s before its first retry) did not retry: wheelflow did.
    assert retries_allowed == [0, 0, 0]


def test_a_refusal_that_is_not_transient_reaches_the_caller_at_once() -> None:
    calls = []

    def write() -> None:
        calls.append(1)
        raise refused(422)

    with pytest.raises(httpx.HTTPStatusError):
        without_waiting(write)
    assert len(calls) == 1


def test_past_its_window_the_call_gets_the_clients_own_retries_which_outlive_a_server_restart() -> None:
    retries_allowed: list[int] = []

    def write() -> str:
        retries_allowed.append(PREFECT_CLIENT_MAX_RETRIES.value())
        if retries_allowed[-1] == 0:
            raise refused(503)
        return "written"

    assert without_waiting(write, within=0.05) == "written"
    assert retries_allowed[-1] == PREFECT_CLIENT_MAX_RETRIES.value() > 0
    assert set(retries_allowed[:-1]) == {0}


def test_a_server_that_does_not_answer_is_left_to_the_clients_own_backoff() -> None:
    retries_allowed: list[int] = []

    def write() -> str:
        retries_allowed.append(PREFECT_CLIENT_MAX_RETRIES.value())
        if retries_allowed[-1] == 0:
            raise httpx.ConnectError("connection refused")
        return "written"

    assert without_waiting(write) == "written"
    assert retries_allowed == [0, PREFECT_CLIENT_MAX_RETRIES.value()]
