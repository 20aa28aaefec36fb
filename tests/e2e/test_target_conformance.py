"""Every registered kind of target, through its publisher, against a real server: open, read, publish,
prove, finalize, read back through its read-only reader, roll back, and read back again.

pypiserver stands in for an index; moto's S3 behind nginx for a static index; tests/githubstub.py (a
stand-in following GitHub's REST API 2022-11-28) for a GitHub release. A kind registered in
``flows/targets.py`` without a server here fails ``test_every_registered_kind_has_a_server_here``.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import INDEX_PASSWORD, INDEX_USER, make_project
from githubstub import TOKEN, GitHubStub
from prefect import flow
from prefect.transactions import transaction
from webservers import MotoS3, Nginx
from wheelcraft import make_wheel

from wheelflow.config.routing import routed
from wheelflow.config.spec import load_spec
from wheelflow.core.distributions import describe
from wheelflow.core.report import FileReport, ReleaseReport, UploadOutcome
from wheelflow.flows.context import ReleaseContext
from wheelflow.flows.stages import ReleaseTransaction, Stage
from wheelflow.flows.targets import PUBLISHERS, publisher_for
from wheelflow.index.localindex import PypiServer, ensure_htpasswd
from wheelflow.index.simple_api import READ_TIMEOUT
from wheelflow.source.export import Source
from wheelflow.source.versioning import ResolvedVersion

NAME, VERSION = "tiny-pkg", "1.0.0"


@contextlib.contextmanager
def index_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    htpasswd = tmp_path / "htpasswd"
    ensure_htpasswd(htpasswd, INDEX_USER, INDEX_PASSWORD)
    monkeypatch.setenv("WHEELFLOW_STAGING_USERNAME", INDEX_USER)
    monkeypatch.setenv("WHEELFLOW_STAGING_PASSWORD", INDEX_PASSWORD)
    with PypiServer(tmp_path / "served", htpasswd, log_file=tmp_path / "pypiserver.log") as server:
        yield f'[tool.wheelflow.targets.staging]\nindex = "{server.simple_url}"\nverify-timeout = 10\n'


@contextlib.contextmanager
def static_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with MotoS3(tmp_path / "moto") as s3:
        s3.make_public_bucket("wheels")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
        with Nginx(tmp_path / "cdn", upstream=f"{s3.url}/wheels/whl") as cdn:
            yield textwrap.dedent(f"""
                [tool.wheelflow.targets.staging]
                kind = "static"
                store-url = "s3://wheels/whl"
                public-url = "{cdn.url}"
                storage-options = {{ client_kwargs = {{ endpoint_url = "{s3.url}", region_name = "eu-west-1" }} }}
                verify-timeout = 10
                """)


@contextlib.contextmanager
def github_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The stand-in GitHub (tests/githubstub.py: REST API 2022-11-28; GitHub itself is unreachable here)."""
    with GitHubStub("octo/tiny") as stub:
        monkeypatch.setenv("WHEELFLOW_STAGING_TOKEN", TOKEN)
        yield textwrap.dedent(f"""
            [tool.wheelflow.targets.staging]
            kind = "github-release"
            repository = "octo/tiny"
            api-url = "{stub.api_url}"
            uploads-url = "{stub.uploads_url}"
            asset-url = "{stub.download_url}/{{repository}}/releases/download/v{{version}}/{{wheel}}"
            verify-timeout = 10
            """)


#: kind → a real server for it, giving the spec's target table (named staging)
SERVERS: dict[str, Callable[[Path, pytest.MonkeyPatch], contextlib.AbstractContextManager[str]]] = {
    "index": index_server,
    "static": static_server,
    "github-release": github_server,
}


class RolledBack(Exception):
    """Raised inside the release's transaction to run the rollback hooks, as a later failure would."""


def test_every_registered_kind_has_a_server_here() -> None:
    assert set(SERVERS) == set(PUBLISHERS)


@pytest.mark.parametrize("kind", sorted(PUBLISHERS))
def test_a_kind_opens_reads_publishes_proves_finalizes_and_rolls_back(
    kind: str, tmp_path: Path, home: Path, prefect_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    files = [make_wheel(wheels), make_wheel(wheels, version=f"{VERSION}+cu130")]  # a plain and a variant wheel
    with SERVERS[kind](tmp_path, monkeypatch) as table:
        spec = load_spec(make_project(tmp_path / "p", NAME, VERSION, extra=table))
        (target,) = spec.targets
        dists = routed([describe(f) for f in files], target)
        assert len(dists) == 2
        filenames = sorted(d.filename for d in dists)
        report = ReleaseReport(project=str(spec.project_dir), name=NAME, version=VERSION)
        report.files = [FileReport(d.filename, d.sha256, target.name, d.kind) for d in dists]
        source = Source(spec.project_dir, spec.project_dir, "directory", None, None, False, (), 0, "test", "test")
        ctx = ReleaseContext(
            spec, ResolvedVersion(VERSION, None, {}, None), (target,), home, report, "local", "auto", source
        )
        seen: dict[str, object] = {}

        @flow(name=f"conformance-{kind}")
        def every_step() -> None:
            publisher = publisher_for(target)
            publisher.check_credentials(target, home, None)
            with contextlib.ExitStack() as opened:
                publisher.open(ctx, opened, target)
                stage = Stage(0, target, publisher, dists)
                seen["before"] = publisher.read_served(ctx, stage)
                with contextlib.suppress(RolledBack), transaction() as txn:
                    publisher.publish(ctx, ReleaseTransaction([stage], txn), stage)
                    seen["outcomes"] = sorted({f.upload for f in report.files})
                    publisher.prove(ctx, stage)
                    publisher.finalize(ctx, stage)
                    with (
                        publisher.reader(target, home, None, project=NAME) as reader,
                        httpx.Client(timeout=READ_TIMEOUT) as client,
                    ):
                        seen["read"] = sorted(f.filename for f in reader.read(client, NAME, VERSION))
                    raise RolledBack
                seen["after"] = publisher.still_served(ctx, stage, filenames)
                seen["runbook"] = publisher.rollback_runbook(ctx, stage, filenames[:1])

        every_step()

    assert seen["before"] == []
    assert seen["outcomes"] == [UploadOutcome.UPLOADED]
    assert [c.status for c in report.checks if c.check.startswith("uploaded ")] == ["passed", "passed"]
    assert all(f.status == "verified" for f in report.files), report.files
    assert seen["read"] == filenames  # the read-only reader sees every file (a variant in its sub-index too)
    assert seen["after"] == set()  # the rollback hooks took every file back
    assert filenames[0] in "\n".join(seen["runbook"])  # type: ignore[arg-type]
