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

#: ``wheelflow trigger --wait`` exit codes (2 is bad input, as everywhere in wheelflow).
EXIT_COMPLETED, EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT = (
    ExitCode.OK,
    ExitCode.FAILED,
    ExitCode.CANCELLED,
    ExitCode.TIMED_OUT,
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
        return EXIT_FAILED

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
