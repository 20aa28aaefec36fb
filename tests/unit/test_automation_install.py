"""Installing the automations again leaves alone what did not change: the server keeps a proactive
trigger's pending windows (a run whose heartbeats stopped, a failure awaiting its alert) per trigger id,
and an update that brings a new trigger id silenced them. No server starts here: the client is a plain
object that stores automations as the server returns them (tests/e2e/test_automations.py re-installs
on a real server in the middle of a zombie)."""

from __future__ import annotations

import json
from uuid import uuid4

from prefect.automations import AutomationCore

from wheelflow.adapters.prefect_api import _actions_of, _trigger_of, sync_automation
from wheelflow.ops.automations import Windows, wheelflow_automations

BLOCK = uuid4()


class Answer:
    def __init__(self, body: object = None) -> None:
        self.body = body

    def raise_for_status(self) -> None:
        pass

    def json(self) -> object:
        return self.body


class StoringClient:
    """Keeps automations as the server does (each gets an id, and so does its trigger unless the
    update names the stored one) and records the calls that change them."""

    def __init__(self) -> None:
        self.stored: dict[str, dict] = {}
        self.calls: list[str] = []

    def answers(self) -> list[dict]:
        """What the server's POST /automations/filter answers."""
        return [json.loads(json.dumps(a)) for a in self.stored.values()]

    def named(self, name: str) -> list[dict]:
        return [a for a in self.stored.values() if a["name"] == name]

    def _store(self, automation_id: str, body: dict) -> None:
        trigger = {"id": str(uuid4()), **body["trigger"]}
        self.stored[automation_id] = {**body, "id": automation_id, "trigger": trigger}

    def create_automation(self, core: AutomationCore) -> None:
        self.calls.append("create")
        self._store(str(uuid4()), core.model_dump(mode="json"))

    def request(self, method: str, path: str, path_params: dict, json: dict) -> Answer:
        assert (method, path) == ("PUT", "/automations/{id}")
        self.calls.append("update")
        self._store(str(path_params["id"]), json)
        return Answer()

    def delete_automation(self, automation_id) -> None:
        self.calls.append("delete")
        del self.stored[str(automation_id)]


def _cores(windows: Windows) -> list[AutomationCore]:
    """What install_automations sends for each automation: a fresh trigger id every time."""
    return [
        AutomationCore(
            name=spec.name,
            description=spec.description,
            enabled=True,
            trigger=_trigger_of(spec),
            actions=_actions_of(spec, [BLOCK]),
        )
        for spec in wheelflow_automations(windows, env={})
    ]


def _install(client: StoringClient, windows: Windows) -> dict[str, str]:
    stored = client.answers()
    return {core.name: sync_automation(client, core, stored) for core in _cores(windows)}


def test_installing_the_same_automations_again_makes_no_update_call() -> None:
    client = StoringClient()
    assert set(_install(client, Windows()).values()) == {"created"}
    before = client.answers()
    client.calls.clear()

    assert set(_install(client, Windows()).values()) == {"unchanged"}
    assert client.calls == []
    assert client.answers() == before


def test_a_changed_automation_is_updated_and_keeps_its_trigger_so_pending_windows_still_fire() -> None:
    client = StoringClient()
    _install(client, Windows(zombie=100))
    (zombie,) = client.named("wheelflow-zombie-runs")
    client.calls.clear()

    done = _install(client, Windows(zombie=120))

    assert done["wheelflow-zombie-runs"] == "updated" and client.calls == ["update"]
    assert {what for name, what in done.items() if name != "wheelflow-zombie-runs"} == {"unchanged"}
    (updated,) = client.named("wheelflow-zombie-runs")
    assert updated["id"] == zombie["id"] and updated["trigger"]["id"] == zombie["trigger"]["id"]
    assert updated["trigger"]["within"] != zombie["trigger"]["within"]


def test_duplicates_of_one_name_are_deleted_and_the_first_kept() -> None:
    client = StoringClient()
    _install(client, Windows())
    (core, *_) = _cores(Windows())
    client.create_automation(core)
    client.calls.clear()

    assert sync_automation(client, core, client.answers()) == "unchanged"
    assert client.calls == ["delete"] and len(client.named(core.name)) == 1
