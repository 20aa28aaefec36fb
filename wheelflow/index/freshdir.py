"""``pypi-server`` as wheelflow runs it: the ``simple-dir`` backend (the folder is read on every request,
so what is on disk is what is served), without listing and parsing every file in the folder to serve
one file or to accept one upload.

pypiserver's download route walks the whole folder and parses each file name to find the one asked
for, and its upload check walks it again: per request a cost that grows with the folder, so a release
of 2,000 files spent minutes there (68 ms per download, 29 ms per upload, at 2,000 files). Here a
download opens the named file directly and an upload's "already there?" reads the folder's entries
without building a path object per file. Everything else (listings, auth, answers for files that
are not there) is pypiserver's own.

    python -m wheelflow.index.freshdir run -p PORT ... PACKAGES     # the arguments of `pypi-server`
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path


def served_file(roots: Iterable[Path | str], filename: str) -> Path | None:
    """The package file ``/packages/<filename>`` names under one of ``roots``, found without listing
    them; None when pypiserver would not serve it from there (a hidden or unparseable name, a path
    leaving the root, no such file), so that its own lookup answers."""
    from pypiserver.pkg_helpers import guess_pkgname_and_version

    parts = filename.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    if guess_pkgname_and_version(parts[-1]) is None:
        return None
    for root in roots:
        base = Path(root).resolve()
        path = base.joinpath(*parts)
        folders = [base.joinpath(*parts[:i]) for i in range(1, len(parts))]
        if path.is_file() and not any(folder.is_symlink() for folder in folders):  # its walk skips linked folders
            return path
    return None


def has_file(root: Path | str, filename: str) -> bool:
    """A listed file named ``filename`` anywhere under ``root`` (hidden folders skipped, symlinked
    folders not followed): pypiserver's ``exists`` for an upload, answered from directory entries."""
    if filename.startswith("."):
        return False
    folders = [os.fspath(root)]
    while folders:
        try:
            entries = os.scandir(folders.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.name == filename and entry.is_file():
                    return True
    return False


def install() -> None:
    """Make the running pypiserver's download route and upload check use the direct lookups above."""
    import mimetypes

    from pypiserver import _app, backend
    from pypiserver.bottle_wrapper import static_file

    backend.SimpleFileBackend.exists = lambda self, filename: any(has_file(r, filename) for r in self.roots)

    (route,) = [r for r in _app.app.routes if r.rule == "/packages/:filename#.*#"]
    pypiservers_own = route.callback  # auth, then its walk of the folder (a 404 for a missing file)

    @_app.auth("download")
    def serve(path: Path, filename: str) -> object:
        response = static_file(path.name, root=str(path.parent), mimetype=mimetypes.guess_type(filename)[0])
        if _app.config.cache_control:
            response.set_header("Cache-Control", f"public, max-age={_app.config.cache_control}")
        return response

    def server_static(filename: str) -> object:
        files = _app.config.backend  # pypiserver's proxy around the simple-dir backend
        found = served_file(getattr(files, "backend", files).roots, filename)
        return pypiservers_own(filename) if found is None else serve(found, filename)

    route.callback = server_static
    _app.app.reset()  # routes compile their callbacks on first use: none has been used yet


def main(argv: Sequence[str] | None = None) -> None:
    from pypiserver.__main__ import main as pypiserver_main

    install()
    pypiserver_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
