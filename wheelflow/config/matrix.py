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
gpu-archs = "8.0;9.0+PTX"                 # or ["sm_80", "sm_90", "compute_90"]: the ABI gate checks them
gpu-archs-policy = "exact"                # undeclared SASS refused (default "at-least": a warning)
gpu = false
timeout = 3600
concurrency = 4

[[tool.wheelflow.matrix.rules]]          # torch 2.6 wheels exist only for CUDA >= 12.6
when = { torch = ">=2.6" }
require = { cuda = ">=12.6" }
```

Templates see every axis as ``{axis}`` and ``{axis_nodot}`` (dots removed: 13.0 -> 130).
Expansion is deterministic: the product of the axes in declared order, minus excluded rows and
cells a rule rules out, then the included rows in their order (an included row may not break a rule).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal

from annotated_types import Gt, Le, MinLen
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from wheelflow.config.bounds import MAX_ENV_VALUE, TemplateRefused, quoted, template_fields, too_long
from wheelflow.config.gpuarch import ARCH_POLICIES, DEFAULT_ARCH_POLICY, parse_archs
from wheelflow.config.spectypes import EnvTable, Expect, OneOf, SpecModel, Text, problem, spec_error
from wheelflow.core.deadline import MAX_SECONDS
from wheelflow.core.errors import SpecError

if TYPE_CHECKING:
    pass

_PREFIX = {"python": "py", "cuda": "cu", "torch": "torch"}
_AXIS_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_LOCAL_RE = re.compile(r"^[a-z0-9]+(\.[a-z0-9]+)*$", re.IGNORECASE)
DEFAULT_TIMEOUT = 3600.0  # seconds a cell's build (and its smoke test) may take
DEFAULT_CONCURRENCY = 2  # cells built at once
DEFAULT_MAX_CELLS = 256  # a matrix larger than this is more likely a typo than a release


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
    timeout: float = DEFAULT_TIMEOUT
    gpu_archs: str | tuple[str, ...] | None = None  # declared device code, rendered: the ABI gate's reference
    gpu_archs_policy: str = DEFAULT_ARCH_POLICY  # "exact": SASS for undeclared architectures is refused


@dataclass(frozen=True)
class Matrix:
    axes: Mapping[str, tuple[str, ...]]
    cells: tuple[Cell, ...]
    concurrency: int = DEFAULT_CONCURRENCY


def cell_name(values: Mapping[str, str]) -> str:
    return "-".join(f"{_PREFIX.get(axis, axis)}{value}" for axis, value in values.items())


def _scalar_text(value: Any) -> Any:
    """TOML writes 3.11 or 80 unquoted as often as quoted: an axis value is its text either way."""
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


AxisValue = Annotated[str, BeforeValidator(_scalar_text), WithJsonSchema({"type": ["string", "number"]})]
Row = dict[str, AxisValue]
Template = Annotated[str, Expect("a string", "write it as a template string")]
GpuArchs = Annotated[
    str | tuple[str, ...],
    Expect(
        "a list of architectures or a TORCH_CUDA_ARCH_LIST string",
        'write e.g. gpu-archs = ["sm_80", "sm_90"] or "8.0;9.0+PTX"',
    ),
]

ArchPolicy = Annotated[
    Literal["at-least", "exact"],
    OneOf("gpu-archs-policy", ARCH_POLICIES, 'use "at-least" (the default: a warning) or "exact" (a refusal)'),
]


def _specifiers(text: str) -> str:
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        raise problem(f"{text!r} is not a PEP 440 version specifier", 'write e.g. ">=2.6" or ">=12.6,<13"') from None
    return text


Specifiers = Annotated[Text, AfterValidator(_specifiers)]


When = Annotated[
    dict[str, Specifiers], MinLen(1), Expect("a table of axis = specifiers", 'write e.g. when = { torch = ">=2.6" }')
]
Require = Annotated[
    dict[str, Specifiers], MinLen(1), Expect("a table of axis = specifiers", 'write e.g. require = { cuda = ">=12.6" }')
]
CellTimeout = Annotated[
    StrictFloat,
    Gt(0),
    Le(MAX_SECONDS),
    AllowInfNan(False),
    Expect("a finite positive number of seconds, at most a year", "write e.g. timeout = 3600"),
]
Concurrency = Annotated[StrictInt, Gt(0), Expect("a positive integer", "write e.g. concurrency = 4")]
MaxCells = Annotated[StrictInt, Gt(0), Expect("a positive integer", "write e.g. max-cells = 512")]


class Rule(SpecModel):
    """``[[tool.wheelflow.matrix.rules]]``: cells whose values match ``when`` must also match ``require``.

    A rule states a compatibility fact once (torch 2.6 needs CUDA 12.6; Python 3.13 arrives with
    torch 2.5) instead of an exclude row per combination it forbids.
    """

    when: When = Field(
        description='Axis -> PEP 440 specifiers that select the cells the rule is about, e.g. { torch = ">=2.6" }.'
    )
    require: Require = Field(
        description='Axis -> PEP 440 specifiers those cells must satisfy, e.g. { cuda = ">=12.6" }.'
    )
    reason: Text | None = Field(None, description="Why, shown when the rule drops a cell.")

    def allows(self, values: Mapping[str, str]) -> bool:
        def matches(conditions: Mapping[str, str]) -> bool:
            return all(
                SpecifierSet(spec).contains(Version(values[axis]), prereleases=True)
                for axis, spec in conditions.items()
            )

        return not matches(self.when) or matches(self.require)

    def describe(self) -> str:
        def said(conditions: Mapping[str, str]) -> str:
            return ", ".join(f"{axis}{spec}" for axis, spec in conditions.items())

        return f"{said(self.when)} requires {said(self.require)}" + (f" ({self.reason})" if self.reason else "")


class MatrixTable(SpecModel):
    """``[tool.wheelflow.matrix]``: named axes whose product (minus exclude, plus include) is the cells."""

    axes: dict[str, tuple[AxisValue, ...]] = Field(
        description="Axis name -> its values, in order; cells are their product (e.g. python, cuda, torch).",
        examples=[{"python": ["3.11", "3.13"], "cuda": ["13.0"]}],
    )
    include: Annotated[tuple[Row, ...], Expect("a list of tables", 'write include = [{ axis = "value" }]')] = Field(
        (), description="Rows added after the product; each names every axis."
    )
    exclude: Annotated[tuple[Row, ...], Expect("a list of tables", 'write exclude = [{ axis = "value" }]')] = Field(
        (), description="Rows dropped from the product; a row matches every cell with its values."
    )
    image: Template | None = Field(None, description="Build image template, e.g. wheelflow/builder:py{python}.")
    runtime_image: Template | None = Field(
        None, description="Image the wheel is installed and smoke-tested in (no compilers), a template."
    )
    env: EnvTable = Field(default_factory=dict, description="Build environment per cell; values are templates.")
    build_requires: Annotated[
        tuple[str, ...], Expect("a list of strings", 'write build-requires = ["torch=={torch}"]')
    ] = Field((), description="Pins given to the build as PIP_CONSTRAINT; templates.")
    local_version: Template | None = Field(
        None,
        description="PEP 440 local label of the cell's wheel (without '+'), e.g. cu{cuda_nodot}; "
        "where it renders empty the cell builds the plain wheel.",
    )
    gpu: StrictBool = Field(False, description="Smoke tests need a GPU (skipped, and said so, without one).")
    gpu_archs: GpuArchs | None = Field(
        None,
        description="GPU architectures every shared object of the cell's wheel must carry device code for, "
        'checked before upload: ["sm_80", "compute_90"] or "8.0;9.0+PTX"; templates. Default: the '
        "cell's TORCH_CUDA_ARCH_LIST, else not checked.",
    )
    gpu_archs_policy: ArchPolicy = Field(
        DEFAULT_ARCH_POLICY,
        description="What the ABI gate does with SASS for architectures the cell does not declare (gpu-archs, "
        'else TORCH_CUDA_ARCH_LIST), as a hard-coded -gencode list in setup.py leaves it: "at-least" warns, '
        'naming the likely cause and the compile time it costs; "exact" refuses the wheel.',
    )
    timeout: CellTimeout = Field(
        DEFAULT_TIMEOUT, description="Seconds per cell; the container is stopped and removed after."
    )
    concurrency: Concurrency = Field(DEFAULT_CONCURRENCY, description="Cells built at once.")
    max_cells: MaxCells = Field(
        DEFAULT_MAX_CELLS,
        description="The most cells the matrix may expand to; a larger matrix is refused before anything is built.",
    )
    rules: tuple[Rule, ...] = Field(
        (),
        description="Compatibility rules applied to the product: a cell matching a rule's `when` and not its "
        "`require` is dropped; an included row that breaks a rule is refused.",
    )

    @classmethod
    def check_keys(cls, table: dict[str, Any]) -> None:
        if not isinstance(table.get("axes"), dict) or not table["axes"]:
            raise problem("the matrix has no axes", 'write axes = { python = ["3.11", "3.13"] }', key="axes")

    @field_validator("axes", mode="before")
    @classmethod
    def _usable_axes(cls, axes: dict[str, Any]) -> dict[str, Any]:
        for axis, values in axes.items():
            if not _AXIS_RE.match(axis):
                raise problem("is not a usable axis name", "use lowercase letters, digits and _", key=axis)
            if not isinstance(values, list) or not values:
                raise problem(f"{values!r} is not a non-empty list", f'write {axis} = ["..."]', key=axis)
            texts = [_scalar_text(v) for v in values]
            if len(set(texts)) != len(texts):
                raise problem(f"{values!r} repeats a value", "list each value once", key=axis)
        return axes

    @model_validator(mode="after")
    def _consistent(self) -> MatrixTable:
        names = list(self.axes)
        for key in ("exclude", "include"):
            for row in getattr(self, key):
                unknown = [axis for axis in row if axis not in self.axes]
                if unknown:
                    raise problem(
                        f"row {row!r} names unknown axis {unknown[0]!r}", f"use one of {', '.join(names)}", key=key
                    )
        for row in self.include:
            if set(row) != set(self.axes):
                missing = ", ".join(a for a in names if a not in row)
                raise problem(
                    f"row {row!r} lacks {missing}", "give every axis a value in an included row", key="include"
                )
        for key, text in self.templates():
            _check_template(text, names, key)
        for rule in self.rules:
            _check_rule(rule, self.axes)
        self.matrix  # expands once, so that what only a rendered cell shows is refused here too
        return self

    def templates(self) -> list[tuple[tuple[str, ...], str]]:
        """Every template with its key, in the table's order."""
        found = [((key,), getattr(self, key.replace("-", "_"))) for key in ("image", "runtime-image", "local-version")]
        found += [(("env", name), value) for name, value in self.env.items()]
        found += [(("build-requires",), value) for value in self.build_requires]
        archs = (self.gpu_archs,) if isinstance(self.gpu_archs, str) else self.gpu_archs or ()
        found += [(("gpu-archs",), value) for value in archs]
        return [(key, text) for key, text in found if text is not None]

    @cached_property
    def matrix(self) -> Matrix:
        """The cells: the product in declared order, minus excluded rows, then included rows.

        Expanded lazily: the product is never built as a list, each combination is decided by
        lookups made once per axis value, and expansion stops at ``max-cells + 1`` cells (or after
        :data:`MAX_COMBINATIONS` examined), so a matrix of 100⁴ is refused at once in constant memory.
        """
        combos = list(expand(self.axes, self.exclude, self.rules, self.include, self.max_cells))
        if not combos:
            raise _empty(self.axes, self.exclude, self.rules)
        cells = tuple(self._cell(values) for values in combos)
        if len({c.name for c in cells}) != len(cells):
            raise problem("two cells have the same name", "give each axis distinct values")
        return Matrix(axes=dict(self.axes), cells=cells, concurrency=self.concurrency)

    def _cell(self, values: dict[str, str]) -> Cell:
        def render(text: str | None) -> str | None:
            return None if text is None else _render(text, values)

        local = render(self.local_version) or None  # renders empty: this cell builds the plain wheel (a JIT build)
        if local is not None and not _LOCAL_RE.match(local):
            raise problem(
                f"renders to {quoted(local)} for {cell_name(values)[:80]}, not a PEP 440 local label",
                "use letters, digits and dots, e.g. cu{cuda_nodot}",
                key="local-version",
            )
        env = {k: _render(v, values) for k, v in self.env.items()}
        for name, value in env.items():
            if reason := too_long(value, MAX_ENV_VALUE):
                raise problem(
                    f"renders for {cell_name(values)[:80]} to {reason}",
                    "keep an environment value short (pass a file's path instead of its content)",
                    key=("env", name),
                )
        return Cell(
            name=cell_name(values),
            values=values,
            image=render(self.image),
            runtime_image=render(self.runtime_image),
            env=env,
            build_requires=tuple(_render(r, values) for r in self.build_requires),
            local_version=local,
            gpu=self.gpu,
            timeout=float(self.timeout),
            gpu_archs=_rendered_archs(self.gpu_archs, values),
            gpu_archs_policy=self.gpu_archs_policy,
        )


#: The most combinations of the axes examined while expanding (excluded and ruled-out ones count):
#: beyond it the matrix is refused, whatever max-cells says, so expansion stays bounded in time.
MAX_COMBINATIONS = 100_000


def _product(axes: Mapping[str, tuple[str, ...]], limit: int) -> Iterator[dict[str, str]]:
    names = list(axes)
    for combo in itertools.islice(itertools.product(*axes.values()), limit):
        yield dict(zip(names, combo))


def expand(
    axes: Mapping[str, tuple[str, ...]],
    exclude: tuple[Mapping[str, str], ...],
    rules: tuple[Rule, ...],
    include: tuple[Mapping[str, str], ...],
    max_cells: int,
) -> Iterator[dict[str, str]]:
    """The matrix's cells, one at a time: the product in declared order minus excluded rows and
    cells a rule rules out, then the included rows not already there. A SpecError as soon as a
    ``max-cells + 1``-th cell appears or more than :data:`MAX_COMBINATIONS` combinations were examined
    (memory: one cell, and one lookup table per rule and axis)."""
    names = list(axes)
    total = math.prod(len(values) for values in axes.values())
    # Each rule decided per axis value once: a combination is then a few dictionary lookups.
    decided = [
        (
            {axis: {v: _contains(spec, v) for v in axes[axis]} for axis, spec in rule.when.items()},
            {axis: {v: _contains(spec, v) for v in axes[axis]} for axis, spec in rule.require.items()},
        )
        for rule in rules
    ]

    def allowed(values: Mapping[str, str]) -> bool:
        for when, require in decided:
            if all(table[values[axis]] for axis, table in when.items()) and not all(
                table[values[axis]] for axis, table in require.items()
            ):
                return False
        return True

    def excluded(values: Mapping[str, str]) -> bool:
        return any(all(values[a] == v for a, v in row.items()) for row in exclude)

    def too_many() -> SpecError:
        return problem(
            f"expands to more than max-cells ({max_cells}) cells (the product of its axes alone is {total:,})",
            "raise max-cells, or exclude cells (a release of more cells is more likely a typo)",
        )

    count = 0
    for examined, values in enumerate(_product(axes, limit=MAX_COMBINATIONS + 1)):
        if examined == MAX_COMBINATIONS:
            raise problem(
                f"its axes combine to {total:,} cells, more than wheelflow examines ({MAX_COMBINATIONS:,})",
                "split the release into smaller matrices, or list the cells with include rows",
            )
        if excluded(values) or not allowed(values):
            continue
        count += 1
        if count > max_cells:
            raise too_many()
        yield values
    seen: set[tuple[str, ...]] = set()
    for row in include:
        ordered = {a: row[a] for a in names}
        broken = [rule for rule in rules if not rule.allows(ordered)]
        if broken:
            raise problem(
                f"row {dict(row)!r} breaks the rule {broken[0].describe()}",
                "remove the row or change the rule",
                key="include",
            )
        key = tuple(ordered.values())
        in_product = all(ordered[a] in axes[a] for a in names) and not excluded(ordered)
        if in_product or key in seen:
            continue
        seen.add(key)
        count += 1
        if count > max_cells:
            raise too_many()
        yield ordered


def _contains(spec: str, value: str) -> bool:
    return SpecifierSet(spec).contains(Version(value), prereleases=True)


def _empty(
    axes: Mapping[str, tuple[str, ...]], exclude: tuple[Mapping[str, str], ...], rules: tuple[Rule, ...]
) -> SpecError:
    """Why no cell is left: every cell excluded, or some ruled out by rules."""
    if rules and any(
        not all(rule.allows(values) for rule in rules)
        for values in _product(axes, limit=MAX_COMBINATIONS)
        if not any(all(values[a] == v for a, v in row.items()) for row in exclude)
    ):
        return problem(
            "the matrix is empty (every cell is excluded or ruled out by rules)",
            "remove an exclude row or a rule, or add an include row",
        )
    return problem("the matrix is empty (every cell is excluded)", "remove an exclude row or add an include row")


def _rendered_archs(archs: str | tuple[str, ...] | None, values: dict[str, str]) -> str | tuple[str, ...] | None:
    """The cell's declared architectures, rendered and parsed once so that a bad one is refused here."""
    if archs is None:
        return None
    rendered = _render(archs, values) if isinstance(archs, str) else tuple(_render(a, values) for a in archs)
    try:
        parse_archs(rendered)
    except SpecError as exc:
        raise problem(
            f"renders to {rendered!r} for {cell_name(values)}: {exc.problem}", exc.fix, key="gpu-archs"
        ) from None
    return rendered


def _check_rule(rule: Rule, axes: Mapping[str, tuple[str, ...]]) -> None:
    """A rule names known axes whose values are all versions, so it can be decided for every cell."""
    for part in ("when", "require"):
        for axis in getattr(rule, part):
            if axis not in axes:
                raise problem(f"names unknown axis {axis!r}", f"use one of {', '.join(axes)}", key=("rules", part))
            for value in axes[axis]:
                try:
                    Version(value)
                except InvalidVersion:
                    raise problem(
                        f"compares axis {axis!r}, whose value {value!r} is not a version",
                        "compare only axes with PEP 440 versions (python, cuda, torch)",
                        key=("rules", part),
                    ) from None


def _check_template(text: str, axes: list[str], key: tuple[str, ...]) -> None:
    """Templates see every axis as {axis} and {axis_nodot}; any other name is refused up front."""
    allowed = set(axes) | {f"{a}_nodot" for a in axes}
    try:
        names = template_fields(text)
    except TemplateRefused as exc:
        raise problem(str(exc), "use plain {axis} placeholders, e.g. {python} or {cuda_nodot}", key=key) from None
    for name in names:
        if name not in allowed:
            raise problem(
                f"template {quoted(text)} names unknown axis {name!r}",
                f"use one of {', '.join(axes)} (or AXIS_nodot)",
                key=key,
            )


def render_template(text: str, values: Mapping[str, str], key: tuple[str, ...]) -> str:
    """A template outside the matrix table (e.g. abi.cell-runtime): checked against the cell's axes, then rendered."""
    _check_template(text, list(values), key)
    return _render(text, values)


def _render(text: str, values: Mapping[str, str]) -> str:
    scope = dict(values) | {f"{a}_nodot": v.replace(".", "") for a, v in values.items()}
    return text.format_map(scope)


def parse_matrix(table: Any, prefix: str = "tool.wheelflow.matrix") -> Matrix:
    """Validate a ``[tool.wheelflow.matrix]`` table and expand it; a SpecError names the bad key."""
    try:
        return MatrixTable.model_validate(table).matrix
    except ValidationError as exc:
        raise spec_error(exc, prefix) from None
