"""`verify` against an index whose files are yanked (PEP 592): never "verified", the yank named."""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import run_cli
from wheelcraft import make_wheel

from wheelflow.core.distributions import sha256_of


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def yanked_index(tmp_path: Path) -> Iterator[str]:
    """A static PEP 503 index whose only file of tiny-pkg 1.0.0 is listed with data-yanked."""
    (tmp_path / "packages").mkdir()
    wheel = make_wheel(tmp_path / "packages")
    page = tmp_path / "simple" / "tiny-pkg" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(
        f'<html><body><a href="../../packages/{wheel.name}#sha256={sha256_of(wheel)}" '
        f'data-yanked="broken build">{wheel.name}</a></body></html>\n'
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    server.shutdown()
    server.server_close()


@pytest.mark.case(
    "fault",
    "every file of the version is listed data-yanked",
    "verify exits 1 naming the yank and its reason, never 'verified'",
)
def test_verify_fails_naming_the_yank(yanked_index: str, home: Path) -> None:
    result = run_cli("verify", "tiny-pkg==1.0.0", "--index", yanked_index, "--no-install", "--timeout", "20", "--json")
    assert result.returncode == 1, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert not report["ok"]
    assert [f["status"] for f in report["files"]] == ["yanked"]
    assert result.stderr.strip().splitlines()[-1] == (
        "wheelflow: verify failed: tiny_pkg-1.0.0-py3-none-any.whl is yanked on this index (reason: broken build): "
        "installers skip it, so its users do not get it; fix: release a new version (e.g. a .post1); an index never "
        "takes the same file again"
    )


@pytest.mark.case(
    "fault",
    "a re-run of a release whose wheel the target now lists as yanked",
    "refused before any upload naming the yank; nothing is written to the target again",
)
def test_a_release_refuses_its_own_file_listed_as_yanked(tmp_path: Path, home: Path, prefect_api) -> None:
    from conftest import make_project
    from webservers import Nginx

    store = tmp_path / "store"
    with Nginx(tmp_path / "nginx", root=store) as nginx:
        extra = f'\n[tool.wheelflow.targets.wheels]\nkind = "static"\nstore-url = "{store.as_uri()}"\n'
        project = make_project(tmp_path / "proj", extra=extra + f'public-url = "{nginx.url}"\n')
        first = run_cli("release", str(project), "--json")
        assert first.returncode == 0, first.stderr[-3000:]
        page = store / "tiny-pkg" / "index.html"
        wheel = "tiny_pkg-1.0.0-py3-none-any.whl"
        text = page.read_text()
        assert f">{wheel}</a>" in text
        # Yanked by a person since (the static index keeps the attribute when it merges pages).
        page.write_text(re.sub(rf"<a (?=[^>]*{re.escape(wheel)})", '<a data-yanked="superseded" ', text))
        assert page.read_text().count('data-yanked="superseded"') == 1
        before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}

        again = run_cli("release", str(project), "--json")
        assert again.returncode == 1, again.stderr[-3000:]
        report = json.loads(again.stdout)
        assert f"wheels: {wheel} is yanked on this index (reason: superseded)" in report["error"], report["error"]
        assert {f["filename"]: f["status"] for f in report["files"] if f["filename"] == wheel} == {wheel: "yanked"}
        assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before  # nothing written again
