"""torch_ext: two CUDA kernels (vector_add, saxpy) behind a PyTorch extension, wheelflow's torch example.

``vector_add``/``saxpy`` run the CUDA kernels when a GPU answers (``torch.cuda.is_available()``) and
the compiled CPU loops otherwise; each returns ``(result, device)`` so callers see which one ran.
``selftest()`` checks both against plain torch arithmetic and returns one line starting with "ok" or
"FAIL", naming the torch it loaded and the torch the binary was compiled against. Another release
series (2.15 for a binary built on 2.14) is a FAIL: torch's C++ ABI changes between series; a patch
release of the same series (2.14.1 for 2.14.0) keeps it, and only the names in the line differ.
"""

from __future__ import annotations

import torch  # before _C: it loads libtorch, c10 and the CUDA runtime (nvidia-* wheels) the extension links to

from torch_ext import _C

# setup.py reads this line (flash-attention style); WHEELFLOW_RELEASE_VERSION overrides it at build time.
__version__ = "0.1.0"

__all__ = ["__version__", "build_info", "saxpy", "selftest", "vector_add"]


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def vector_add(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, str]:
    """``a + b`` by the extension, on CUDA when available (inputs are moved there), else on CPU."""
    device = _device()
    out = _C.vector_add(a.to(device), b.to(device))
    return out, device.type


def saxpy(alpha: float, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, str]:
    """``alpha * x + y`` by the extension, on CUDA when available (inputs are moved there), else on CPU."""
    device = _device()
    out = _C.saxpy(float(alpha), x.to(device), y.to(device))
    return out, device.type


def build_info() -> dict:
    """What the compiled extension was built against: {"torch": "2.14.1", "cudart": 13000}."""
    return dict(_C.build_info())


def selftest() -> str:
    """One line: "ok ..." when both kernels agree with torch, else "FAIL ..."; names what ran and the torches."""
    n = 1000
    a = torch.arange(n, dtype=torch.float32)
    b = torch.full((n,), 2.0, dtype=torch.float32)
    added, where_add = vector_add(a, b)
    scaled, where_saxpy = saxpy(3.0, a, b)
    problems = []
    if not torch.allclose(added.cpu(), a + b):
        problems.append("vector_add differs from a + b")
    if not torch.allclose(scaled.cpu(), 3.0 * a + b):
        problems.append("saxpy differs from 3 * a + b")
    built = build_info()
    loaded = torch.__version__.split("+")[0]
    if built["torch"].split(".")[:2] != loaded.split(".")[:2]:  # the release series: major.minor
        problems.append(f"compiled against torch {built['torch']} but loaded torch {torch.__version__}")
    ran = "cuda" if "cuda" in (where_add, where_saxpy) else "cpu (no GPU: CPU fallback)"
    status = "ok" if not problems else "FAIL " + "; ".join(problems)
    return (
        f"{status}: torch_ext {__version__} ran on {ran}; torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), compiled against torch {built['torch']} cudart {built['cudart']}"
    )
