"""Build hello_cuda._core: nvcc compiles the kernel when a CUDA toolkit is found, C fallback otherwise.

Environment:
  CUDA_HOME              toolkit root (default: /usr/local/cuda, then the toolkit of `nvcc` on PATH)
  HELLO_CUDA_ARCHS       semicolon-separated SM versions to compile for (default "80;90")
  HELLO_CUDA_FORCE_CPU   "1" builds the C fallback even when nvcc is present
  WHEELFLOW_RELEASE_VERSION  the version to stamp (a nightly's 0.1.1.dev...); default: _version.py
  WHEELFLOW_LOCAL_VERSION  a local version label for variant wheels (e.g. "sm90" -> 0.1.0+sm90)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def find_cuda_home() -> Path | None:
    """The toolkit root: a directory with bin/nvcc and the static CUDA runtime."""
    if os.environ.get("HELLO_CUDA_FORCE_CPU") == "1":
        return None
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(Path(os.environ["CUDA_HOME"]))
    candidates.append(Path("/usr/local/cuda"))
    on_path = shutil.which("nvcc")
    if on_path:  # may be a wrapper outside the toolkit: follow links, then go up from bin/
        candidates.append(Path(on_path).resolve().parent.parent)
    for root in candidates:
        if (root / "bin" / "nvcc").is_file() and _cudart_dir(root) is not None:
            return root
    return None


def _cudart_dir(root: Path) -> Path | None:
    for lib in (root / "lib64", root / "targets" / "x86_64-linux" / "lib", root / "targets" / "sbsa-linux" / "lib"):
        if (lib / "libcudart_static.a").is_file():
            return lib
    return None


class BuildWithOptionalCuda(build_ext):
    def build_extensions(self) -> None:
        cuda_home = find_cuda_home()
        if cuda_home is not None:
            self._compile_kernel(cuda_home, self.extensions[0])
        else:
            print("hello-cuda: no CUDA toolkit found, building the C fallback only")
        super().build_extensions()

    def _compile_kernel(self, cuda_home: Path, ext: Extension) -> None:
        nvcc = cuda_home / "bin" / "nvcc"
        archs = os.environ.get("HELLO_CUDA_ARCHS", "80;90").split(";")
        out_dir = Path(self.build_temp) / "cuda"
        out_dir.mkdir(parents=True, exist_ok=True)
        obj = out_dir / "saxpy_kernel.o"
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs if a]
        cmd = [
            str(nvcc),
            "-c",
            "csrc/saxpy_kernel.cu",
            "-o",
            str(obj),
            "-O2",
            "-Xcompiler",
            "-fPIC",
            "-Icsrc",
            *gencode,
        ]
        print("hello-cuda: compiling the CUDA kernel:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        # cudart is linked statically (nvcc's default): the wheel needs only the driver at run time.
        lib_dir = _cudart_dir(cuda_home)
        ext.extra_objects.append(str(obj))
        ext.library_dirs.append(str(lib_dir))
        ext.libraries.extend(["cudart_static", "dl", "pthread", "rt", "stdc++"])
        ext.define_macros.append(("HELLO_CUDA_WITH_CUDA", "1"))


def version() -> str:
    text = Path("src/hello_cuda/_version.py").read_text()
    base = os.environ.get("WHEELFLOW_RELEASE_VERSION") or text.split("=", 1)[1].strip().strip("\"'")
    local = os.environ.get("WHEELFLOW_LOCAL_VERSION")
    return f"{base}+{local}" if local else base


setup(
    version=version(),
    ext_modules=[Extension("hello_cuda._core", sources=["csrc/_core.c"], include_dirs=["csrc"])],
    cmdclass={"build_ext": BuildWithOptionalCuda},
)
