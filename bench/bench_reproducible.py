"""Benchmark: are compiled wheels byte-identical when two fresh homes build the same commit?

Builds one cell of an example twice with the local builder, each time as a release does (the same
SOURCE_DATE_EPOCH, the spec's repair step), but from a fresh WHEELFLOW_HOME and a copy of the project
at another path, then prints both wheels' sha256 and, when they differ, which files inside differ
(``diffoscope`` shows how, when it is installed).

    python bench/bench_reproducible.py --example hello-cuda [--cell NAME]
    python bench/bench_reproducible.py --example torch-ext [--wheels DIR] [--keep DIR] [--env MAX_JOBS=2]

torch-ext builds against torch 2.14.1 from DIR (default: ~/.cache/wheelflow-tests/wheels; filled with
pip download when torch is missing), for sm_90 only (its spec's TORCH_CUDA_ARCH_LIST). Needs nvcc at
/usr/local/cuda; torch-ext also needs ninja.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from freshbuild import build_cell_in_fresh_home, differing_members, sha256  # noqa: E402  (tests/, on the path above)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", choices=["hello-cuda", "torch-ext"], default="hello-cuda")
    parser.add_argument("--cell", default=None, help="the cell to build (default: the last one)")
    parser.add_argument("--wheels", type=Path, default=None, help="torch wheels (torch-ext)")
    parser.add_argument("--keep", type=Path, default=None, help="copy both wheels here")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the cell (e.g. MAX_JOBS=2)")
    args = parser.parse_args()
    if args.example == "torch-ext":
        from torchcache import torch_wheels

        os.environ["PIP_FIND_LINKS"] = str(torch_wheels(cache=args.wheels))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.example}, two fresh homes")
    with tempfile.TemporaryDirectory(prefix="bench-repro-") as tmp:
        root = Path(tmp)
        wheels = []
        for label in ("a", "b"):
            extra_env = dict(item.split("=", 1) for item in args.env)
            lines: list[str] = []
            try:
                wheel, took = build_cell_in_fresh_home(
                    args.example, root, label, cell_name=args.cell, extra_env=extra_env, log=lines
                )
            except Exception:
                print("\n".join(lines[-40:]), file=sys.stderr)
                raise
            print(f"home {label}: {wheel.name} sha256={sha256(wheel)} ({took:.0f} s)")
            wheels.append(wheel)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy2(wheel, args.keep / f"{label}-{wheel.name}")
        a, b = wheels
        if sha256(a) == sha256(b):
            print("same sha256: byte-identical")
            return 0
        print(f"differ: {', '.join(differing_members(a, b)) or 'the archives only (same members)'}")
        if shutil.which("diffoscope"):
            shown = subprocess.run(["diffoscope", "--text", "-", str(a), str(b)], capture_output=True, text=True)
            print(shown.stdout[-6000:])
    return 1


if __name__ == "__main__":
    sys.exit(main())
