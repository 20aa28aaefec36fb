"""Undeclared device code: SASS for architectures a cell does not declare is a warning that names the
likely cause and the compile time it costs, or a refusal under ``gpu-archs-policy = "exact"``.

Plain values here; the same rule on nvcc-compiled shared objects is in tests/e2e/test_abi.py, and on
examples/torch-ext's real wheel in tests/e2e/test_torch_ext_abi.py."""

from __future__ import annotations

import pytest

from wheelflow.checks.abi import undeclared_finding
from wheelflow.checks.devicecode import undeclared_archs
from wheelflow.config.gpuarch import DeviceCode, declared_archs, parse_archs
from wheelflow.config.matrix import parse_matrix
from wheelflow.core.errors import SpecError

# What torch-ext's hard-coded -gencode list compiles: seven SASS and PTX for the newest.
HARDCODED = DeviceCode(
    frozenset({"sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120"}), frozenset({"compute_120"})
)


def test_sass_nobody_declared_is_listed_in_sm_order() -> None:
    assert undeclared_archs(HARDCODED, parse_archs("9.0")) == ["sm_75", "sm_80", "sm_86", "sm_89", "sm_100", "sm_120"]
    assert undeclared_archs(DeviceCode(frozenset({"sm_90"})), parse_archs("9.0")) == []
    # PTX alone is forward compatibility, not extra SASS; sm_90a is not sm_90.
    assert undeclared_archs(DeviceCode(frozenset({"sm_90"}), frozenset({"compute_90"})), parse_archs("9.0")) == []
    assert undeclared_archs(DeviceCode(frozenset({"sm_90a"})), parse_archs("9.0")) == ["sm_90a"]


def test_undeclared_sass_warns_naming_the_cause_and_the_cost() -> None:
    finding = undeclared_finding(
        "w.whl", "torch_ext/_C.so", HARDCODED, declared_archs(None, {"TORCH_CUDA_ARCH_LIST": "9.0"})
    )
    assert finding is not None and finding.warning and finding.rule == "gpu-arch"
    assert str(finding) == (
        "w.whl: [gpu-arch] warning: torch_ext/_C.so carries SASS for sm_75, sm_80, sm_86, sm_89, sm_100, sm_120, "
        "which the cell does not declare (declared: sm_90); likely cause: a hard-coded -gencode in setup.py "
        "overrides TORCH_CUDA_ARCH_LIST (torch then adds no flags of its own); cost: 6 extra architectures and "
        "PTX compute_120: 8 device-code targets compiled for 1 declared, about 8× the device-code compile time; "
        "fix: remove the hard-coded -gencode flags so TORCH_CUDA_ARCH_LIST decides, or declare these "
        'architectures in gpu-archs (gpu-archs-policy = "exact" refuses such wheels)'
    )
    assert "\n" not in finding.message


def test_exact_policy_refuses_undeclared_sass_with_the_fix() -> None:
    finding = undeclared_finding(
        "w.whl", "pkg/_k.so", DeviceCode(frozenset({"sm_80", "sm_90"})), parse_archs("9.0"), "exact"
    )
    assert finding is not None and not finding.warning
    assert "pkg/_k.so carries SASS for sm_80, which the cell does not declare" in finding.message
    assert (
        "1 extra architecture: 2 device-code targets compiled for 1 declared, about 2× the device-code"
        in finding.message
    )
    assert finding.message.endswith('or set gpu-archs-policy = "at-least" to only warn')
    assert (
        undeclared_finding("w.whl", "pkg/_k.so", DeviceCode(frozenset({"sm_90"})), parse_archs("9.0"), "exact") is None
    )


def test_the_policy_is_a_matrix_key_checked_up_front() -> None:
    cells = parse_matrix({"axes": {"arch": ["90"]}, "gpu-archs": "sm_{arch}", "gpu-archs-policy": "exact"}).cells
    assert cells[0].gpu_archs_policy == "exact"
    assert parse_matrix({"axes": {"arch": ["90"]}}).cells[0].gpu_archs_policy == "at-least"
    with pytest.raises(SpecError) as err:
        parse_matrix({"axes": {"arch": ["90"]}, "gpu-archs-policy": "strict"})
    assert str(err.value) == (
        "spec error: tool.wheelflow.matrix.gpu-archs-policy: unknown gpu-archs-policy 'strict'; "
        'fix: use "at-least" (the default: a warning) or "exact" (a refusal)'
    )
