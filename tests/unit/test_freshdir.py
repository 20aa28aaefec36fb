"""The local index's pypiserver serves a file and checks an upload without walking the whole folder
(a cost per request that grew with the release: minutes at 2,000 files), and answers as pypiserver does."""

from __future__ import annotations

import io
import wsgiref.util
from pathlib import Path

import pytest

from wheelflow.index.freshdir import has_file, install, served_file

WHEEL = "tiny_pkg-1.0-py3-none-any.whl"


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    root = tmp_path / "packages"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / WHEEL).write_bytes(b"PK wheel")
    (root / "sub" / "other-2.0.tar.gz").write_bytes(b"sdist")
    (root / ".hidden" / "secret-1.0.tar.gz").write_bytes(b"no")
    (root / ".dot-1.0.tar.gz").write_bytes(b"no")
    (root / "notes.txt").write_bytes(b"not a package")
    (tmp_path / "outside-1.0.tar.gz").write_bytes(b"outside")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "linked-1.0.tar.gz").write_bytes(b"linked")
    (root / "link").symlink_to(tmp_path / "elsewhere")  # a linked folder: pypiserver's walk does not enter it
    return root


def test_lookups_answer_as_pypiservers_own_walk(packages: Path) -> None:
    from pypiserver.backend import all_listed_files, listdir

    served = {p.relfn_unix for p in listdir(packages)}
    names = [WHEEL, "sub/other-2.0.tar.gz", ".hidden/secret-1.0.tar.gz", ".dot-1.0.tar.gz", "notes.txt"]
    for name in [*names, "link/linked-1.0.tar.gz"]:
        assert (served_file([packages], name) is not None) == (name in served), name
    assert served_file([packages], "../outside-1.0.tar.gz") is None
    assert served_file([packages], "missing-1.0.tar.gz") is None

    listed = {p.name for p in all_listed_files(packages)}
    for name in [
        WHEEL,
        "other-2.0.tar.gz",
        "secret-1.0.tar.gz",
        ".dot-1.0.tar.gz",
        "missing-1.0.tar.gz",
        "linked-1.0.tar.gz",
    ]:
        assert has_file(packages, name) == (name in listed), name


@pytest.fixture
def index_app(packages: Path):
    """pypiserver's app on ``packages`` in this process, with freshdir installed (undone after)."""
    import pypiserver
    from pypiserver import _app, backend

    route = next(r for r in _app.app.routes if r.rule == "/packages/:filename#.*#")
    saved = (route.callback, backend.SimpleFileBackend.exists)
    app = pypiserver.app(roots=[str(packages)], authenticate=[], password_file=".", backend_arg="simple-dir")
    install()
    yield app
    route.callback, backend.SimpleFileBackend.exists = saved
    _app.app.reset()


def _get(app, path: str) -> tuple[str, bytes]:
    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    wsgiref.util.setup_testing_defaults(environ)
    answer: list[str] = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: answer.append(status)))
    return answer[0], body


def test_a_download_and_an_upload_check_do_not_walk_the_folder(
    index_app, packages: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pypiserver import _app, backend

    def walked(*args: object) -> None:
        raise AssertionError("the whole folder was walked")

    monkeypatch.setattr(backend, "listdir", walked)
    monkeypatch.setattr(backend, "all_listed_files", walked)
    status, body = _get(index_app, f"/packages/{WHEEL}")
    assert (status, body) == ("200 OK", b"PK wheel")
    assert _app.config.backend.exists(WHEEL) and not _app.config.backend.exists("tiny_pkg-2.0-py3-none-any.whl")


def test_a_file_it_does_not_serve_is_still_pypiservers_404(index_app) -> None:
    assert _get(index_app, "/packages/missing-1.0.tar.gz")[0].startswith("404")
    assert _get(index_app, "/packages/.dot-1.0.tar.gz")[0].startswith("404")
    assert _get(index_app, "/packages/sub/other-2.0.tar.gz") == ("200 OK", b"sdist")
