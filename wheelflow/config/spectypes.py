"""Building blocks of the spec's pydantic models, and the adapter to one-line spec errors.

The spec is a TOML table read by people: every model forbids unknown keys (with a did-you-mean),
names its keys in kebab-case exactly as they are written, and refuses values a TOML writer would
not mean (``true`` for a number, ``3`` for a string) instead of coercing them. A value that is not
what its key holds becomes one :class:`~wheelflow.core.errors.SpecError` line: key, problem, fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from wheelflow.config.bounds import MAX_ENV_VALUE, too_long
from wheelflow.core.errors import SpecError
from wheelflow.core.sizes import parse_size

SPEC_ERROR = "spec"  # the pydantic error type carrying a message written for the spec's reader


def problem(text: str, fix: str | None = None, *, key: str | tuple[str, ...] = ()) -> PydanticCustomError:
    """A validation error with our own wording; ``key`` names a sub-key of where it is raised."""
    return PydanticCustomError(SPEC_ERROR, "{problem}", {"problem": text, "fix": fix, "key": _path(key)})


def _path(key: str | tuple[str, ...]) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else tuple(key)


def kebab(name: str) -> str:
    """A field's key in the spec: approval_timeout -> approval-timeout."""
    return name.replace("_", "-")


class SpecModel(BaseModel):
    """A table of the spec: frozen, kebab-case keys, unknown keys refused with a suggestion."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=kebab,
        validate_by_alias=True,
        validate_by_name=False,
        field_title_generator=lambda name, info: kebab(name),
    )

    @classmethod
    def check_keys(cls, table: dict[str, Any]) -> None:
        """Refusals that come before the unknown-key check (a table may override it)."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, table: Any) -> Any:
        if not isinstance(table, dict):
            return table  # the model's own type error says "is not a table"
        cls.check_keys(table)
        known = sorted(field.alias or name for name, field in cls.model_fields.items())
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                raise problem(
                    "unknown key",
                    f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}",
                    key=str(key),
                )
        return table


@dataclass(frozen=True)
class Expect:
    """What a key holds: any value that is not that becomes "VALUE is not WHAT; fix: FIX".

    Errors already worded for the reader (raised deeper, e.g. by an element's own ``OneOf``) pass
    through unchanged, with their position inside the value kept.
    """

    what: str
    fix: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(self._validate, handler(source))

    def _validate(self, value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == SPEC_ERROR:
                inner = tuple(str(p) for p in first["loc"] if not isinstance(p, int))
                raise problem(first["ctx"]["problem"], first["ctx"]["fix"], key=inner + first["ctx"]["key"]) from None
            raise problem(f"{value!r} is not {self.what}", self.fix) from None


@dataclass(frozen=True)
class OneOf:
    """A ``Literal`` whose refusal names the value and lists the choices: "unknown NOUN 'x'; fix: use ..."."""

    noun: str
    choices: tuple[str, ...]
    fix: str | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self._validate, handler(source))

    def _validate(self, value: Any) -> Any:
        if value not in self.choices:
            raise problem(
                f"unknown {self.noun} {value!r}", self.fix or "use " + ", ".join(f'"{c}"' for c in self.choices)
            )
        return value


def _to_bytes(value: Any) -> int:
    try:
        size = parse_size(value)
    except (ValueError, TypeError):
        size = 0
    if size <= 0:
        raise problem(f"{value!r} is not a size", 'write bytes or e.g. "100MB", "10GiB"')
    return size


class _Bytes:
    """Bytes from 104857600, "100MB" or "100 MiB" (wheelflow.core.sizes.parse_size)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_to_bytes)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        return {
            "anyOf": [
                {"type": "integer", "exclusiveMinimum": 0},
                {
                    "type": "string",
                    "pattern": r"^\s*\d+(\.\d+)?\s*([KMGTkmgt][Ii]?[Bb]?|[Bb])?\s*$",
                    "examples": ["100MB", "10GiB"],
                },
            ]
        }


ByteSize = Annotated[int, _Bytes]


Text = StrictStr


def _text_values(table: Any) -> Any:
    if not isinstance(table, dict):
        raise problem(f"{table!r} is not a table", 'write env = { NAME = "value" }')
    for key, value in table.items():
        if not isinstance(value, str):
            raise problem(f"{value!r} is not a string", f'quote it: {key} = "{value}"', key=str(key))
        if reason := too_long(value, MAX_ENV_VALUE):
            raise problem(
                reason, "keep an environment value short (pass a file's path instead of its content)", key=str(key)
            )
    return table


EnvTable = Annotated[dict[str, str], BeforeValidator(_text_values)]
"""Environment variables: every value a string, written quoted."""


def spec_error(exc: ValidationError, prefix: str) -> SpecError:
    """The first of pydantic's errors as today's one line: ``spec error: KEY: problem; fix: ...``."""
    error = exc.errors()[0]
    ctx = error.get("ctx") or {}
    loc = [str(p) for p in error["loc"] if not isinstance(p, int)]  # list positions are not keys
    value = error.get("input")
    if error["type"] == SPEC_ERROR:
        return SpecError(_join(prefix, loc + list(ctx["key"])), ctx["problem"], ctx["fix"])
    problem_text, fix = generic_wording(error["type"], value, loc[-1] if loc else prefix)
    return SpecError(_join(prefix, loc), problem_text, fix)


_KINDS = {
    "string_type": "a string",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "list_type": "a list",
    "tuple_type": "a list",
    "bool_type": "true or false",
    "int_type": "an integer",
    "float_type": "a number",
}


def generic_wording(kind: str, value: Any, key: str) -> tuple[str, str | None]:
    """Wording for pydantic's own error types, where no field gave its own."""
    if kind == "missing":
        return "missing", f"set {key}"
    if kind == "extra_forbidden":
        return "unknown key", None
    if kind in _KINDS:
        expected = _KINDS[kind]
        if kind == "bool_type":
            return f"{value!r} is not true or false", f"write {key} = true or false"
        return f"{value!r} is not {expected}", f"write it as {expected}"
    return f"{value!r} is not valid", None


def _join(prefix: str, loc: Iterable[str]) -> str:
    return ".".join([prefix, *loc]) if prefix else ".".join(loc)
