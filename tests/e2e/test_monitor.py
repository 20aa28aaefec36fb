"""The sync monitor: git tags against what a real pypiserver serves, replayed in time with --as-of.

Upload times are read the way the monitor reads them from an index without PEP 700: the file's
Last-Modified header. Uploads go through real twine; the stored file's mtime is then set to the
chosen upload day, which is what pypiserver serves as Last-Modified.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import INDEX_PASSWORD, INDEX_USER, git, run_cli
from wheelcraft import make_sdist, make_wheel

from wheelflow.core.errors import SpecError
from wheelflow.index.localindex import free_port
from wheelflow.index.simple_api import ServedFile
from wheelflow.ops.incidents import OPENED, REMINDER, RESOLVED, plan_notices
from wheelflow.ops.monitor import (
    HASH_MISMATCH,
    INCOMPLETE,
    LATE,
    MISSING,
    OK,
    assess,
    expectation_regex,
    write_manifest,
)
from wheelflow.source.gittags import ReleaseTag, release_tags

WHEEL = "{name}-{version}-py3-none-any.whl"
SDIST = "{name}-{version}.tar.gz"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# -- plain functions ------------------------------------------------------------------------------


def test_expected_patterns_match_any_spelling_of_the_name() -> None:
    wheel = expectation_regex(WHEEL, "Tiny.Pkg", "1.0.0")
    assert wheel.match("tiny_pkg-1.0.0-py3-none-any.whl")
    assert not wheel.match("tiny_pkg-1.0.01-py3-none-any.whl")
    assert expectation_regex(SDIST, "tiny-pkg", "1.0.0").match("Tiny-Pkg-1.0.0.tar.gz")
    assert expectation_regex("{name}-{version}-*.whl", "tiny-pkg", "2.0").match(
        "tiny_pkg-2.0-cp311-cp311-linux_x86_64.whl"
    )
    with pytest.raises(SpecError, match=r"^spec error: --expect: '\{name\}-\{ver\}.whl' names \{ver\}; fix: use"):
        expectation_regex("{name}-{ver}.whl", "tiny-pkg", "1.0")


def test_a_matrix_of_variant_wheels_expects_no_plain_wheel() -> None:
    from wheelflow.ops.monitor import expectations_from_spec

    assert expectations_from_spec(["wheel"], ["c2", "c1"]) == ("{name}-{version}+c1-*.whl", "{name}-{version}+c2-*.whl")
    assert expectations_from_spec(["sdist", "wheel"], ["c1", None]) == (
        "{name}-{version}.tar.gz",
        "{name}-{version}-*.whl",
        "{name}-{version}+c1-*.whl",
    )
    assert expectations_from_spec(["wheel"]) == ("{name}-{version}-*.whl",)


def _served(name: str, sha: str = "a" * 64) -> ServedFile:
    return ServedFile(filename=name, url=f"http://127.0.0.1/packages/{name}", sha256=sha)


TAG = ReleaseTag("v1.0.0", "1.0.0", utc("2024-01-01T00:00:00"))
BOTH = (WHEEL, SDIST)


def _assess(files: dict[str, str], as_of: str, grace_hours: float = 24, manifest: dict | None = None, sha="a" * 64):
    return assess(
        project="tiny-pkg",
        index="staging",
        tag=TAG,
        served=[_served(n, sha) for n in files],
        times={n: utc(t) for n, t in files.items()},
        expect=BOTH,
        manifest=manifest,
        as_of=utc(as_of),
        grace=timedelta(hours=grace_hours),
    )


def test_statuses_from_what_is_served_and_when() -> None:
    wheel, sdist = "tiny_pkg-1.0.0-py3-none-any.whl", "tiny_pkg-1.0.0.tar.gz"
    on_time = _assess({wheel: "2024-01-01T02:00:00", sdist: "2024-01-01T03:00:00"}, "2024-02-01T00:00:00")
    assert (on_time.status, on_time.lag_hours, on_time.missing, on_time.overdue) == (OK, 2.0, [], False)

    late = _assess({wheel: "2024-01-31T00:00:00", sdist: "2024-01-31T00:00:00"}, "2024-02-01T00:00:00")
    assert (late.status, late.lag_hours) == (LATE, 720.0)

    half = _assess({wheel: "2024-01-01T02:00:00"}, "2024-02-01T00:00:00")
    assert (half.status, half.missing, half.overdue) == (INCOMPLETE, [sdist], True)

    nothing = _assess({}, "2024-01-01T12:00:00")
    assert (nothing.status, nothing.overdue, nothing.first_upload_time) == (MISSING, False, None)  # within grace
    assert _assess({}, "2024-01-02T00:00:01").overdue

    # Replayed before the upload, the same files do not count yet.
    replay = _assess({wheel: "2024-01-31T00:00:00", sdist: "2024-01-31T00:00:00"}, "2024-01-15T00:00:00")
    assert (replay.status, replay.overdue, replay.lag_hours) == (MISSING, True, None)

    changed = _assess(
        {wheel: "2024-01-01T02:00:00", sdist: "2024-01-01T02:00:00"},
        "2024-02-01T00:00:00",
        manifest={wheel: "b" * 64, sdist: "a" * 64},
    )
    assert (changed.status, changed.mismatched, changed.problem) == (HASH_MISMATCH, [wheel], True)


def test_an_incident_alerts_once_reminds_at_the_interval_then_resolves_once() -> None:
    missing = _assess({}, "2024-01-03T00:00:00")
    fixed = _assess(
        {"tiny_pkg-1.0.0-py3-none-any.whl": "2024-01-03T01:00:00", "tiny_pkg-1.0.0.tar.gz": "2024-01-03T01:00:00"},
        "2024-01-04T00:00:00",
    )
    every = timedelta(hours=24)
    t0 = utc("2024-01-03T00:00:00")
    state, notices = plan_notices({}, [missing], t0, every)
    assert [n.kind for n in notices] == [OPENED]
    state, notices = plan_notices(state, [missing], t0 + timedelta(hours=1), every)
    assert notices == []
    state, notices = plan_notices(state, [missing], t0 + timedelta(hours=25), every)
    assert [n.kind for n in notices] == [REMINDER]
    state, notices = plan_notices(state, [fixed], t0 + timedelta(hours=26), every)
    assert [n.kind for n in notices] == [RESOLVED] and state == {}
    assert plan_notices(state, [fixed], t0 + timedelta(hours=27), every) == ({}, [])


# -- a real repository and a real index -----------------------------------------------------------


def make_tagged_repo(root: Path, tags: dict[str, tuple[str, bool]]) -> Path:
    """A repository with one commit per tag, committed and tagged at the given time (annotated or not)."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for tag, (when, annotated) in tags.items():
        (root / "CHANGES").write_text(tag + "\n")
        git(root, "add", "CHANGES")
        git(root, "commit", "-q", "-m", f"release {tag}", date=when)
        if annotated:
            git(root, "tag", "-a", tag, "-m", f"release {tag}", date=when)
        else:
            git(root, "tag", tag, date=when)
    git(root, "tag", "not-a-release")
    return root


def test_tag_times_are_tagger_dates_for_annotated_tags_and_commit_dates_otherwise(tmp_path: Path) -> None:
    repo = make_tagged_repo(
        tmp_path / "repo", {"v1.0": ("2024-01-01T10:00:00Z", False), "1.1": ("2024-02-01T10:00:00Z", True)}
    )
    git(repo, "tag", "-a", "v1.1", "-m", "same release, later", "1.1^{}", date="2024-02-03T10:00:00Z")
    tags = release_tags(repo)
    assert [(t.tag, t.version, t.time.isoformat()) for t in tags] == [
        ("v1.0", "1.0", "2024-01-01T10:00:00+00:00"),
        ("1.1", "1.1", "2024-02-01T10:00:00+00:00"),
    ]


def upload(index, files: list[Path], when: str) -> None:
    """Upload with real twine, then date the stored file to the chosen upload time."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "twine",
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            index.url,
            "-u",
            INDEX_USER,
            "-p",
            INDEX_PASSWORD,
            *map(str, files),
        ],
        check=True,
        capture_output=True,
    )
    stamp = utc(when).timestamp()
    for file in files:
        os.utime(index.packages / file.name, (stamp, stamp))


@pytest.fixture
def incident_history(tmp_path: Path, index):
    """The incident, re-enacted: four tags; 1.0.0 on time, 1.1.0 a month late, 1.2.0 without its sdist,
    1.3.0 never published."""
    repo = make_tagged_repo(
        tmp_path / "repo",
        {
            "v1.0.0": ("2024-01-01T00:00:00Z", False),
            "v1.1.0": ("2024-02-01T00:00:00Z", True),
            "v1.2.0": ("2024-03-01T00:00:00Z", False),
            "v1.3.0": ("2024-04-01T00:00:00Z", True),
        },
    )
    dist = tmp_path / "dist"
    dist.mkdir()

    def files(version: str) -> list[Path]:
        return [make_wheel(dist, version=version), make_sdist(dist, version=version)]

    upload(index, files("1.0.0"), "2024-01-01T03:00:00")
    upload(index, files("1.1.0"), "2024-03-04T12:00:00")
    upload(index, files("1.2.0")[:1], "2024-03-01T01:00:00")
    return repo


def _monitor(repo: Path, index, *args: str) -> tuple[int, dict[str, dict], str]:
    result = run_cli(
        "monitor",
        "--repo",
        str(repo),
        "--project",
        "tiny-pkg",
        "--index",
        index.simple_url,
        "--expect",
        WHEEL,
        "--expect",
        SDIST,
        "--json",
        *args,
    )
    records = json.loads(result.stdout) if result.stdout.strip() else []
    return result.returncode, {r["version"]: r for r in records}, result.stderr


def test_monitor_reports_each_version_and_fails_on_overdue_ones(incident_history: Path, index, home: Path) -> None:
    code, records, stderr = _monitor(incident_history, index)
    assert code == 1
    assert {v: r["status"] for v, r in records.items()} == {
        "1.0.0": OK,
        "1.1.0": LATE,
        "1.2.0": INCOMPLETE,
        "1.3.0": MISSING,
    }
    assert records["1.0.0"]["lag_hours"] == 3.0
    assert records["1.1.0"]["lag_hours"] == 32 * 24 + 12  # Feb 2024 has 29 days: 1 Feb → 4 Mar 12:00
    assert records["1.1.0"]["first_upload_time"] == "2024-03-04T12:00:00+00:00"
    assert records["1.2.0"]["missing"] == ["tiny_pkg-1.2.0.tar.gz"]
    assert records["1.3.0"] == {
        "version": "1.3.0",
        "tag": "v1.3.0",
        "tag_time": "2024-04-01T00:00:00+00:00",
        "first_upload_time": None,
        "lag_hours": None,
        "status": MISSING,
        "missing": ["tiny_pkg-1.3.0-py3-none-any.whl", "tiny_pkg-1.3.0.tar.gz"],
        "index": index.simple_url,
        "overdue": True,
        "mismatched": [],
        "missing_cells": [],
    }
    assert stderr.strip().splitlines()[-1].startswith("wheelflow: 2 version(s) missing, incomplete or changed")


def test_as_of_replays_the_incident_from_todays_data(incident_history: Path, index, home: Path) -> None:
    # Mid-February: 1.1.0 was tagged two weeks earlier and nothing was served; later tags do not exist yet.
    code, records, _ = _monitor(incident_history, index, "--as-of", "2024-02-15T00:00:00Z")
    assert code == 1
    assert {v: (r["status"], r["lag_hours"]) for v, r in records.items()} == {
        "1.0.0": (OK, 3.0),
        "1.1.0": (MISSING, None),
    }
    # The day after it arrived, the same version reads as late, with its lag.
    code, records, _ = _monitor(incident_history, index, "--as-of", "2024-03-05T00:00:00Z", "--grace", "120")
    assert code == 0  # 1.2.0's sdist is missing, but its tag is four days old: within five days' grace
    assert {v: (r["status"], r["lag_hours"], r["overdue"]) for v, r in records.items()} == {
        "1.0.0": (OK, 3.0, False),
        "1.1.0": (LATE, 780.0, False),
        "1.2.0": (INCOMPLETE, 1.0, False),
    }


def test_a_standalone_spec_is_monitored_without_the_project_and_a_log_keeps_whole_urls(
    incident_history: Path, index, home: Path, tmp_path: Path
) -> None:
    """The spec of a project you don't control names its version file, which is not here: the monitor
    never reads the version, so it is not looked up. Its table in a log (not a terminal) cuts nothing."""
    from flows.monitor import watched_spec

    spec = tmp_path / "specs" / "tiny-pkg.toml"
    spec.parent.mkdir()
    spec.write_text(
        textwrap.dedent("""
        name = "tiny-pkg"
        artifacts = ["sdist", "wheel"]
        [version]
        file = "src/tiny_pkg/__init__.py"
        tag = "v{version}"
        """)
    )
    assert watched_spec(str(spec)).name == "tiny-pkg"  # what the monitor flow reads
    result = run_cli(
        "monitor", "--repo", str(incident_history), "--project", "tiny-pkg", "--index", index.simple_url,
        "--spec", str(spec), "--as-of", "2024-01-02T00:00:00Z",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "version | index | status | lag (h) | missing"
    assert lines[2] == f"1.0.0 | {index.simple_url} | ok | 3.0 | ", lines
    assert "…" not in result.stdout


def test_a_served_file_differing_from_the_release_manifest_is_a_hash_mismatch(
    incident_history: Path, index, home: Path
) -> None:
    write_manifest(
        home, "tiny-pkg", "1.0.0", {"tiny_pkg-1.0.0-py3-none-any.whl": "0" * 64, "tiny_pkg-1.0.0.tar.gz": "0" * 64}
    )
    code, records, _ = _monitor(incident_history, index)
    assert records["1.0.0"]["status"] == HASH_MISMATCH
    assert records["1.0.0"]["mismatched"] == ["tiny_pkg-1.0.0-py3-none-any.whl", "tiny_pkg-1.0.0.tar.gz"]


@pytest.mark.case(
    "bad input",
    "monitor: a time that is not ISO 8601, an index that is not a URL",
    "exit 2, one line naming the option",
)
def test_bad_monitor_input_is_one_line_naming_the_option(tmp_path: Path, home: Path) -> None:
    result = run_cli("monitor", "--repo", str(tmp_path), "--project", "x", "--index", "pypi", "--as-of", "yesterday")
    assert (result.returncode, result.stderr.strip()) == (
        2,
        "wheelflow: error: spec error: --as-of: 'yesterday' is not an ISO 8601 time; fix: write e.g. 2024-05-01T12:00:00Z",
    )
    result = run_cli("monitor", "--repo", str(tmp_path / "nope"), "--project", "x", "--index", "ftp://host/")
    assert result.returncode == 2 and "--index" in result.stderr.splitlines()[-1]


# -- the scheduled flow: alerts once per incident, by webhook and email; remediation ---------------


class Mailbox:
    """A real SMTP server on loopback (aiosmtpd) that keeps every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.EmailMessage] = []
        mailbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
                mailbox.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()  # returns once the server answers


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch):
    box = Mailbox()
    monkeypatch.setenv("WHEELFLOW_ALERT_EMAIL_TO", "releases@example.invalid")
    monkeypatch.setenv("WHEELFLOW_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("WHEELFLOW_SMTP_PORT", str(box.port))
    yield box
    box.controller.stop()


def _run_monitor(project, **kwargs):
    from flows.monitor import sync_monitor

    return sync_monitor(projects=[project], return_state=True, **kwargs)


def test_the_monitor_flow_alerts_once_per_incident_then_once_resolved(
    incident_history: Path, index, home: Path, tmp_path: Path, prefect_api, webhook, mailbox, caplog
) -> None:
    from flows.monitor import MonitoredProject

    project = MonitoredProject(
        name="tiny-pkg", repo=str(incident_history), indexes=[index.simple_url], expect=[WHEEL, SDIST], grace_hours=24
    )
    for _ in range(2):  # the second run finds the same incidents open in Prefect and stays quiet
        state = _run_monitor(project)
        assert state.is_failed() and "2 version(s) not served as expected" in state.message
    opened = sorted((a["event"], a["version"]) for a in webhook.received)
    assert opened == [("incident-opened", "1.2.0"), ("incident-opened", "1.3.0")]
    missing = next(a for a in webhook.received if a["version"] == "1.3.0")
    assert missing["summary"] == f"missing: tiny-pkg 1.3.0 on {index.simple_url}"
    assert "missing: tiny_pkg-1.3.0-py3-none-any.whl, tiny_pkg-1.3.0.tar.gz" in missing["text"]
    assert "tagged: v1.3.0 at 2024-04-01T00:00:00+00:00" in missing["text"]
    assert missing["flow_run_url"].endswith(f"/runs/flow-run/{missing['flow_run_id']}")

    assert len(mailbox.messages) == 2
    mail = next(m for m in mailbox.messages if "1.2.0" in m["Subject"])
    assert mail["Subject"] == f"[wheelflow] incomplete: tiny-pkg 1.2.0 on {index.simple_url}"
    assert mail["To"] == "releases@example.invalid"
    assert "missing: tiny_pkg-1.2.0.tar.gz" in mail.get_content()

    dist = tmp_path / "late-dist"
    dist.mkdir()
    upload(
        index,
        [make_sdist(dist, version="1.2.0"), make_wheel(dist, version="1.3.0"), make_sdist(dist, version="1.3.0")],
        "2024-04-02T00:00:00",
    )
    state = _run_monitor(project)
    assert state.is_completed()
    resolved = sorted((a["event"], a["version"]) for a in webhook.received[2:])
    assert resolved == [("incident-resolved", "1.2.0"), ("incident-resolved", "1.3.0")]
    assert len(mailbox.messages) == 4
    assert "T0KEN-w3bh00k-s3cret" not in caplog.text


def test_a_webhook_answering_500_twice_then_200_delivers_once(webhook) -> None:
    from wheelflow.ops.alerts import Alert, post_json

    webhook.fail_next = [500, 500]
    delays: list[float] = []
    alert = Alert(event="incident-opened", project="tiny-pkg", version="1.0", summary="missing: tiny-pkg 1.0")
    assert post_json(webhook.url, alert.payload(), sleep=delays.append)
    assert [a["summary"] for a in webhook.received] == ["missing: tiny-pkg 1.0"]
    assert len(delays) == 2 and delays[1] > delays[0]  # backed off between the attempts


def test_remediation_releases_a_missing_version_and_backfills_an_incomplete_one_once_per_incident(
    incident_history: Path, index, home: Path, prefect_api
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows.monitor import MonitoredProject

    with get_client(sync_client=True) as client:
        release_id = client.create_deployment(
            flow_id=client.create_flow_from_name("release"), name="remediation-under-test"
        )
        backfill_id = client.create_deployment(
            flow_id=client.create_flow_from_name("backfill"), name="remediation-under-test"
        )
    project = MonitoredProject(
        name="tiny-pkg",
        repo=str(incident_history),
        indexes=[index.simple_url],
        expect=[WHEEL, SDIST],
        release_deployment="release/remediation-under-test",
        release_parameters={"project": "/src/tiny-pkg"},
        backfill_deployment="backfill/remediation-under-test",
        backfill_parameters={"project": "/src/tiny-pkg", "to": ["staging"]},
    )
    for _ in range(2):
        assert _run_monitor(project, remediate=True).is_failed()

    def runs(deployment_id):
        with get_client(sync_client=True) as client:
            return [
                r.parameters
                for r in client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                )
            ]

    # Nothing served for 1.3.0: it is released; 1.2.0 lacks a file: it is backfilled. Once each.
    assert runs(release_id) == [{"project": "/src/tiny-pkg", "version": "1.3.0"}]
    assert runs(backfill_id) == [{"project": "/src/tiny-pkg", "to": ["staging"], "versions": ["1.2.0"]}]


@pytest.mark.case(
    "bad input",
    "sync-monitor with no projects configured",
    "Failed, one line naming the parameter and the Prefect Variable to set",
)
def test_a_monitor_with_nothing_to_watch_fails_saying_what_to_configure(prefect_api, home: Path) -> None:
    from flows.monitor import sync_monitor

    state = sync_monitor(return_state=True)
    assert state.is_failed()
    assert state.message.endswith(
        "sync-monitor has no projects to watch; fix: set the deployment's `projects` "
        "parameter, or the Prefect Variable 'wheelflow-monitor-projects' (a JSON list of "
        "projects: name, repo, indexes), e.g. in the UI under Variables"
    )


def test_the_monitor_reads_its_projects_from_the_prefect_variable(
    prefect_api, home: Path, tmp_path: Path, index
) -> None:
    from prefect.variables import Variable

    from flows.monitor import sync_monitor

    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git(repo, "commit", "-q", "--allow-empty", "-m", "first")
    git(repo, "tag", "release-0.1.0")
    Variable.set(
        "wheelflow-monitor-projects",
        [{"name": "tiny-pkg", "repo": str(repo), "indexes": [index.simple_url]}],
        overwrite=True,
    )
    try:
        # The project's tags do not match the default patterns: it checked nothing, so it is not green.
        state = sync_monitor(return_state=True)
        assert state.is_failed()
        assert state.message.endswith(
            f"tiny-pkg: no tag in {repo} matches v{{version}}, {{version}}: nothing was "
            "checked; fix: set the project's tag_patterns to the form of its release tags "
            "(e.g. v{version})"
        )
        Variable.set(
            "wheelflow-monitor-projects",
            [
                {
                    "name": "tiny-pkg",
                    "repo": str(repo),
                    "indexes": [index.simple_url],
                    "tag_patterns": ["release-{version}"],
                }
            ],
            overwrite=True,
        )
        assert sync_monitor(return_state=True).is_completed()  # tagged just now: within its grace period
    finally:
        Variable.unset("wheelflow-monitor-projects")
