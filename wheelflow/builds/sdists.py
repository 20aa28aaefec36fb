"""The released sdist as a source: unpacked for the cell that proves it builds, and compared with the
project's tracked files when it does not (a header missing from MANIFEST.in is the usual cause)."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from wheelflow.checks.archives import escapes, link_leaves
from wheelflow.core.archivelimits import UnpackBudget, UnpackLimitExceeded, count_members
from wheelflow.core.errors import BuildError

#: Files users keep out of an sdist on purpose; never named as missing.
_NOT_SOURCE_PREFIXES = (".git", ".github/", ".gitlab", ".pre-commit", ".readthedocs", ".ci/", "docs/", "tests/")
#: Sources a compile reads, in the order the missing ones are named (docs/matrix-and-builders.md:
#: "headers and kernels first"): headers, then kernels and C/C++ sources, then Cython and Python.
_SOURCE_ORDER = (
    (".h", ".hpp", ".hh", ".cuh", ".inl"),
    (".cu", ".c", ".cc", ".cpp", ".cxx"),
    (".pyx", ".pxd", ".py"),
)


def unpack_sdist(sdist: Path, dest: Path) -> Path:
    """Unpack ``sdist`` (a .tar.gz) into ``dest`` once; returns its top folder. Members that would land
    outside ``dest`` (absolute paths, ``..``, links out of the sdist), an archive that unpacks past its budget (a
    compression bomb, see ``archivelimits``) and one that cannot be read are refused in one line
    (BuildError), before anything is written."""
    done = dest / ".wheelflow-unpacked"
    if done.is_file():
        return dest / done.read_text().strip()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=dest.parent))
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            members = _safe_members(sdist, archive)
            # The members were checked above (links inside the sdist are kept, as pip keeps them); the
            # data filter is a second lock on the same door.
            archive.extractall(
                staging,
                members=[m for m in members if m.isfile() or m.isdir() or m.issym() or m.islnk()],
                **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}),
            )
        tops = {PurePosixPath(m.name).parts[0] for m in members if m.name}
        if len(tops) != 1:
            raise BuildError(f"{sdist.name}: expected one top folder, found {len(tops)}; fix: build it with pypa/build")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(f"{sdist.name} cannot be read as a .tar.gz ({exc}); fix: rebuild the sdist") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    top = tops.pop()
    done.write_text(top)
    return dest / top


def _safe_members(sdist: Path, archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The archive's members, read one header at a time: each name stays inside, the count and the
    sizes they unpack to stay within budget (a tar member unpacks to exactly its size)."""
    budget = UnpackBudget(sdist.stat().st_size)
    members = []
    try:
        for member in archive:
            members.append(member)
            count_members(len(members))
            if escapes(member.name) or ((member.issym() or member.islnk()) and link_leaves(member)):
                raise BuildError(f"{sdist.name}: member {member.name!r} leaves the archive; fix: rebuild the sdist")
            budget.take(member.size, member.name)
    except UnpackLimitExceeded as exc:
        raise BuildError(f"{sdist.name}: {exc}") from None
    return members


def sdist_version(sdist: Path) -> str | None:
    """The version an sdist's PKG-INFO states (None when it has none), read without unpacking it."""
    import email

    try:
        with tarfile.open(sdist, "r:gz") as archive:
            for member in archive:
                if member.isfile() and len(PurePosixPath(member.name).parts) == 2 and member.name.endswith("/PKG-INFO"):
                    handle = archive.extractfile(member)
                    return email.message_from_binary_file(handle)["Version"] if handle else None
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        raise BuildError(f"{sdist.name} cannot be read as a .tar.gz ({exc}); fix: rebuild the sdist") from None
    return None


def missing_from_sdist(project: Path, unpacked: Path, tracked: list[str]) -> list[str]:
    """The project's tracked files the sdist lacks: headers first, then kernels and other sources, then
    Python files, then the rest; alphabetical within each."""
    missing = [
        name
        for name in tracked
        if not name.startswith(_NOT_SOURCE_PREFIXES) and not (unpacked / name).exists() and (project / name).is_file()
    ]
    return sorted(missing, key=lambda name: (_source_rank(name), name))


def _source_rank(name: str) -> int:
    return next((rank for rank, suffixes in enumerate(_SOURCE_ORDER) if name.endswith(suffixes)), len(_SOURCE_ORDER))
