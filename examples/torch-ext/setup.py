"""Build torch_ext._C, the way flash-attention and its siblings build: torch is imported at the top.

There are no pyproject build requirements: an isolated build (pip's default, `python -m build`) fails
with "No module named 'torch'". Build with torch already installed and without isolation:

    pip wheel --no-build-isolation --no-deps . -w dist/
    python -m build --sdist --no-isolation

Environment:
  TORCH_CUDA_ARCH_LIST          architectures, torch's syntax ("9.0", "8.0;9.0+PTX"); read by torch's
                                BuildExtension, which turns it into -gencode flags
  TORCH_EXT_HARDCODED_GENCODE   "1" adds a hard-coded multi-architecture -gencode list to nvcc's flags,
                                as many real projects do; torch then adds nothing and TORCH_CUDA_ARCH_LIST
                                is silently ignored (the wheel carries SASS nobody declared)
  CUDA_HOME                     the CUDA toolkit (default: nvcc on PATH, then /usr/local/cuda)
  MAX_JOBS                      parallel compile jobs (ninja)
  WHEELFLOW_RELEASE_VERSION     the version to stamp; default: __version__ in torch_ext/__init__.py
  WHEELFLOW_LOCAL_VERSION       a local version label (e.g. "cu130torch2141" -> 0.1.0+cu130torch2141)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CUDAExtension

HERE = Path(__file__).resolve().parent

# The list a project hard-codes to cover "every GPU": every SASS nvcc 13 can still emit for data-center
# and consumer cards, plus PTX for the newest. Only with TORCH_EXT_HARDCODED_GENCODE=1.
HARDCODED_ARCHS = ["75", "80", "86", "89", "90", "100", "120"]


def hardcoded_gencode() -> list[str]:
    flags = []
    for arch in HARDCODED_ARCHS:
        flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    flags += ["-gencode", f"arch=compute_{HARDCODED_ARCHS[-1]},code=compute_{HARDCODED_ARCHS[-1]}"]
    return flags


def nvcc_flags() -> list[str]:
    # Note: torch's _get_cuda_arch_flags() adds its TORCH_CUDA_ARCH_LIST flags only when no flag here
    # contains the substring "arch"; keep "arch" out of every other flag (and macro name).
    # No -std flag: torch adds its own (-std=c++20 for torch 2.14; its headers refuse C++17).
    flags = ["-O3", "--use_fast_math"]
    if os.environ.get("TORCH_EXT_HARDCODED_GENCODE") == "1":
        flags += hardcoded_gencode()
    return flags


def version() -> str:
    text = (HERE / "torch_ext" / "__init__.py").read_text(encoding="utf-8")
    base = os.environ.get("WHEELFLOW_RELEASE_VERSION") or re.search(
        r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE
    ).group(1)
    local = os.environ.get("WHEELFLOW_LOCAL_VERSION")
    return f"{base}+{local}" if local else base


print(
    f"torch-ext: building against torch {torch.__version__} (CUDA {torch.version.cuda}), "
    f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')!r}, "
    f"hard-coded gencode: {os.environ.get('TORCH_EXT_HARDCODED_GENCODE') == '1'}",
    flush=True,
)

setup(
    name="torch-ext",
    version=version(),
    description="wheelflow's PyTorch CUDA extension example: vector_add and saxpy kernels with CPU loops",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=["torch_ext"],
    ext_modules=[
        CUDAExtension(
            name="torch_ext._C",
            sources=["csrc/bindings.cpp", "csrc/vector_add.cu", "csrc/saxpy.cu"],
            include_dirs=[str(HERE / "csrc")],
            extra_compile_args={"cxx": ["-O3"], "nvcc": nvcc_flags()},
        )
    ],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.9",
    # The wheel loads only with the torch minor it was built against (torch's C++ ABI changes between
    # minors): pinned to it, so a resolver never pairs it with another torch.
    install_requires=[f"torch=={'.'.join(torch.__version__.split('+')[0].split('.')[:2])}.*"],
    zip_safe=False,
)
