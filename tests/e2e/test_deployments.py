"""Deployments against a real `prefect server`: prefect deploy --all, wheelflow serve, trigger, status,
a schedule firing on its own, and two worker processes sharing a matrix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cistep import WORKFLOW, ci_step, tagged_repository, workflow
from conftest import (
    INDEX_PASSWORD,
    INDEX_USER,
    REPO,
    git,
    make_project,
    run_cli,
    start_prefect_server,
    stop_processes,
    wait_for,
)
from faultproxy import FaultProxy, Rule

from wheelflow.index.localindex import PypiServer, ensure_htpasswd

WHEEL = "tiny_pkg-1.0.0-py3-none-any.whl"


def test_prefect_deploy_all_registers_the_six_deployments_as_deployments_code_defines_them(
    prefect_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    from wheelflow.deployments import project_deployments

    for pool in ("wheelflow-control", "wheelflow-gpu"):
        subprocess.run(
            [sys.executable, "-m", "prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], capture_output=True, text=True, cwd=REPO
    )
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    names = [
        "release/release",
        "release/nightly",
        "sync-monitor/sync-monitor",
        "backfill/backfill",
        "upstream-check/upstream-check",
        "build-cell/build-cell",
    ]
    with get_client(sync_client=True) as client:
        deployments = {name: client.read_deployment_by_name(name) for name in names}
        try:
            pools = {name: d.work_pool_name for name, d in deployments.items()}
            assert pools == {
                "release/release": "wheelflow-control",
                "release/nightly": "wheelflow-control",
                "sync-monitor/sync-monitor": "wheelflow-control",
                "backfill/backfill": "wheelflow-control",
                "upstream-check/upstream-check": "wheelflow-control",
                "build-cell/build-cell": "wheelflow-gpu",
            }
            crons = {name: [s.schedule.cron for s in d.schedules] for name, d in deployments.items()}
            assert crons["sync-monitor/sync-monitor"] == ["*/15 * * * *"] and crons["release/nightly"] == ["0 3 * * *"]
            assert crons["upstream-check/upstream-check"] == ["0 6 * * *"]
            assert deployments["release/nightly"].parameters["dev"] is True
            # Workers clone the code; the names of the Variables and the token's block are stored, never a value.
            (pull,) = deployments["release/release"].pull_steps
            assert pull["wheelflow.deployments.pull.clone_wheelflow"] == {
                "id": "clone-wheelflow",
                "repository_variable": "wheelflow_code_repository",
                "ref_variable": "wheelflow_code_ref",
                "token_block": "wheelflow-git-token",
            }
            # The UI form: typed and described parameters.
            schema = deployments["release/release"].parameter_openapi_schema["properties"]
            assert schema["project"]["type"] == "string" and "git URL" in schema["project"]["description"]
            assert "version" in schema and "to" in schema and "ref" in schema

            # What `wheelflow serve` serves (deployments/ as code) is what prefect.yaml registers.
            monkeypatch.chdir(REPO)  # entrypoints are paths relative to the project root, as prefect deploy writes them

            def schedules(items):
                return [(s.schedule.cron, s.schedule.timezone) for s in items]

            for code in project_deployments():
                registered = deployments[f"{code.flow_name}/{code.name}"]
                assert (code.entrypoint, code.work_pool_name, code.parameters, code.description) == (
                    registered.entrypoint,
                    registered.work_pool_name,
                    registered.parameters,
                    registered.description,
                )
                assert schedules(code.schedules) == schedules(registered.schedules), code.name
            assert len(project_deployments()) == len(names)
        finally:  # the served deployments below reuse these names
            for deployment in deployments.values():
                client.delete_deployment(deployment.id)


# -- one `wheelflow serve` process for the module -------------------------------------------------


@pytest.fixture(scope="module")
def staging(tmp_path_factory):
    root = tmp_path_factory.mktemp("staging")
    ensure_htpasswd(root / "htpasswd", INDEX_USER, INDEX_PASSWORD)
    with PypiServer(root / "served", root / "htpasswd", log_file=root / "pypiserver.log") as server:
        yield server


@pytest.fixture(scope="module")
def served(prefect_api, staging, tmp_path_factory):
    """`wheelflow serve` of release and a sync-monitor that runs every 30 s (the shipped one: every 15 min).
    More often, its runs pile up on a loaded machine and take the served runner's slots from the releases."""
    root = tmp_path_factory.mktemp("serve")
    repo = root / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git(repo, "commit", "-q", "--allow-empty", "-m", "first")
    git(repo, "tag", "v0.1.0")  # tagged now: not served yet, but within its grace period
    projects = root / "monitored.json"
    projects.write_text(json.dumps([{"name": "just-tagged", "repo": str(repo), "indexes": [staging.simple_url]}]))
    env = {
        **os.environ,
        "WHEELFLOW_HOME": str(root / "home"),
        "WHEELFLOW_STAGING_USERNAME": INDEX_USER,
        "WHEELFLOW_STAGING_PASSWORD": INDEX_PASSWORD,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    log = open(root / "serve.log", "wb")
    exe = str(Path(sys.executable).with_name("wheelflow"))
    proc = subprocess.Popen(
        [
            exe,
            "serve",
            "--only",
            "release",
            "--only",
            "sync-monitor",
            "--monitor-projects",
            str(projects),
            "--monitor-interval",
            "30",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    from prefect.client.orchestration import get_client

    def registered():
        if proc.poll() is not None:
            pytest.fail(f"wheelflow serve exited: {(root / 'serve.log').read_text()[-3000:]}")
        with get_client(sync_client=True) as client:
            return len(client.read_deployments()) >= 2 and client.read_deployment_by_name("release/release")

    wait_for(registered, 60, "wheelflow serve to register its deployments")
    yield root
    stop_processes(proc)


def _trigger(*args: str) -> tuple[int, dict, str]:
    result = run_cli("trigger", "release", "--wait", "--timeout", "300", "--json", *args)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


@pytest.mark.case(
    "fault",
    "the index answers 503 to the first two uploads",
    "retried with backoff: uploaded once, Completed, 3 attempts in the history",
)
def test_trigger_wait_exits_0_and_status_shows_each_retry(served, staging, tmp_path: Path) -> None:
    with FaultProxy(staging.url) as proxy:
        proxy.rules.append(Rule("POST", 503, "Service Unavailable", times=2))  # the first two uploads fail
        project = make_project(tmp_path / "good", index_url=proxy.url + "simple/")
        code, outcome, stderr = _trigger("--param", f"project={project}")
    assert code == 0, stderr[-3000:]
    assert outcome["state"] == "Completed" and outcome["url"].endswith(f"/runs/flow-run/{outcome['flow_run_id']}")
    assert "wheelflow: started " in stderr and ": Running" in stderr and ": Completed" in stderr

    status = run_cli("status", outcome["flow_run_id"], "--json")
    assert status.returncode == 0, status.stderr
    verdict = json.loads(status.stdout)
    assert (verdict["state"], verdict["exit_code"], verdict["reason"]) == ("Completed", 0, None)
    tasks = {t["name"]: t for t in verdict["tasks"]}
    upload = tasks[f"upload[{WHEEL}→staging]"]
    assert (upload["state"], upload["attempts"]) == ("Completed", 3)
    retries = [s for s in upload["history"] if s["name"] == "AwaitingRetry"]
    assert len(retries) == 2 and all("HTTP 503 Service Unavailable" in s["message"] for s in retries)
    assert [s["name"] for s in upload["history"]][-1] == "Completed"
    assert tasks["verify-served[staging]"]["state"] == "Completed"

    table = run_cli("status", outcome["flow_run_id"])
    assert table.returncode == 0 and "AwaitingRetry" in table.stdout


@pytest.mark.case("fault", "the installed package fails its smoke test", "trigger --wait exits 1")
def test_trigger_wait_fails_when_verification_fails(served, staging, tmp_path: Path) -> None:
    # Its own version: the module's staging index already serves the good 1.0.0 (another sdist).
    project = make_project(tmp_path / "bad", version="1.0.9", index_url=staging.simple_url)
    text = (project / "pyproject.toml").read_text().replace("answer() == 42", "answer() == 41")
    (project / "pyproject.toml").write_text(text)  # the smoke test of the installed package fails
    code, outcome, stderr = _trigger("--param", f"project={project}")
    assert code == 1 and outcome["state"] == "Failed"
    assert ": Failed" in stderr.splitlines()[-1] or any(": Failed" in line for line in stderr.splitlines())
    # The verdict says which step failed, in the terminal and in --json.
    assert [c["check"] for c in outcome["failed_checks"]] == ["install + smoke on staging"]
    assert "wheelflow: failed: install + smoke on staging: " in stderr

    status = run_cli("status", outcome["flow_run_id"])
    assert status.returncode == 1  # a failed run is not a green CI step
    reason = [line for line in status.stderr.splitlines() if line.startswith("wheelflow: flow run ")]
    assert len(reason) == 1 and "Failed: " in reason[0] and "smoke" in reason[0], status.stderr[-3000:]
    assert "wheelflow: install-and-smoke[staging]: Failed after 1 attempt(s)" in status.stderr


@pytest.mark.case(
    "bad input",
    "trigger: a misspelt parameter (versoin=1.0)",
    "exit 2 before any run starts, naming it with a did-you-mean; the API refuses it too (409)",
)
def test_a_misspelt_parameter_is_refused_by_trigger_and_by_the_api(served, prefect_api, tmp_path: Path) -> None:
    import httpx
    from prefect.client.orchestration import get_client

    result = run_cli("trigger", "release", "--param", f"project={tmp_path}", "--param", "versoin=1.0", "--json")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "wheelflow: error: spec error: --param versoin: deployment 'release' has no parameter 'versoin'; "
        "fix: did you mean 'version'?"
    )
    assert json.loads(result.stdout) == {
        "ok": False,
        "error": result.stderr.strip().splitlines()[-1][len("wheelflow: error: ") :],
        "exit_code": 2,
    }

    # CI with curl only: the served deployment's schema refuses unknown names, so no run starts.
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("release/release")
        runs_before = len(client.read_flow_runs())
    answer = httpx.post(
        f"{prefect_api}/deployments/{deployment.id}/create_flow_run",
        json={"parameters": {"project": str(tmp_path), "versoin": "1.0"}},
    )
    assert answer.status_code == 409 and "versoin" in answer.text
    with get_client(sync_client=True) as client:
        assert len(client.read_flow_runs()) == runs_before


def test_string_parameters_stay_strings_and_the_verdict_names_each_file(served, staging, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "one-oh", name="str-pkg", version="1.0", index_url=staging.simple_url
    )  # 1.0 == 1.0.0: its own name
    # "1.0" would be the number 1.0 if read as JSON; "staging" is one item of the list parameter `to`.
    code, outcome, stderr = _trigger("--param", f"project={project}", "--param", "version=1.0", "--param", "to=staging")
    assert code == 0, stderr[-3000:]
    assert {(f["file"], f["target"], f["upload"]) for f in outcome["files"]} == {
        ("str_pkg-1.0-py3-none-any.whl", "staging", "uploaded"),
        ("str_pkg-1.0.tar.gz", "staging", "uploaded"),
    }
    assert "wheelflow: str-pkg 1.0:" in stderr
    assert "wheelflow:   str_pkg-1.0-py3-none-any.whl → staging: uploaded, proof: verified, sha256 " in stderr


@pytest.mark.case(
    "bad input", "trigger: a deployment that does not exist (relase)", "exit 2, one line with a did-you-mean"
)
def test_trigger_names_a_missing_deployment_with_a_did_you_mean(served) -> None:
    result = run_cli("trigger", "relase", "--json")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "wheelflow: error: spec error: DEPLOYMENT: no deployment 'relase' on this Prefect server; "
        "fix: did you mean 'release'?"
    )
    assert json.loads(result.stdout)["exit_code"] == 2


def test_the_scheduled_sync_monitor_fires_on_its_own(served) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    def completed_run():
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["sync-monitor"]))
            )
            return [r for r in runs if r.state and r.state.is_completed() and r.auto_scheduled]

    (run, *_) = wait_for(completed_run, 120, "a scheduled sync-monitor run to complete")
    assert run.parameters["projects"][0]["name"] == "just-tagged"


def test_a_release_on_a_postgresql_backed_prefect_server(
    postgres_url, tmp_path: Path, home: Path, index, index_credentials
) -> None:
    import asyncio

    import asyncpg

    server_home = tmp_path / "prefect-pg"
    server_home.mkdir()
    proc, url = start_prefect_server(server_home, {"PREFECT_API_DATABASE_CONNECTION_URL": postgres_url})
    try:
        project = make_project(tmp_path / "p", index_url=index.simple_url)
        result = run_cli("release", str(project), "--json", env={"PREFECT_API_URL": url})
        assert result.returncode == 0, result.stderr[-3000:]
        run_id = json.loads(result.stdout)["flow_run_id"]
        status = run_cli("status", run_id, "--json", env={"PREFECT_API_URL": url})
        names = {t["name"]: t["state"] for t in json.loads(status.stdout)["tasks"]}
        assert names[f"upload[{WHEEL}→staging]"] == "Completed" and names["verify-served[staging]"] == "Completed"
    finally:
        stop_processes(proc)

    async def stored_state() -> str:
        connection = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return await connection.fetchval("select state_name from flow_run where id = $1", uuid.UUID(run_id))
        finally:
            await connection.close()

    assert asyncio.run(stored_state()) == "Completed"  # the run lives in PostgreSQL, not SQLite


# -- the CI example's shell step, run as GitHub Actions would run it --------------------------------


def test_the_ci_example_s_timeouts_let_the_script_report_and_cancel() -> None:
    (job,) = workflow()["jobs"].values()
    (step,) = [s for s in job["steps"] if "run" in s]
    assert int(step["env"]["WAIT_SECONDS"]) + 5 * 60 <= job["timeout-minutes"] * 60
    assert "pip install" not in WORKFLOW.read_text()  # a trigger-only job installs nothing


def test_the_ci_example_releases_the_pushed_tag_with_curl_only(served, staging, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    command, env = ci_step(**tagged_repository(tmp_path, staging, "1.0"))
    env["POLL_SECONDS"] = "1"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_id = result.stdout.split("started flow run ")[1].split()[0]
    from wheelflow.adapters.prefect_api import release_verdict

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        verdict = release_verdict(client, run.id)
    # The tag goes in as `ref`; the flow found version 1.0 (a string, from the tag and the version file).
    assert run.parameters == {"project": f"{env['GITHUB_SERVER_URL']}/owner/ci-pkg.git", "ref": "v1.0"}
    assert {f["file"] for f in verdict["files"]} == {"ci_pkg-1.0-py3-none-any.whl", "ci_pkg-1.0.tar.gz"}
    assert f"flow run {run_id}: Completed" in result.stdout


@pytest.mark.case(
    "fault",
    "the CI job running the example workflow is cancelled (SIGTERM)",
    "the script cancels the flow run before it exits",
)
def test_cancelling_the_ci_job_cancels_the_flow_run(served, staging, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    command, env = ci_step(
        **tagged_repository(tmp_path, staging, "2.0", smoke="python -c 'import time; time.sleep(600)'")
    )
    env["POLL_SECONDS"] = "1"
    out = tmp_path / "stdout"
    with open(out, "w") as stdout:
        proc = subprocess.Popen(command, env=env, stdout=stdout, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: ": Running" in out.read_text(), 300, "the flow run to start running")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 3  # as trigger --wait on SIGTERM: the run was cancelled
    finally:
        if proc.poll() is None:
            proc.kill()
    run_id = out.read_text().split("started flow run ")[1].split()[0]
    assert "::warning::the CI job was cancelled: cancelling flow run" in out.read_text()

    def cancelled():
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
        return state.name == "Cancelled" and state

    wait_for(cancelled, 300, "the served runner to cancel the flow run")


def test_the_pull_step_clones_the_code_at_the_configured_ref(prefect_api, tmp_path: Path, monkeypatch) -> None:
    """prefect.yaml's pull step as a worker runs it: Variables and the Secret block resolved on the server."""
    import asyncio

    import yaml
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.deployments.steps.core import StepExecutionError, run_steps
    from prefect.variables import Variable

    work = tmp_path / "code"
    work.mkdir()
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "marker").write_text("v2\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "two")
    git(work, "tag", "v2")
    (work / "marker").write_text("later\n")
    git(work, "commit", "-q", "-am", "after the tag")
    Variable.set("wheelflow_code_repository", work.as_uri(), overwrite=True)
    Variable.set("wheelflow_code_ref", "v2", overwrite=True)
    Secret(value="").save("wheelflow-git-token", overwrite=True)  # a public repository: no token
    monkeypatch.chdir(tmp_path)
    steps = yaml.safe_load((REPO / "prefect.yaml").read_text())["pull"]
    output = asyncio.run(run_steps(steps))
    assert (Path(output["directory"]) / "marker").read_text() == "v2\n"  # the tag, not the branch's head

    # Without the block (a server nobody ran `wheelflow setup` on), the step says which and how to fix it.
    with get_client(sync_client=True) as client:
        client.delete_block_document(client.read_block_document_by_name("wheelflow-git-token", "secret").id)
    with pytest.raises(StepExecutionError) as failed:
        asyncio.run(run_steps(steps))
    assert str(failed.value.__cause__) == (
        "crashed before its first task: the Secret block wheelflow-git-token does not exist; fix: run `wheelflow "
        "setup --code-repository URL --code-ref REF` against this server (it makes an empty one for a public "
        "repository; --git-token-env VAR for a private one)"
    )
