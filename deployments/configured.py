"""What a re-run of ``wheelflow setup`` keeps of the deployments already on the server.

Users configure nightly (its ``project``) and upstream-check (its ``packages``) on the deployment in
the Prefect UI and turn their schedules on there: registering the shipped deployments again must not
put the demo project back nor switch those schedules off. Plain functions: the adapters read the
server, ``setup`` decides with these.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from wheelflow.deployments import waiting_for_configuration

#: The schedule setup itself switches on once its configuration exists (the Variable
#: wheelflow-monitor-projects): the others are switched on by a person in the UI, and stay as they are.
SWITCHED_ON_BY_SETUP = frozenset({"sync-monitor"})


@dataclass(frozen=True)
class Registered:
    """A deployment as the server has it: its parameters, and whether its schedules are on (None: it has none)."""

    parameters: dict[str, Any]
    schedule_on: bool | None


def kept_parameters(
    shipped: Mapping[str, Any], accepted: Collection[str], registered: Registered | None
) -> dict[str, Any]:
    """The parameters to register: the shipped defaults, with every value set on the server for a
    parameter the flow still takes (a renamed one would make each run fail)."""
    if registered is None:
        return dict(shipped)
    return {**shipped, **{k: v for k, v in registered.parameters.items() if k in accepted}}


def changed_by_user(shipped: Mapping[str, Any], kept: Mapping[str, Any]) -> list[str]:
    """The parameter names whose kept value is not the shipped one (what setup says it kept)."""
    return sorted(k for k, v in kept.items() if k not in shipped or shipped[k] != v)


def schedules_off(
    registered: Mapping[str, Registered], projects_variable: Any
) -> tuple[dict[str, str], dict[str, str]]:
    """Which schedules to register switched off: (waiting for configuration, with what to set;
    switched off on the server by a person, with why it stays off). A configured nightly or
    upstream-check keeps the switch it has on the server; sync-monitor follows its Variable."""
    nightly = registered.get("nightly")
    upstream = registered.get("upstream-check")
    waiting = waiting_for_configuration(
        None,
        projects_variable,
        upstream_packages=upstream.parameters.get("packages") if upstream else None,
        nightly_project=nightly.parameters.get("project") if nightly else None,
    )
    kept_off = {
        name: "switched off on the server: kept off (turn it on in the Prefect UI)"
        for name, deployment in registered.items()
        if deployment.schedule_on is False and name not in waiting and name not in SWITCHED_ON_BY_SETUP
    }
    return waiting, kept_off
