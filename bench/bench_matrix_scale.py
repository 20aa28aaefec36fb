"""Benchmark: a release of a wide matrix of trivial cells, phase by phase, against its ideal.

    python bench/bench_matrix_scale.py [--cells 96] [--concurrency 2]          # real local builds
    python bench/bench_matrix_scale.py --dry --cells 500 [--concurrency 4]     # orchestration only

Real mode: every cell is a real `python -m build` of a trivial package (local builder) and a real
smoke test; the release goes to the embedded local index (real uploads, real verification). Prints,
from this one run:
  phases         wall time of build, smoke, upload and prove, from the task runs in the Prefect API
  ideal ratio    release wall time / (Σ(cell build + smoke) / concurrency + uploads + prove)
  smoke envs     mean time of one smoke test as before (venv + pip), with the pip fallback and with uv
                 (also alone: --smoke-only, on crafted wheels)

Dry mode (--dry): the build step is replaced by writing a crafted wheel of the cell's version (no
compiler, no build backend: as if copying a prebuilt wheel) and the smoke test by a no-op pass, so
the matrix phase is orchestration only; uploads, checks and verification stay real. Prints the
orchestration cost per cell and the peak RSS of the release process (this process).

A Prefect server of its own is started for the run (SQLite, on loopback).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from projects import make_matrix_project as make_project  # noqa: E402


def phase(runs: list, prefix: str | tuple[str, ...]) -> tuple[float, float]:
    """(wall time from the first start to the last end, Σ run time) of the task runs named ``prefix...``."""
    mine = [r for r in runs if r.name.startswith(prefix) and r.start_time and r.end_time]
    if not mine:
        return 0.0, 0.0
    wall = (max(r.end_time for r in mine) - min(r.start_time for r in mine)).total_seconds()
    return wall, sum(r.total_run_time.total_seconds() for r in mine)


def read_task_runs(flow_run_id: str, expected: int) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 300  # minutes on a busy machine
    with get_client(sync_client=True) as client:
        while True:  # task states are written by a server service: they arrive a moment late
            runs, offset = [], 0
            while True:
                page = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200, offset=offset
                )
                runs += page
                offset += len(page)
                if len(page) < 200:
                    break
            final = {r.name for r in runs if r.end_time}
            proven = "verify-served[local]" in final and sum(n.startswith("install[local|") for n in final) >= 2
            if (len(final) >= expected and proven) or time.monotonic() > deadline:
                return runs
            time.sleep(1)


def dry_builder():
    """The local builder with its build replaced by a crafted wheel and its smoke test by a pass."""
    from wheelcraft import make_wheel

    from wheelflow.builds.builders import PASSED, SmokeResult
    from wheelflow.builds.builders.local import LocalBuilder

    class DryBuilder(LocalBuilder):
        kind = "local"

        def build(self, cell, source, out, env, log, labels, setup=None) -> None:
            make_wheel(out, name="bench_cell", version=env["WHEELFLOW_VERSION"])
            log(f"cell {cell.name}: dry build (crafted wheel)")

        def smoke(self, cell, wheel, smoke, log, labels, setup=None):
            return SmokeResult(PASSED, "dry run: no smoke test")

    return DryBuilder()


def smoke_before(wheel: Path, smoke: str) -> None:
    """The smoke test as the local builder ran it before uv: `python -m venv` (with pip), then that pip."""
    import subprocess

    with tempfile.TemporaryDirectory() as root:
        venv = Path(root) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        env = {
            **os.environ,
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "VIRTUAL_ENV": str(venv),
        }
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--no-cache-dir", "--quiet", str(wheel)],
            check=True,
            env=env,
            capture_output=True,
        )
        subprocess.run(["/bin/sh", "-c", smoke], check=True, env=env, capture_output=True)


def smoke_env_times(wheels: list[Path], smoke: str) -> dict[str, float]:
    """Mean seconds of one smoke test, each way in turn on the same wheels: as before (venv + its
    pip), today with pip (where uv is missing), today with uv."""
    from wheelflow.builds.builders.local import LocalBuilder
    from wheelflow.config.matrix import Cell
    from wheelflow.core import pyenvs

    real_find_uv = pyenvs.find_uv
    times: dict[str, list[float]] = {"before": [], "pip": [], "uv": []}
    for wheel in wheels:
        for way in times:
            started = time.perf_counter()
            if way == "before":
                smoke_before(wheel, smoke)
            else:
                pyenvs.find_uv = real_find_uv if way == "uv" else (lambda: None)
                result = LocalBuilder().smoke(Cell("bench", {}), wheel, smoke, lambda line: None, {})
                assert result.state == "passed", result.message
            times[way].append(time.perf_counter() - started)
    pyenvs.find_uv = real_find_uv
    return {way: statistics.mean(values) for way, values in times.items()}


def print_smoke_times(wheels: list[Path], smoke: str) -> None:
    means = smoke_env_times(wheels, smoke)
    print(
        f"smoke test per cell (mean of {len(wheels)} wheels, the three ways in turn): before (venv + pip) "
        f"{means['before']:.2f} s, pip fallback {means['pip']:.2f} s, uv {means['uv']:.2f} s -> uv is "
        f"{means['before'] / means['uv']:.1f}x faster than before, {means['pip'] / means['uv']:.1f}x than the pip fallback"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--dry", action="store_true", help="crafted wheels and no-op smoke tests: orchestration only")
    parser.add_argument(
        "--smoke-sample", type=int, default=8, help="wheels smoke-tested with pip and with uv (real mode)"
    )
    parser.add_argument(
        "--smoke-only",
        action="store_true",
        help="only compare smoke environments (before, pip fallback, uv) on crafted wheels",
    )
    parser.add_argument(
        "--build-installer",
        choices=("uv", "pip"),
        default="uv",
        help="who fills each isolated build environment (pip: as before `--installer uv`)",
    )
    args = parser.parse_args()
    if args.build_installer == "pip":
        import wheelflow.builds.buildenv as buildenv

        buildenv.find_uv = lambda: None  # isolated build environments as pypa/build makes them by default

    if args.smoke_only:
        from wheelcraft import make_wheel

        out = Path(tempfile.mkdtemp(prefix="wheelflow-bench-smoke-"))
        wheels = [make_wheel(out, name="bench_cell", version=f"1.0.0+c{n}") for n in range(args.smoke_sample)]
        try:
            print_smoke_times(wheels, "python -c 'import bench_cell'")
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return 0

    from conftest import start_prefect_server

    work = Path(tempfile.mkdtemp(prefix="wheelflow-bench-scale-"))
    atexit.register(shutil.rmtree, work, True)  # after the smoke timings, which read its wheels
    (work / "prefect").mkdir()
    server, api = start_prefect_server(work / "prefect")
    os.environ.update(PREFECT_API_URL=api, WHEELFLOW_HOME=str(work / "home"))
    try:
        project = make_project(work / "bench-cell", args.cells, args.concurrency, 0)
        if args.cells > 256:  # the spec's guard against a typo'd axis: this matrix is wide on purpose
            with (project / "pyproject.toml").open("a") as spec:  # the matrix table is the file's last
                spec.write(f"max-cells = {args.cells}\n")
        import wheelflow.flows.matrix as matrix_step
        from wheelflow.flows.release import release

        if args.dry:
            matrix_step.choose_builder = lambda spec, requested, cells: (dry_builder(), None)
        started = time.perf_counter()
        state = release(project=str(project), version="1.0.0", builder="local", return_state=True)
        wall = time.perf_counter() - started
        ended_at = datetime.datetime.now(datetime.timezone.utc)
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if not state.is_completed():
            print(f"release failed: {state.message}", file=sys.stderr)
            return 1
        report = state.result()
        runs = read_task_runs(str(state.state_details.flow_run_id), 2 * args.cells + args.cells)
    finally:
        from prefect.logging.handlers import APILogWorker

        from wheelflow.index.localindex import stop_index

        APILogWorker.drain_all()  # the run's last logs reach the server before it stops
        server.terminate()
        server.wait(30)
        stop_index(work / "home")  # the release's local index stays up for users; a bench's need not

    build_wall, build_sum = phase(runs, "build[")
    smoke_wall, smoke_sum = phase(runs, "smoke[")
    upload_wall, _ = phase(runs, "upload[")
    prove_wall = phase(runs, "verify-served[")[0] + phase(runs, ("install-and-smoke[", "install["))[0]
    cells = [r for r in runs if r.name.startswith(("build[", "smoke[")) and r.start_time and r.end_time]
    matrix_wall = (
        max(r.end_time for r in cells) - min(r.start_time for r in cells if r.name.startswith("build["))
    ).total_seconds()
    checks = [r for r in runs if r.name.startswith(("verify-served[", "install-and-smoke[", "install[")) and r.end_time]
    after_checks = (ended_at - max(r.end_time for r in checks)).total_seconds() if checks else 0.0
    if len(cells) < 2 * args.cells:
        print(f"note: {2 * args.cells - len(cells)} build/smoke task runs had no end time on the server yet")
    print(
        f"{'dry run' if args.dry else 'real'}: {args.cells} cells, concurrency {args.concurrency}, "
        f"{len(report['files'])} files uploaded, release wall {wall:.1f} s"
    )
    print(
        f"phases (first start to last end): build {build_wall:.1f} s, smoke {smoke_wall:.1f} s "
        f"(overlapping: matrix {matrix_wall:.1f} s), upload {upload_wall:.1f} s, prove {prove_wall:.1f} s, "
        f"after the last check (artifacts, report) {after_checks:.1f} s"
    )
    print(f"sum of task run times: builds {build_sum:.1f} s, smokes {smoke_sum:.1f} s")
    if args.dry:
        print(
            f"orchestration cost per cell: matrix phase {1000 * matrix_wall / args.cells:.1f} ms, whole release "
            f"{1000 * wall / args.cells:.1f} ms (with real uploads and verification of every file)"
        )
        print(f"peak RSS of the release process: {peak_rss_mb:.0f} MB")
        return 0
    ideal = (build_sum + smoke_sum) / args.concurrency + upload_wall + prove_wall
    print(
        f"ideal = Σ(build + smoke) / concurrency + upload + prove = {ideal:.1f} s -> release / ideal "
        f"{wall / ideal:.2f} (1.00 is ideal)"
    )
    wheels = sorted((work / "home" / "index" / "packages").glob("*.whl"))[: args.smoke_sample]
    print_smoke_times(wheels, "python -c 'import bench_cell'")
    print(f"peak RSS of the release process: {peak_rss_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
