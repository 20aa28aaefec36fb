"""Overlap and bounded parallelism: smoke tests start while cells are still building, and uploads to
a target overlap up to its upload-concurrency. Ordering only, never timing."""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from conftest import wait_for
from faultproxy import FaultProxy
from projects import make_matrix_project

from wheelflow.core.overlap import overlap_builds_and_smokes


def _schedule(cells: int, concurrency: int, broken: set[int] = frozenset()) -> tuple[list, list[str]]:
    """Run the scheduler over instant jobs; the order in which jobs started, e.g. ["build 0", "smoke 0"]."""
    started: list[str] = []
    lock = threading.Lock()

    def job(kind: str, n: int) -> Future:
        with lock:
            started.append(f"{kind} {n}")
        future: Future = Future()
        future.set_result(n)
        return future

    outcomes = overlap_builds_and_smokes(
        list(range(cells)),
        concurrency,
        build=lambda n: job("build", n),
        built=lambda n, f: {"cell": n, "ok": n not in broken},
        ok=lambda o: o["ok"],
        smoke=lambda o: job("smoke", o["cell"]),
        smoked=lambda o, f: {**o, "smoked": True},
    )
    return outcomes, started


def test_a_built_cell_is_smoke_tested_before_the_next_build_starts() -> None:
    outcomes, started = _schedule(cells=3, concurrency=1)
    assert started == ["build 0", "smoke 0", "build 1", "smoke 1", "build 2", "smoke 2"]
    assert all(o["smoked"] for o in outcomes)


def test_no_smoke_test_starts_after_a_build_failed() -> None:
    outcomes, started = _schedule(cells=4, concurrency=1, broken={1})
    assert started == [
        "build 0",
        "smoke 0",
        "build 1",
        "build 2",
        "build 3",
    ]  # every cell still builds: all errors shown
    assert [o.get("smoked", False) for o in outcomes] == [True, False, False, False]


def test_never_more_jobs_at_once_than_the_concurrency() -> None:
    running, most, lock = 0, 0, threading.Lock()
    gate = threading.Barrier(2, timeout=30)  # two jobs must be running together, or this fails

    with ThreadPoolExecutor(8) as pool:

        def job(_: object) -> Future:
            def work() -> None:
                nonlocal running, most
                with lock:
                    running += 1
                    most = max(most, running)
                try:
                    gate.wait()
                except threading.BrokenBarrierError:
                    pass
                with lock:
                    running -= 1

            return pool.submit(work)

        overlap_builds_and_smokes(
            list(range(6)), 2, build=job, built=lambda n, f: n, ok=lambda o: True, smoke=job, smoked=lambda o, f: o
        )
    assert most == 2


def test_smokes_overlap_builds_and_uploads_overlap_within_the_limit(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.release import release

    project = make_matrix_project(tmp_path / "matrix", cells=4, concurrency=2, seconds=0)
    with FaultProxy(index.url) as proxy:
        proxy.gather, proxy.gather_skip = 2, 1  # the first upload goes alone; then two must be in flight at once
        (project / "pyproject.toml").write_text(
            (project / "pyproject.toml").read_text()
            + (
                f'\n[tool.wheelflow.targets.staging]\nindex = "{proxy.url}simple/"\nverify-timeout = 5\n'
                "upload-concurrency = 2\n"
            )
        )
        state = release(project=str(project), version="1.0.0", builder="local", return_state=True)
    report = json.loads((home / "reports" / f"{state.state_details.flow_run_id}.json").read_text())
    assert state.is_completed(), report.get("error")
    assert [f["upload"] for f in report["files"]] == ["uploaded"] * 4
    assert proxy.statuses("POST") == [200] * 4
    assert proxy.max_in_flight == 2  # overlapping, and never more than the target's limit

    def final_task_runs() -> dict | None:  # the server records task states a moment after the run
        with get_client(sync_client=True) as client:
            runs = {
                r.name: r
                for r in client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
                )
            }
        cells = [r for name, r in runs.items() if name.startswith(("build[", "smoke[")) and r.end_time]
        return runs if len(cells) == 8 else None

    runs = wait_for(final_task_runs, 60, "the cells' 8 task runs to be final")
    builds = [r for name, r in runs.items() if name.startswith("build[")]
    smokes = [r for name, r in runs.items() if name.startswith("smoke[")]
    # With two slots and smoke tests preferred over waiting builds, a smoke test starts before the
    # last build has even started (all smokes after all builds was the old way).
    assert min(s.start_time for s in smokes) < max(b.start_time for b in builds)
