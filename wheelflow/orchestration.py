"""Talking to Prefect as a CI job or an operator does: start a deployment's run, follow it, read it back.

Everything here goes through the Prefect API (``PREFECT_API_URL``, ``PREFECT_API_KEY``); Prefect is
the scheduler and the queue, wheelflow only asks it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from uuid import UUID

from .errors import SpecError, WheelflowError

#: ``wheelflow trigger --wait`` exit codes (2 is bad input, as everywhere in wheelflow).
EXIT_COMPLETED, EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT = 0, 1, 3, 4


class OrchestrationError(WheelflowError):
    transient = False


@dataclass(frozen=True)
class RunOutcome:
    flow_run_id: str
    deployment: str
    state: str  # the last state name seen
    state_type: str
    url: str | None
    timed_out: bool = False

    @property
    def exit_code(self) -> int:
        if self.timed_out:
            return EXIT_TIMEOUT
        if self.state_type == "COMPLETED":
            return EXIT_COMPLETED
        if self.state_type in ("CANCELLED", "CANCELLING", "CRASHED"):
            return EXIT_CANCELLED
        return EXIT_FAILED

    def json(self) -> dict[str, Any]:
        return {"flow_run_id": self.flow_run_id, "deployment": self.deployment, "state": self.state,
                "state_type": self.state_type, "url": self.url, "timed_out": self.timed_out,
                "exit_code": self.exit_code}


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; a VALUE that reads as JSON (numbers, true, lists, objects) is taken as JSON."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError("--param", f"{pair!r} is not KEY=VALUE", "write e.g. --param version=1.2.3")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def ui_url(flow_run_id: str) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{base}/runs/flow-run/{flow_run_id}" if base else None


def find_deployment(client: Any, name: str) -> Any:
    """``FLOW/DEPLOYMENT``, or a deployment name alone when exactly one flow has it."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.exceptions import ObjectNotFound

    if "/" in name:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise OrchestrationError(f"no deployment {name!r} on this Prefect server; fix: run `prefect deploy --all` "
                                     "or `wheelflow serve`, or check PREFECT_API_URL") from None
    found = client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])))
    if len(found) == 1:
        return found[0]
    if not found:
        raise OrchestrationError(f"no deployment named {name!r} on this Prefect server; fix: run `prefect deploy "
                                 "--all` or `wheelflow serve`, or check PREFECT_API_URL")
    raise OrchestrationError(f"{len(found)} deployments are named {name!r}; fix: name one as FLOW/{name}")


def start_run(client: Any, deployment_name: str, parameters: dict[str, Any]) -> tuple[Any, Any]:
    from prefect.exceptions import PrefectHTTPStatusError

    deployment = find_deployment(client, deployment_name)
    try:
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
    except PrefectHTTPStatusError as exc:
        detail = exc.response.json().get("detail", "") if exc.response.content else ""
        raise SpecError("--param", f"deployment {deployment_name!r} refused the parameters: {' '.join(str(detail).split())}",
                        "pass the deployment's parameters by name (see its form in the Prefect UI)") from None
    return deployment, run


def follow_run(
    client: Any,
    flow_run_id: UUID,
    *,
    timeout: float | None,
    on_state: Callable[[str, str | None], None],
    poll: float = 1.0,
) -> tuple[Any, bool]:
    """Report each new state until the run is final (paused runs are waited for); (state, timed_out)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while True:
        run = client.read_flow_run(flow_run_id)
        state = run.state
        if state is not None and (state.name, state.message) != last:
            last = (state.name, state.message)
            on_state(state.name, state.message)
        if state is not None and state.is_final():
            return state, False
        if deadline is not None and time.monotonic() >= deadline:
            return state, True
        time.sleep(poll)  # the API has no push channel for a CLI; poll it


# -- serving prefect.yaml's deployments from one process ------------------------------------------

def load_project_deployments(prefect_yaml: Path) -> list[Any]:
    """RunnerDeployments for every deployment in prefect.yaml, schedules and parameters included,
    so `wheelflow serve` and `prefect deploy --all` serve the same definitions."""
    import yaml
    from prefect.flows import load_flow_from_entrypoint

    try:
        config = yaml.safe_load(prefect_yaml.read_text())
    except FileNotFoundError:
        raise SpecError("--prefect-yaml", f"{prefect_yaml} does not exist",
                        "run from the wheelflow checkout or pass --prefect-yaml PATH") from None
    root = prefect_yaml.parent.resolve()
    deployments = []
    for entry in config.get("deployments") or []:
        path, _, func = entry["entrypoint"].partition(":")
        flow = load_flow_from_entrypoint(f"{root / path}:{func}")
        schedules = entry.get("schedules") or []
        kwargs: dict[str, Any] = {}
        crons = [s["cron"] for s in schedules if s.get("cron") and s.get("active", True)]
        intervals = [s["interval"] for s in schedules if s.get("interval") and s.get("active", True)]
        if crons:
            kwargs["cron"] = crons
        if intervals:
            kwargs["interval"] = intervals
        deployments.append(flow.to_deployment(
            name=entry["name"], parameters=entry.get("parameters") or {}, description=entry.get("description"),
            tags=entry.get("tags") or [], **kwargs))
    if not deployments:
        raise SpecError("--prefect-yaml", f"{prefect_yaml} declares no deployments", "add a deployments: section")
    return deployments
