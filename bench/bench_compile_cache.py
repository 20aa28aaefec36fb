"""Benchmark: the compiler cache on a real multi-file CUDA extension (examples/torch-ext).

Builds the extension's wheel with the local builder three times, in one process and one run:
  cold      an empty compiler cache (and a prepared build environment made beforehand, not timed)
  one .cu   the next version: one kernel file changed, everything else as before
and prints the ratio one-.cu / cold (goal: <= 0.3) with the cache's hit counts.

    python bench/bench_compile_cache.py [--wheels DIR]

DIR holds torch 2.14.1 and its dependency wheels (default: ~/.cache/wheelflow-tests/wheels; filled
with pip download when torch is missing). Needs nvcc at /usr/local/cuda, ccache and ninja.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from torchcache import torch_wheels  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=None)
    args = parser.parse_args()
    wheels = torch_wheels(cache=args.wheels)
    os.environ["PIP_FIND_LINKS"] = str(wheels)
    with tempfile.TemporaryDirectory(prefix="bench-ccache-") as tmp:
        root = Path(tmp)
        os.environ["WHEELFLOW_HOME"] = str(root / "home")
        from wheelflow.builds.builders.local import LocalBuilder
        from wheelflow.config.spec import load_spec
        from wheelflow.core.installerconfig import read_installer_config
        from wheelflow.tasks.matrix import CellJob

        project = root / "torch-ext"
        shutil.copytree(REPO / "examples" / "torch-ext", project, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        spec = load_spec(project)
        (cell,) = spec.matrix.cells
        job = CellJob(
            str(project),
            "bench",
            spec.name,
            "0.1.0",
            dict(spec.build_env),
            str(root / "home"),
            "bench",
            None,
            build_requires=spec.build_requires,
            build_isolation=spec.build_isolation,
        )
        setup = job.setup(cell)
        assert setup.installer == read_installer_config()
        builder = LocalBuilder()
        lines: list[str] = []

        def build(label: str) -> float:
            out = root / f"out-{label}"
            out.mkdir()
            started = time.perf_counter()
            builder.build(cell, project, out, dict(cell.env), lines.append, {}, setup)
            took = time.perf_counter() - started
            hits = [line for line in lines if "compiler cache:" in line]
            print(f"{label:>8}: {took:6.1f} s  {hits[-1].split(': ', 1)[1] if hits else 'no compiles recorded'}")
            return took

        # The prepared environment (torch installed) is made once, before anything is timed.
        from wheelflow.builds.buildenv import prepared_build
        from wheelflow.builds.builders.local import interpreter_identity

        identity = interpreter_identity(sys.executable)
        prepared_build(project, sys.executable, identity, setup, home=root / "home", scratch=root, log=lines.append)
        cold = build("cold")
        kernel = project / "csrc" / "saxpy.cu"
        # code, not a comment: the preprocessor drops comments and ccache would rightly hit
        kernel.write_text(kernel.read_text() + "\n__device__ float next_version_scale(float x) { return 3.0f * x; }\n")
        one = build("one .cu")
        print(f"one .cu / cold = {one / cold:.2f} (goal <= 0.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
