"""The build matrix: named axes, include/exclude rows and per-cell templates, expanded into cells.

```toml
[tool.wheelflow.matrix]
axes = { python = ["3.11", "3.13"], cuda = ["13.0"] }
exclude = [{ python = "3.13", cuda = "12.4" }]
include = [{ python = "3.12", cuda = "13.0" }]
image = "wheelflow/builder:py{python}"
runtime-image = "wheelflow/runtime:py{python}"
env = { TORCH_CUDA_ARCH_LIST = "9.0" }
build-requires = ["torch=={torch}"]
local-version = "cu{cuda_nodot}"
gpu = false
timeout = 3600
concurrency = 4
```

Templates see every axis as ``{axis}`` and ``{axis_nodot}`` (dots removed: 13.0 -> 130).
Expansion is deterministic: the product of the axes in declared order, minus excluded rows,
then the included rows in their order.
"""

from __future__ import annotations

import itertools
import re
import string
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import SpecError

_PREFIX = {"python": "py", "cuda": "cu", "torch": "torch"}
_AXIS_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_LOCAL_RE = re.compile(r"^[a-z0-9]+(\.[a-z0-9]+)*$", re.IGNORECASE)
MATRIX_KEYS = {"axes", "include", "exclude", "image", "runtime-image", "env", "build-requires", "local-version",
               "gpu", "timeout", "concurrency"}


@dataclass(frozen=True)
class Cell:
    name: str  # e.g. "py3.11-cu13.0": task runs are named build[<name>]
    values: Mapping[str, str]
    image: str | None = None
    runtime_image: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    build_requires: tuple[str, ...] = ()
    local_version: str | None = None  # without the "+"
    gpu: bool = False
    timeout: float = 3600.0


@dataclass(frozen=True)
class Matrix:
    axes: Mapping[str, tuple[str, ...]]
    cells: tuple[Cell, ...]
    concurrency: int = 2


def cell_name(values: Mapping[str, str]) -> str:
    return "-".join(f"{_PREFIX.get(axis, axis)}{value}" for axis, value in values.items())


class _Template:
    """Renders "{axis}" templates; an unknown name is a SpecError naming the key."""

    def __init__(self, key: str, axes: list[str]) -> None:
        self.key = key
        self.allowed = set(axes) | {f"{a}_nodot" for a in axes}
        self.axes = axes

    def check(self, text: str) -> None:
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        except ValueError as exc:
            raise SpecError(self.key, f"{text!r} is not a valid template ({exc})", "use {axis} placeholders") from None
        for name in names:
            if name not in self.allowed:
                raise SpecError(self.key, f"template {text!r} names unknown axis {name!r}",
                                f"use one of {', '.join(self.axes)} (or AXIS_nodot)")

    @staticmethod
    def render(text: str, values: Mapping[str, str]) -> str:
        scope = dict(values) | {f"{a}_nodot": v.replace(".", "") for a, v in values.items()}
        return text.format_map(scope)


def parse_matrix(table: Any, prefix: str = "tool.wheelflow.matrix") -> Matrix:
    if not isinstance(table, dict):
        raise SpecError(prefix, f"{table!r} is not a table", "write [tool.wheelflow.matrix]")
    for key in table:
        if key not in MATRIX_KEYS:
            import difflib

            close = difflib.get_close_matches(key, sorted(MATRIX_KEYS), n=1)
            raise SpecError(f"{prefix}.{key}", "unknown key", f"did you mean {close[0]!r}?" if close else
                            f"known keys: {', '.join(sorted(MATRIX_KEYS))}")
    axes_table = table.get("axes", {})
    if not isinstance(axes_table, dict) or not axes_table:
        raise SpecError(f"{prefix}.axes", "the matrix has no axes", 'write axes = { python = ["3.11", "3.13"] }')
    axes: dict[str, tuple[str, ...]] = {}
    for axis, values in axes_table.items():
        if not _AXIS_RE.match(axis):
            raise SpecError(f"{prefix}.axes.{axis}", "is not a usable axis name", "use lowercase letters, digits and _")
        if not isinstance(values, list) or not values:
            raise SpecError(f"{prefix}.axes.{axis}", f"{values!r} is not a non-empty list", f'write {axis} = ["..."]')
        axes[axis] = tuple(str(v) for v in values)
        if len(set(axes[axis])) != len(axes[axis]):
            raise SpecError(f"{prefix}.axes.{axis}", f"{values!r} repeats a value", "list each value once")
    names = list(axes)

    def rows(key: str) -> list[dict[str, str]]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise SpecError(f"{prefix}.{key}", f"{value!r} is not a list of tables", f"write {key} = [{{ axis = \"value\" }}]")
        for row in value:
            for axis in row:
                if axis not in axes:
                    raise SpecError(f"{prefix}.{key}", f"row {row!r} names unknown axis {axis!r}", f"use one of {', '.join(names)}")
        return [{k: str(v) for k, v in row.items()} for row in value]

    exclude, include = rows("exclude"), rows("include")
    for row in include:
        if set(row) != set(axes):
            missing = ", ".join(a for a in names if a not in row)
            raise SpecError(f"{prefix}.include", f"row {row!r} lacks {missing}", "give every axis a value in an included row")

    templates: dict[str, Any] = {}
    for key in ("image", "runtime-image", "local-version"):
        if key in table:
            if not isinstance(table[key], str):
                raise SpecError(f"{prefix}.{key}", f"{table[key]!r} is not a string", "write it as a template string")
            _Template(f"{prefix}.{key}", names).check(table[key])
            templates[key] = table[key]
    env = table.get("env", {})
    if not isinstance(env, dict):
        raise SpecError(f"{prefix}.env", f"{env!r} is not a table", 'write env = { NAME = "value" }')
    for key, value in env.items():
        if not isinstance(value, str):
            raise SpecError(f"{prefix}.env.{key}", f"{value!r} is not a string", f'quote it: {key} = "{value}"')
        _Template(f"{prefix}.env.{key}", names).check(value)
    build_requires = table.get("build-requires", [])
    if not isinstance(build_requires, list) or not all(isinstance(r, str) for r in build_requires):
        raise SpecError(f"{prefix}.build-requires", f"{build_requires!r} is not a list of strings",
                        'write build-requires = ["torch=={torch}"]')
    for requirement in build_requires:
        _Template(f"{prefix}.build-requires", names).check(requirement)
    gpu = table.get("gpu", False)
    if not isinstance(gpu, bool):
        raise SpecError(f"{prefix}.gpu", f"{gpu!r} is not true or false", "write gpu = true or gpu = false")
    timeout = table.get("timeout", 3600)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise SpecError(f"{prefix}.timeout", f"{timeout!r} is not a positive number of seconds", "write e.g. timeout = 3600")
    concurrency = table.get("concurrency", 2)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise SpecError(f"{prefix}.concurrency", f"{concurrency!r} is not a positive integer", "write e.g. concurrency = 4")

    combos = [dict(zip(names, combo)) for combo in itertools.product(*axes.values())]
    combos = [c for c in combos if not any(all(c[a] == v for a, v in row.items()) for row in exclude)]
    for row in include:
        ordered = {a: row[a] for a in names}
        if ordered not in combos:
            combos.append(ordered)
    if not combos:
        raise SpecError(prefix, "the matrix is empty (every cell is excluded)", "remove an exclude row or add an include row")

    cells = []
    for values in combos:
        local = _Template.render(templates["local-version"], values) if "local-version" in templates else None
        if local is not None and not _LOCAL_RE.match(local):
            raise SpecError(f"{prefix}.local-version", f"renders to {local!r} for {cell_name(values)}, not a PEP 440 local label",
                            "use letters, digits and dots, e.g. cu{cuda_nodot}")
        cells.append(Cell(
            name=cell_name(values),
            values=values,
            image=_Template.render(templates["image"], values) if "image" in templates else None,
            runtime_image=_Template.render(templates["runtime-image"], values) if "runtime-image" in templates else None,
            env={k: _Template.render(v, values) for k, v in env.items()},
            build_requires=tuple(_Template.render(r, values) for r in build_requires),
            local_version=local,
            gpu=gpu,
            timeout=float(timeout),
        ))
    names_seen = [c.name for c in cells]
    if len(set(names_seen)) != len(names_seen):
        raise SpecError(prefix, "two cells have the same name", "give each axis distinct values")
    return Matrix(axes=axes, cells=tuple(cells), concurrency=concurrency)
