"""Benchmark: from `wheelflow release` starting to its flow run running, before and after the home's server.

The same tiny project is released (local builder, the embedded local index) with nothing configured:
  ephemeral   WHEELFLOW_EPHEMERAL=1: Prefect's temporary server starts inside each command (as before)
  first       a fresh WHEELFLOW_HOME: the first command starts the home's server (counted once)
  server-up   later commands: the home's server is up and reused
For each run it prints the seconds from spawning the command to Prefect's "Beginning flow run" line,
and the command's exit code; then the medians. The home's server is stopped at the end.

    python bench/bench_cli_start.py [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import make_project  # noqa: E402

WHEELFLOW = str(Path(sys.executable).with_name("wheelflow"))


def time_to_flow_start(project: Path, env: dict[str, str]) -> tuple[float | None, int]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [WHEELFLOW, "release", str(project), "--builder", "local"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if seen is None and "Beginning flow run" in line:
            seen = time.monotonic() - started
    return seen, proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{datetime.date.today()}, {os.cpu_count()} CPUs, {args.runs} runs per mode")
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        project = make_project(tmp / "project")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "WHEELFLOW_"))}
        base["PREFECT_HOME"] = str(tmp / "prefect-home")
        results: dict[str, list[float]] = {"ephemeral": [], "first": [], "server-up": []}
        eph = {**base, "WHEELFLOW_EPHEMERAL": "1", "WHEELFLOW_HOME": str(tmp / "home-ephemeral")}
        local = {**base, "WHEELFLOW_HOME": str(tmp / "home-local")}
        try:
            plan = [("ephemeral", eph)] * args.runs + [("first", local)] + [("server-up", local)] * args.runs
            for mode, env in plan:
                seconds, code = time_to_flow_start(project, env)
                print(f"{mode:10} {'-' if seconds is None else f'{seconds:.2f}'} s to flow running, exit {code}")
                if seconds is not None and code == 0:
                    results[mode].append(seconds)
        finally:
            subprocess.run([WHEELFLOW, "server", "stop"], env=local, capture_output=True)
    for mode, values in results.items():
        if values:
            print(f"median {mode:10} {statistics.median(values):.2f} s ({len(values)} runs)")


if __name__ == "__main__":
    main()
