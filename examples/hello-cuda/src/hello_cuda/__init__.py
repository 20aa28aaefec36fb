"""wheelflow's demo package: saxpy with a CUDA kernel when compiled in, C otherwise."""

from __future__ import annotations

from . import _core
from ._version import __version__

__all__ = ["WITH_CUDA", "__version__", "saxpy", "selftest"]

#: True when this build compiled the CUDA kernel with nvcc.
WITH_CUDA: bool = bool(_core.WITH_CUDA)


def saxpy(a: float, x: list[float], y: list[float], device: str = "auto") -> list[float]:
    """Return a*x + y, on the GPU when ``device`` is "cuda" (or "auto" and a GPU answers)."""
    if device == "auto":
        device = "cuda" if WITH_CUDA and _core.cuda_device_count() > 0 else "cpu"
    return _core.saxpy(a, x, y, device)


def selftest() -> dict:
    """Run saxpy on whatever was built and report which implementation ran."""
    gpus = _core.cuda_device_count() if WITH_CUDA else 0
    device = "cuda" if gpus > 0 else "cpu"
    x = [float(i) for i in range(1000)]
    y = [1.0] * 1000
    got = _core.saxpy(2.0, x, y, device)
    ok = all(abs(g - (2.0 * xi + 1.0)) < 1e-4 for g, xi in zip(got, x))
    return {"ok": ok, "ran": device, "with_cuda": WITH_CUDA, "gpus": gpus}
