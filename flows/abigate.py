"""The ABI gate inside a release (or a backfill): per cell, after the file audits and before any
index is read or written. Each cell's wheels must carry device code for the cell's declared GPU
architectures, and load against the cell's runtime (``abi.cell-runtime``); the grid against every
configured runtime is a table artifact, whatever it says. SASS for undeclared architectures is a
warning in the checklist row (a refusal under ``gpu-archs-policy = "exact"``).

After each upload, the install done the way users install resolves torch as users get it: where that
is another release than the cell's build torch, the wheel is checked against that torch's libraries
too and the report flags it (``abi.users-torch = "same"`` fails the release): ``install_as_users_get``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from wheelflow.config.gpuarch import DEFAULT_ARCH_POLICY, declared_archs
from wheelflow.config.spec import ReleaseSpec
from wheelflow.core.distributions import Distribution
from wheelflow.core.report import ReleaseReport
from wheelflow.index.indexes import Endpoints
from wheelflow.index.simple_api import ServedFile
from wheelflow.tasks.check import check_abi, install_abi_runtime
from wheelflow.tasks.verify import install_and_smoke_test


def abi_gate(
    spec: ReleaseSpec, home: Path, report: ReleaseReport, wheels_by_cell: Mapping[str, Sequence[Distribution]]
) -> None:
    """``wheels_by_cell``: cell name (the distribution's name without a matrix) -> its wheels.
    Nothing is recorded when nothing is declared: no gpu-archs, no TORCH_CUDA_ARCH_LIST, no runtimes."""
    cells = {c.name: c for c in spec.matrix.cells} if spec.matrix is not None else {}
    groups = [
        (name, cells.get(name), [d for d in dists if d.kind == "wheel"]) for name, dists in wheels_by_cell.items()
    ]
    groups = [(name, cell, wheels) for name, cell, wheels in groups if wheels]
    declared = {name: declared_archs(cell.gpu_archs, cell.env) if cell else None for name, cell, _ in groups}
    if not spec.abi.runtimes and not any(declared.values()):
        return
    with report.step("ABI gate", "") as step:
        runtimes = {
            label: [Path(p) for p in install_abi_runtime(label, list(reqs), list(spec.abi.pip_args), str(home))]
            for label, reqs in spec.abi.runtimes.items()
        }
        warned = []
        for name, cell, wheels in groups:
            label = spec.cell_runtime(cell.values if cell else {})
            own = {label: runtimes[label]} if label is not None else {}
            policy = cell.gpu_archs_policy if cell else DEFAULT_ARCH_POLICY
            warned.append(check_abi(wheels, name, declared[name], own, runtimes or None, policy))
        archs = sorted({a for d in declared.values() if d for a in d.sass | d.ptx})
        step.detail = (
            f"{sum(len(w) for _, _, w in groups)} wheel(s) of {len(groups)} cell(s)"
            + (f"; architectures {', '.join(archs)}" if archs else "")
            + (f"; runtimes {', '.join(runtimes)}" if runtimes else "")
            + "".join(f"; {line}" for line in warned if line)
        )


def wheels_of_cells(report: ReleaseReport, dists: Sequence[Distribution], name: str) -> dict[str, list[Distribution]]:
    """The built wheels grouped by the cell that built them (the report's cell rows say which)."""
    by_file = {d.filename: d for d in dists}
    if not report.cells:
        return {name: [d for d in dists if d.kind == "wheel"]}
    return {row.cell: [by_file[row.wheel]] for row in report.cells if row.wheel in by_file}


def install_as_users_get(
    spec: ReleaseSpec, report: ReleaseReport, endpoints: Endpoints, version: str, served: list[ServedFile]
) -> str:
    """The install + smoke check on one target, comparing the torch it resolved with each wheel's
    build torch (the cell rows'); what it flags goes into the report (JSON, checklist, run page).
    Returns the checklist row's detail."""
    built = {row.wheel: row.torch for row in report.cells if row.wheel and row.torch}
    detail, flags = install_and_smoke_test(
        endpoints, spec.name, version, served, spec.smoke, spec.dependencies, built, spec.abi.users_torch
    )
    report.flags += [flag for flag in flags if flag not in report.flags]
    return detail
