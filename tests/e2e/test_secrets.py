"""Secrets never leak: a release that succeeds, one that fails and alerts, and a monitor run, all with
a known index password and webhook token; then every log line, artifact, report, state message and
file wheelflow wrote is searched for them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import INDEX_PASSWORD, git, make_project, run_cli
from faultproxy import FaultProxy, Rule

from wheelflow.core.redaction import encodings

WEBHOOK_TOKEN = "T0KEN-w3bh00k-s3cret"  # in the webhook fixture's URL
SMTP_PASSWORD = "smtp-pa55word-s3cret"
API_KEY = "pnu_api-k3y-s3cret-0123456789"
PRINT_ENVIRONMENT = "import os, sys; print(sorted(os.environ.items()), file=sys.stderr)"


def _everything_prefect_recorded(flow_run_ids: list[str]) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    from wheelflow.adapters.prefect_api import task_histories

    texts: list[str] = []
    with get_client(sync_client=True) as client:
        for run_id in flow_run_ids:
            run = client.read_flow_run(run_id)
            texts += [json.dumps(run.parameters), run.state.message or ""]
            texts += [
                log.message
                for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            ]
            texts += [
                json.dumps(a.data) + (a.description or "")
                for a in client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
                )
            ]
            texts += [json.dumps(h.json()) for h in task_histories(client, run.id)]
    return texts


@pytest.mark.case(
    "secret",
    "an index password and a webhook token, through a release, a failed release with its alert, and a monitor run",
    "found in no log line, artifact, report, state message or file",
)
def test_no_secret_in_any_log_artifact_report_state_or_file(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api, webhook, monkeypatch
) -> None:
    from flows.monitor import MonitoredProject, sync_monitor

    # Every secret wheelflow may hold is in its environment: an SMTP password for email alerts (to a
    # port where nothing listens), a Prefect API key (the open-source server ignores it).
    monkeypatch.setenv("WHEELFLOW_ALERT_EMAIL_TO", "releases@example.invalid")
    monkeypatch.setenv("WHEELFLOW_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("WHEELFLOW_SMTP_PORT", "9")
    monkeypatch.setenv("WHEELFLOW_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("PREFECT_API_KEY", API_KEY)
    outputs: list[str] = []
    runs: list[str] = []
    good = make_project(
        tmp_path / "good", index_url=index.simple_url, smoke=f"python -c '{PRINT_ENVIRONMENT}; import tiny_pkg'"
    )
    # Code we do not control prints its whole environment: the build backend's setup.py, and the smoke command.
    (good / "setup.py").write_text(f"{PRINT_ENVIRONMENT}\nfrom setuptools import setup\nsetup()\n")
    result = run_cli("release", str(good), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    outputs += [result.stdout, result.stderr]
    runs.append(json.loads(result.stdout)["flow_run_id"])

    with FaultProxy(index.url) as proxy:  # an upload refused: the error path, its retries and the alert
        proxy.rules += [
            Rule("POST", 503, "Service Unavailable"),
            Rule("POST", 403, "Invalid or non-existent authentication information."),
        ]
        bad = make_project(tmp_path / "bad", version="2.0.0", index_url=proxy.url + "simple/")
        result = run_cli("release", str(bad), "--json")
    assert result.returncode == 1
    outputs += [result.stdout, result.stderr]
    runs.append(json.loads(result.stdout)["flow_run_id"])
    assert len(webhook.received) == 1  # the alert went out: the token was used, and must not show

    git(good, "init", "-q")
    git(good, "add", ".")
    git(good, "commit", "-q", "-m", "release")
    git(good, "tag", "v1.0.0")
    state = sync_monitor(
        projects=[MonitoredProject(name="tiny-pkg", repo=str(good), indexes=[index.simple_url])], return_state=True
    )
    runs.append(str(state.state_details.flow_run_id))

    texts = outputs + _everything_prefect_recorded(runs)
    texts += [
        p.read_text(errors="replace")
        for p in home.rglob("*")
        if p.is_file() and p.stat().st_size < 10**6 and p.suffix not in (".whl", ".gz")
    ]
    assert len(texts) > 50  # logs, artifacts, reports and states were all read
    assert any("SOURCE_DATE_EPOCH" in t for t in texts)  # the printed environments are among them
    for secret in (INDEX_PASSWORD, WEBHOOK_TOKEN, SMTP_PASSWORD, API_KEY):
        leaks = [t[max(0, t.find(secret) - 80) : t.find(secret) + 80] for t in texts if secret in t]
        assert leaks == [], f"{secret[:6]}… leaked: {leaks[:3]}"


# Code we do not control hunting for credentials on the same host, as a setup.py and as the smoke
# command of a real release: every process's start environment and command line, and wheelflow's
# own /proc entries, each dump kept for the test to search (an attacker would send it elsewhere).
HUNTER = """
import glob, os, sys
out = {dumps!r}
os.makedirs(out, exist_ok=True)
found, refused = [], []
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        with open(path, "rb") as f:
            found.append(path.encode() + b"\\n" + f.read())
    except OSError:
        refused.append(path)
with open(os.path.join(out, f"{{os.getpid()}}.dump"), "wb") as f:
    f.write(b"\\n".join(found))
with open(os.path.join(out, f"{{os.getpid()}}.refused"), "w") as f:
    f.write("\\n".join(refused))
print(f"hunter read {{len(found)}} /proc entries, refused {{len(refused)}}", file=sys.stderr)
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv drops root's capabilities")
@pytest.mark.case(
    "secret",
    "a setup.py and a smoke command of a real release, run without capabilities as in most CI, read "
    "/proc/*/environ and /proc/*/cmdline",
    "no credential in anything they read, nor in the output, the home or the Prefect database, in any encoding",
)
def test_a_release_s_setup_py_and_smoke_command_find_no_credential_in_proc(
    tmp_path: Path, index, fresh_prefect_server, monkeypatch
) -> None:
    _, prefect_home = fresh_prefect_server
    home = tmp_path / "wheelflow-home"
    dumps = tmp_path / "dumps"
    hunter = tmp_path / "hunter.py"
    hunter.write_text(HUNTER.format(dumps=str(dumps)))
    project = make_project(tmp_path / "proj", index_url=index.simple_url, smoke=f"python {hunter}")
    (project / "setup.py").write_text(f"exec(open({str(hunter)!r}).read())\nfrom setuptools import setup\nsetup()\n")
    secrets = {
        "WHEELFLOW_STAGING_USERNAME": "releaser",
        "WHEELFLOW_STAGING_PASSWORD": INDEX_PASSWORD,
        "WHEELFLOW_SMTP_PASSWORD": SMTP_PASSWORD,
        "PREFECT_API_KEY": API_KEY,
    }
    release = subprocess.run(
        [shutil.which("setpriv"), "--bounding-set=-all", "--inh-caps=-all",
         str(Path(sys.executable).with_name("wheelflow")), "release", str(project), "--builder", "local", "--json"],
        env={**os.environ, **secrets, "WHEELFLOW_HOME": str(home)},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert release.returncode == 0, release.stderr[-3000:]
    assert len(list(dumps.glob("*.dump"))) >= 2  # the build backend and the smoke command both hunted
    assert "hunter read " in release.stderr or "hunter read " in json.dumps(
        _everything_prefect_recorded([json.loads(release.stdout)["flow_run_id"]])
    )
    places = {p: p.read_bytes() for p in dumps.glob("*.dump")}
    places |= {p: p.read_bytes() for root in (home, prefect_home) for p in root.rglob("*") if p.is_file()}
    places[Path("stdout+stderr")] = (release.stdout + release.stderr).encode()
    for secret in (INDEX_PASSWORD, SMTP_PASSWORD, API_KEY):
        for form in (secret, *encodings(secret)):
            leaks = [str(p) for p, data in places.items() if form.encode() in data]
            assert leaks == [], f"{form[:8]}… readable in {leaks[:3]}"
