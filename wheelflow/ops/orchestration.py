"""What a deployment run ended as, for a CI job: the outcome and its exit code.

Starting and following runs goes through the Prefect API (:mod:`wheelflow.adapters.prefect_api`); Prefect is
the scheduler and the queue, wheelflow only asks it.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from wheelflow.core.errors import ExitCode, SpecError

#: ``wheelflow trigger --wait`` and ``status`` exit codes (2 is bad input, as everywhere in wheelflow).
EXIT_COMPLETED, EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT, EXIT_RUNNING = (
    ExitCode.OK,
    ExitCode.FAILED,
    ExitCode.CANCELLED,
    ExitCode.TIMED_OUT,
    ExitCode.RUNNING,
)


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
        if self.state_type == "FAILED":
            return EXIT_FAILED
        return EXIT_RUNNING  # SCHEDULED, PENDING, RUNNING, PAUSED: not finished, not a verdict yet

    def json(self) -> dict[str, Any]:
        return {
            "flow_run_id": self.flow_run_id,
            "deployment": self.deployment,
            "state": self.state,
            "state_type": self.state_type,
            "url": self.url,
            "timed_out": self.timed_out,
            "exit_code": self.exit_code,
        }


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A deployment's parameter schema that refuses unknown names (the server then answers 409 to a
    misspelt parameter instead of starting a run that crashes on it)."""
    return {**schema, "additionalProperties": False}


def coerce_parameters(schema: dict[str, Any], pairs: list[tuple[str, str]], deployment: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs typed by the deployment's parameter schema: strings stay strings (``1.0``
    is a version, not a number), a list parameter takes plain values (repeat the key for more) or a
    JSON list, booleans and numbers are parsed; an unknown name is refused with a did-you-mean."""
    properties: dict[str, Any] = schema.get("properties", {})
    params: dict[str, Any] = {}
    for key, value in pairs:
        if key not in properties:
            close = difflib.get_close_matches(key, list(properties), n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"known parameters: {', '.join(properties)}"
            raise SpecError(f"--param {key}", f"deployment {deployment!r} has no parameter {key!r}", fix)
        kinds = _types(properties[key], schema.get("definitions", {}))
        typed = _coerce(value, kinds, f"--param {key}")
        if "array" in kinds and not value.startswith("[") and key in params:
            params[key] = [*params[key], *typed]  # repeated: one more item
        else:
            params[key] = typed
    return params


def _types(prop: dict[str, Any], definitions: dict[str, Any]) -> set[str]:
    """The JSON types a property accepts (null left out); ``$ref`` and ``enum`` read as object and string."""
    alternatives = prop.get("anyOf") or prop.get("oneOf") or prop.get("allOf") or [prop]
    kinds: set[str] = set()
    for alternative in alternatives:
        if "$ref" in alternative:
            kinds.add("object")
        elif "enum" in alternative or "const" in alternative:
            kinds.add("string")
        elif isinstance(alternative.get("type"), list):
            kinds.update(alternative["type"])
        elif "type" in alternative:
            kinds.add(alternative["type"])
    return kinds - {"null"} or {"string"}


def _coerce(value: str, kinds: set[str], key: str) -> Any:
    if "string" in kinds:
        return value
    if "boolean" in kinds:
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise SpecError(key, f"{value!r} is not true or false", f"write {key.split()[-1]}=true or =false")
    if "integer" in kinds or "number" in kinds:
        try:
            return int(value) if "integer" in kinds else float(value)
        except ValueError:
            raise SpecError(key, f"{value!r} is not a number", f"write e.g. {key.split()[-1]}=3") from None
    if "array" in kinds:
        if not value.startswith("["):
            return [value]
        loaded = _json(value, key)
        if not isinstance(loaded, list):
            raise SpecError(key, f"{value!r} is not a list", f"write {key.split()[-1]}=A (repeatable) or a JSON list")
        return loaded
    loaded = _json(value, key)
    if "object" in kinds and not isinstance(loaded, dict):
        raise SpecError(key, f"{value!r} is not a JSON object", f'write {key.split()[-1]}=\'{{"k": "v"}}\'')
    return loaded


def _json(value: str, key: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise SpecError(key, f"{value!r} is not valid JSON ({exc.msg})", "quote the value as JSON") from None


def deployment_not_found(name: str, known: list[str]) -> SpecError:
    """The error for a deployment name the server does not have: exit 2 (nothing was started), with
    a did-you-mean among ``known`` (``FLOW/DEPLOYMENT`` names), matched whole or by deployment name."""
    short = {k.split("/", 1)[-1]: k for k in known}
    close = difflib.get_close_matches(name, known, n=1) or [
        short[m] for m in difflib.get_close_matches(name.split("/", 1)[-1], list(short), n=1)
    ]
    if close:
        suggestion = close[0] if "/" in name else close[0].split("/", 1)[-1]
        fix = f"did you mean {suggestion!r}?"
    elif known:
        fix = f"use one of: {', '.join(sorted(known))}"
    else:
        fix = "this server has no deployments: run `wheelflow setup` (or `wheelflow serve`), or check PREFECT_API_URL"
    return SpecError("DEPLOYMENT", f"no deployment {name!r} on this Prefect server", fix)


# What Prefect logs around the real error of a flow that could not load: never the reason itself.
_ENGINE_WRAPPERS = ("Unexpected exception encountered when trying to load flow", "Engine execution exited")


#: What Prefect itself writes on a cancel (its runner's final Cancelled state, its engine, a cancel that
#: gave none): they say nothing about why, so the reason is looked for in an earlier state.
PREFECT_CANCEL_MESSAGES = frozenset(
    {"", "Flow run was cancelled.", "Flow run was cancelled successfully.", "Cancelling flow run"}
)
NO_CANCEL_REASON = "cancelled through the Prefect API or UI (no reason given)"


def cancel_reason(states: list[tuple[str, str | None]]) -> str:
    """Why a run was cancelled, from its states oldest first (type, message): the message of the last
    Cancelling or Cancelled state that says more than Prefect's own words. A runner ends every run it
    cancels with "Flow run was cancelled successfully.", which hides the reason the canceller gave
    (``trigger``'s "cancelled by wheelflow trigger (SIGTERM)", a UI user's, ``wheelflow release``'s)."""
    for state_type, message in reversed(states):
        if (
            state_type in ("CANCELLING", "CANCELLED")
            and " ".join((message or "").split()) not in PREFECT_CANCEL_MESSAGES
        ):
            return " ".join(str(message).split())
    return NO_CANCEL_REASON


def run_reason(
    state_name: str | None,
    message: str | None,
    tasks: list[dict[str, Any]],
    failed_checks: list[dict[str, Any]],
    error_logs: list[str] | None = None,
) -> str | None:
    """Why a flow run ended as it did, in one line: the failed release check, else the failed task
    and its last error, else, for a run that ended before its first task (a pull step that could not
    clone, a missing block), the first error it logged, else the run's own state message."""
    if state_name in (None, "Completed"):
        return None
    if state_name == "Cancelled" and message:
        # the cancel's reason (see cancel_reason), not the crash of the task the cancel interrupted
        return " ".join(message.split())
    for check in failed_checks:
        return f"{check['check']}: {' '.join(str(check['detail']).split())}"
    for task in tasks:
        if task.get("state") in ("Failed", "Crashed", "TimedOut"):
            errors = [h.get("message") for h in task.get("history", []) if h.get("message")]
            return f"{task['name']}: {task['state']}" + (f": {' '.join(errors[-1].split())}" if errors else "")
    logged = [line for line in error_logs or [] if not line.startswith(_ENGINE_WRAPPERS)]
    if not tasks and logged and state_name in ("Crashed", "Failed"):
        prefix, first = f"{state_name.lower()} before its first task: ", " ".join(logged[0].split())
        return first if first.startswith(prefix) else prefix + first  # wheelflow's pull step says it already
    return " ".join(message.split()) if message else None


def run_status(
    run_id: str,
    name: str,
    state_name: str | None,
    state_type: str | None,
    message: str | None,
    tasks: list[dict[str, Any]],
    failed_checks: list[dict[str, Any]] | None = None,
    url: str | None = None,
    error_logs: list[str] | None = None,
) -> dict[str, Any]:
    """``wheelflow status --json``: the flow run's own state, message and reason beside its tasks, and
    the exit code the command ends with (so that a run that failed before its first task still says why)."""
    outcome = RunOutcome(run_id, "", state_name or "Unknown", state_type or "UNKNOWN", url)
    return {
        "flow_run_id": run_id,
        "name": name,
        "state": outcome.state,
        "state_type": outcome.state_type,
        "final": outcome.exit_code != EXIT_RUNNING,
        "message": " ".join(message.split()) if message else None,
        "reason": run_reason(state_name, message, tasks, failed_checks or [], error_logs),
        "url": url,
        "exit_code": int(outcome.exit_code),
        "failed_checks": failed_checks or [],
        "tasks": tasks,
    }
