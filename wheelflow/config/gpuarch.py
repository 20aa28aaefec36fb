"""GPU architectures: what a cell declares, and what device code a shared object really carries.

A CUDA shared object keeps its kernels in the ``.nv_fatbin`` ELF section: one or more fat binary
containers, each a list of entries, either SASS (a cubin for one SM, e.g. ``sm_80``) or PTX (the
virtual ISA, JIT-compiled by the driver on GPUs newer than any SASS present). ``cuobjdump
--list-elf/--list-ptx`` lists them where a CUDA toolkit has it; otherwise the containers' headers are
read here directly (their layout is stable since CUDA 9 and checked against cuobjdump in the tests).

Names: SASS ``sm_80``/``sm_90a``/``sm_100f``, PTX ``compute_90``. A declaration comes from a
``gpu-archs`` list (``["sm_80", "sm_90", "compute_90"]``) or from PyTorch's ``TORCH_CUDA_ARCH_LIST``
(``"8.0;9.0+PTX"``: SASS for both, PTX for 9.0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wheelflow.core.errors import SpecError

# ``gpu-archs-policy``: "at-least" warns about SASS for undeclared architectures, "exact" refuses it.
ARCH_POLICIES = ("at-least", "exact")
DEFAULT_ARCH_POLICY = "at-least"

_NAME_RE = re.compile(r"^(sm|compute)_(\d{2,3})([af]?)$")
_TORCH_RE = re.compile(r"^(\d+)\.(\d)([af]?)(\+PTX)?$", re.IGNORECASE)


@dataclass(frozen=True)
class DeviceCode:
    """The architectures present: ``sass`` like {"sm_80"}, ``ptx`` like {"compute_90"}."""

    sass: frozenset[str] = frozenset()
    ptx: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.sass or self.ptx)


ArchSpec = DeviceCode  # a declaration has the same shape as what is found


def parse_archs(value: str | Sequence[str], key: str = "gpu-archs") -> ArchSpec:
    """``["sm_80", "compute_90"]``, ``"8.0;9.0+PTX"`` or ``["8.0", "9.0+PTX"]``; a SpecError names ``key``."""
    tokens = re.split(r"[;\s,]+", value) if isinstance(value, str) else [str(v) for v in value]
    sass: set[str] = set()
    ptx: set[str] = set()
    for token in filter(None, (t.strip() for t in tokens)):
        named, torch = _NAME_RE.match(token), _TORCH_RE.match(token)
        if named:
            (sass if named.group(1) == "sm" else ptx).add(token)
        elif torch:
            number = f"{torch.group(1)}{torch.group(2)}{torch.group(3)}"
            sass.add(f"sm_{number}")
            if torch.group(4):
                ptx.add(f"compute_{number}")
        else:
            raise SpecError(
                key,
                f"{token!r} is not a GPU architecture",
                'write sm_80 / compute_90, or TORCH_CUDA_ARCH_LIST style "8.0;9.0+PTX"',
            )
    if not sass and not ptx:
        raise SpecError(key, f"{value!r} names no GPU architecture", 'write e.g. ["sm_80", "sm_90"]')
    return ArchSpec(frozenset(sass), frozenset(ptx))


def declared_archs(
    gpu_archs: str | Sequence[str] | None, env: Mapping[str, str], key: str = "gpu-archs"
) -> ArchSpec | None:
    """A cell's declaration: its ``gpu-archs`` value, else its TORCH_CUDA_ARCH_LIST, else None (not checked)."""
    if gpu_archs is not None:
        return parse_archs(gpu_archs, key)
    if env.get("TORCH_CUDA_ARCH_LIST"):
        return parse_archs(env["TORCH_CUDA_ARCH_LIST"], "env.TORCH_CUDA_ARCH_LIST")
    return None


def arch_sort_key(name: str) -> tuple[int, str]:
    match = _NAME_RE.match(name)
    return (int(match.group(2)), name) if match else (0, name)


def describe(archs: frozenset[str]) -> str:
    return ", ".join(sorted(archs, key=arch_sort_key)) or "none"
