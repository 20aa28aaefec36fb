"""Benchmark: an 8-cell matrix of fixed-cost cells, first run and fully cached re-run.

Prints two ratios, both measured in this one run:
  parallel efficiency  = wall time of the build phase / ideal (cells x mean cell time / concurrency)
  cached re-run        = wall time of the re-run release / wall time of the first release

    python bench/bench_matrix.py [--builder docker|local] [--cells 8] [--concurrency 4] [--seconds 3]

Each cell builds a tiny project whose setup.py sleeps a fixed time, so every cell costs the same
plus the builder's own overhead (container start, build isolation).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# The matrix project is the tests' (tests/projects.py): one definition for the test and the benchmark.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from projects import make_matrix_project as make_project  # noqa: E402


def build_phase(flow_run_id: str) -> tuple[float, list[float]]:
    """(wall time from the first build start to the last build end, each build's duration) from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = [
            t
            for t in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if t.name.startswith("build[")
        ]
    starts = [r.start_time for r in runs]
    ends = [r.end_time for r in runs]
    return (max(ends) - min(starts)).total_seconds(), [r.total_run_time.total_seconds() for r in runs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builder", choices=["docker", "local"], default=None)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wheelflow-bench-"))
    os.environ["WHEELFLOW_HOME"] = str(work / "home")
    project = make_project(work / "bench-cell", args.cells, args.concurrency, args.seconds)

    from wheelflow.flows.release import release

    timings, reports = [], []
    for _ in range(2):
        started = time.perf_counter()
        state = release(project=str(project), version="1.0.0", builder=args.builder, return_state=True)
        timings.append(time.perf_counter() - started)
        if not state.is_completed():
            print(f"release failed: {state.message}", file=sys.stderr)
            return 1
        reports.append(state.result())

    phase, durations = build_phase(reports[0]["flow_run_id"])
    mean = sum(durations) / len(durations)
    ideal = len(durations) * mean / args.concurrency
    print(
        f"builder: {reports[0]['builder']}, cells: {len(durations)}, concurrency: {args.concurrency}, "
        f"fixed cost: {args.seconds:.1f} s, mean cell build: {mean:.2f} s"
    )
    print(f"build phase: {phase:.2f} s, ideal {ideal:.2f} s -> parallel ratio {phase / ideal:.2f} (1.00 is ideal)")
    assert all(c["cached"] for c in reports[1]["cells"]), "the re-run rebuilt a cell"
    print(
        f"release: first {timings[0]:.2f} s, fully cached re-run {timings[1]:.2f} s -> re-run ratio "
        f"{timings[1] / timings[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
