"""Scale-out: two Prefect process workers standing in for two GPU machines share one matrix.

Each "machine" has its own working directory and $WHEELFLOW_HOME, and shares nothing with the
release but the Prefect server, the private git remote and the S3 artifact store (moto's standalone
server: no S3-compatible server binary installs here). The build-cell deployment's pull step clones
wheelflow's flows with Prefect's git_clone step; each cell run clones the released project itself
from the private remote at the release commit, with credentials from a Prefect Secret block.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import stop_processes, wheelflow_code_remote
from gitserver import AuthGitServer
from projects import make_matrix_project
from webservers import MotoS3

GIT_USER, GIT_PASSWORD = "releaser", "git-token-for-the-cells-never-logged"


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_two_machines_clone_their_code_and_the_project_and_share_an_s3_store(
    prefect_api, tmp_path: Path, monkeypatch
) -> None:
    from prefect.blocks.system import Secret

    from flows.release import release

    pool = "wheelflow-gpu-under-test"
    subprocess.run(
        [sys.executable, "-m", "prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"],
        check=True,
        capture_output=True,
    )
    code = wheelflow_code_remote(tmp_path / "wheelflow-code")
    # Deployed from a separate process, as an operator would (`deploy` runs its own event loop thread,
    # which sees Prefect's settings from the environment, not this test session's temporary ones).
    subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        from prefect import flow
        from prefect.runner.storage import GitRepository
        flow.from_source(source=GitRepository(url={code.as_uri()!r}), entrypoint="flows/build_cell.py:build_cell").deploy(
            name="cells-under-test", work_pool_name={pool!r}, print_next_steps=False)
        """),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )

    # The project: a private repository on a git server that wants credentials.
    project = make_matrix_project(tmp_path / "matrix", cells=8, concurrency=8, seconds=3)
    _git("init", "--quiet", "-b", "main", cwd=project)
    _git("add", "-A", cwd=project)
    _git("commit", "--quiet", "-m", "release", cwd=project)
    _git("tag", "v1.0.0", cwd=project)
    remotes = tmp_path / "remotes"
    remotes.mkdir()
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(project), str(remotes / "matrix.git")],
        check=True,
        capture_output=True,
    )
    Secret(value={"username": GIT_USER, "password": GIT_PASSWORD}).save("matrix-git", overwrite=True)

    with AuthGitServer(remotes, GIT_USER, GIT_PASSWORD) as git, MotoS3(tmp_path / "moto") as s3:
        s3.make_public_bucket("team-artifacts")
        store = "s3://team-artifacts/wheelflow"
        aws = {
            "AWS_ACCESS_KEY_ID": s3.key,
            "AWS_SECRET_ACCESS_KEY": s3.secret,
            "AWS_ENDPOINT_URL": s3.url,
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
        for name, value in aws.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("WHEELFLOW_HOME", str(tmp_path / "release-home"))
        workers = []
        for n in range(2):
            machine = tmp_path / f"machine{n}"
            machine.mkdir()
            log = open(tmp_path / f"worker{n}.log", "wb")
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "prefect",
                        "worker",
                        "start",
                        "--pool",
                        pool,
                        "--type",
                        "process",
                        "--limit",
                        "4",
                    ],
                    env={
                        **os.environ,
                        **aws,
                        "PREFECT_WORKER_QUERY_SECONDS": "2",
                        "WHEELFLOW_RUNNER_NAME": f"gpu-runner-{n}",
                        "WHEELFLOW_HOME": str(machine / "home"),
                    },
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=machine,
                )
            )
        try:
            state = release(
                project=f"{git.url}matrix.git",
                ref="v1.0.0",
                git_secret="matrix-git",
                builder="local",
                to=["local"],
                cell_deployment="build-cell/cells-under-test",
                artifact_store=store,
                return_state=True,
            )
        finally:
            stop_processes(*workers)
        import s3fs

        stored = s3fs.S3FileSystem(key=s3.key, secret=s3.secret, client_kwargs={"endpoint_url": s3.url}).find(
            "team-artifacts/wheelflow"
        )

    report = json.loads((tmp_path / "release-home" / "reports" / f"{state.state_details.flow_run_id}.json").read_text())
    assert state.is_completed(), report.get("error")
    cells = report["cells"]
    assert len(cells) == 8 and all(c["state"] == "built" and c["smoke"] == "passed" for c in cells)
    assert {c["runner"] for c in cells} == {"gpu-runner-0", "gpu-runner-1"}  # each machine built at least one cell
    wheels = sorted(f"bench_cell-1.0.0+c{n}-py3-none-any.whl" for n in range(1, 9))
    assert sorted(c["wheel"] for c in cells) == wheels
    assert all(f["status"] == "verified" for f in report["files"])
    assert sorted(path.rsplit("/", 1)[-1] for path in stored if path.endswith(".whl")) == wheels  # through S3
    logs = [(tmp_path / f"worker{n}.log").read_text(errors="replace") for n in range(2)]
    for n, log in enumerate(
        logs
    ):  # each machine ran the flow from its own clone (the pull step) and cloned the project
        assert "Deployment step 'git_clone' completed successfully" in log
        assert list((tmp_path / f"machine{n}" / "home" / "checkouts").glob("*/.git"))
    assert not any(GIT_PASSWORD in log for log in logs)
