"""Scale-out: two Prefect process workers standing in for two GPU machines share one matrix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REPO, stop_processes
from projects import make_matrix_project


def test_two_workers_share_an_eight_cell_matrix(prefect_api, tmp_path: Path, monkeypatch) -> None:
    from flows.release import release

    pool = "wheelflow-gpu-under-test"
    subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"],
                   check=True, capture_output=True)
    # Deployed from a separate process, as an operator would (`deploy` runs its own event loop thread,
    # which sees Prefect's settings from the environment, not this test session's temporary ones).
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from prefect import flow
        flow.from_source(source={str(REPO)!r}, entrypoint="flows/build_cell.py:build_cell").deploy(
            name="cells-under-test", work_pool_name={pool!r}, print_next_steps=False)
        """)], check=True, capture_output=True, cwd=REPO)
    home = tmp_path / "home"
    monkeypatch.setenv("WHEELFLOW_HOME", str(home))
    workers = []
    for n in range(2):
        log = open(tmp_path / f"worker{n}.log", "wb")
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process", "--limit", "4"],
            env={**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "2", "WHEELFLOW_RUNNER_NAME": f"gpu-runner-{n}",
                 "WHEELFLOW_HOME": str(tmp_path / f"runner{n}-home")},  # two machines' own caches
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path))
    try:
        project = make_matrix_project(tmp_path / "matrix", cells=8, concurrency=8, seconds=3)
        state = release(project=str(project), version="1.0.0", builder="local", to=["local"],
                        cell_deployment="build-cell/cells-under-test", artifact_store=(tmp_path / "store").as_uri(),
                        return_state=True)
    finally:
        stop_processes(*workers)
    report = json.loads((home / "reports" / f"{state.state_details.flow_run_id}.json").read_text())
    assert state.is_completed(), report.get("error")
    cells = report["cells"]
    assert len(cells) == 8 and all(c["state"] == "built" and c["smoke"] == "passed" for c in cells)
    assert {c["runner"] for c in cells} == {"gpu-runner-0", "gpu-runner-1"}  # each worker built at least one cell
    assert sorted(c["wheel"] for c in cells) == sorted(f"bench_cell-1.0.0+c{n}-py3-none-any.whl" for n in range(1, 9))
    assert all(f["status"] == "verified" for f in report["files"])
