"""`verify` against an index whose files are yanked (PEP 592): never "verified", the yank named."""

from __future__ import annotations

import functools
import json
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
