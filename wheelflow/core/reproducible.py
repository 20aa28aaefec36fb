"""Make built archives byte-identical for one commit, wherever and whenever they are built.

With SOURCE_DATE_EPOCH set, setuptools/wheel already give wheel entries that time and write them
in a fixed order. What still varies between two builds of one commit is:

- the sdist: its tar keeps every file's mtime (checkout time, build time for generated files), its
  mode (the umask of the machine that checked out and built it) and owner names, and its gzip
  header carries the build time and the tar's file name;
- wheel entry modes, which come from files on disk (the umask again), and the entry times of
  backends that ignore SOURCE_DATE_EPOCH;
- compiled code, which records the directory it was compiled in (``prefix_map_env``).

Rewriting an archive changes none of its files' bytes, so a wheel's RECORD stays correct.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from wheelflow.core.archivelimits import UnpackBudget, UnpackLimitExceeded, count_members
from wheelflow.core.errors import BuildError

ZIP_EPOCH = 315532800  # 1980-01-01: a zip entry cannot be older


def canonical_mode(mode: int, *, is_dir: bool = False) -> int:
    """0755 for directories and anything executable by someone, 0644 for everything else."""
    return 0o755 if is_dir or mode & 0o111 else 0o644


#: What reading a broken archive raises (a bad gzip stream is an OSError; a truncated one an EOFError).
_UNREADABLE = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)


@contextlib.contextmanager
def _one_line_errors(path: Path, what: str) -> Iterator[None]:
    """A compression bomb or a broken archive met while rewriting ``path``: one BuildError line naming
    it and the fix, never a traceback."""
    try:
        yield
    except UnpackLimitExceeded as exc:
        raise BuildError(f"{path.name}: {exc}") from None
    except _UNREADABLE as exc:
        raise BuildError(
            f"{path.name} cannot be read as {what} ({exc}); fix: check what the build backend wrote"
        ) from None


def normalise_sdist(path: Path, epoch: int) -> None:
    """Rewrite a .tar.gz sdist: entries sorted by name, mtimes clamped to ``epoch``, owner 0/0 with
    empty names, modes 0644/0755, gzip header without a file name and with mtime 0.

    Streamed through files next to it in blocks, never held whole: a compression bomb is refused
    (BuildError) once it unpacks past its budget (see ``archivelimits``)."""
    budget = UnpackBudget(path.stat().st_size)
    with _one_line_errors(path, "a .tar.gz sdist"):
        with tempfile.TemporaryDirectory(prefix=".normalising-", dir=path.parent) as scratch:
            plain = Path(scratch, "plain.tar")  # sorting needs random access: a gzip stream only reads forward
            with gzip.open(path, "rb") as packed, plain.open("wb") as out:
                for block in budget.blocks(packed, "the tar in it"):
                    out.write(block)
            rewritten = Path(scratch, "normalised.tar.gz")
            with tarfile.open(plain, "r:") as source:
                members = []
                for member in source:
                    members.append(member)
                    count_members(len(members))
                # filename="" keeps gzip from writing the tar's name; mtime=0 keeps it from writing the time.
                with (
                    rewritten.open("wb") as raw,
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as out,
                ):
                    for member in sorted(members, key=lambda m: m.name):
                        entry = tarfile.TarInfo(member.name)
                        entry.type, entry.linkname, entry.size = member.type, member.linkname, member.size
                        entry.mode = 0o777 if member.issym() else canonical_mode(member.mode, is_dir=member.isdir())
                        entry.mtime = min(int(member.mtime), epoch)
                        entry.uid = entry.gid = 0
                        entry.uname = entry.gname = ""
                        out.addfile(entry, source.extractfile(member) if member.isreg() else None)
            os.replace(rewritten, path)


def _canonical_wheel_mode(info: zipfile.ZipInfo) -> int:
    """A directory entry (auditwheel's repair writes them) stays a directory; every other entry is a
    regular file, 0644 or 0755."""
    if info.is_dir():
        return stat.S_IFDIR | 0o755
    return stat.S_IFREG | canonical_mode(info.external_attr >> 16)


def _wheel_entry_is_canonical(info: zipfile.ZipInfo, date_time: tuple[int, ...]) -> bool:
    return info.date_time == date_time and info.external_attr >> 16 == _canonical_wheel_mode(info)


def normalise_wheel(path: Path, epoch: int) -> bool:
    """Give every wheel entry the time ``epoch`` and mode 0644/0755, keeping the entry order and the
    bytes of every file; returns whether the wheel had to be rewritten.

    Entries are copied in blocks, never read whole: a compression bomb is refused (BuildError) once
    it unpacks past its budget (see ``archivelimits``)."""
    date_time = time.gmtime(max(epoch, ZIP_EPOCH))[:6]
    budget = UnpackBudget(path.stat().st_size)
    temporary = path.with_name(f".{path.name}.normalising")
    try:
        with _one_line_errors(path, "a wheel"):
            with zipfile.ZipFile(path) as source:
                infos = source.infolist()
                count_members(len(infos))
                if all(_wheel_entry_is_canonical(info, date_time) for info in infos):
                    return False
                with zipfile.ZipFile(temporary, "w") as out:
                    for info in infos:
                        entry = zipfile.ZipInfo(info.filename, date_time=date_time)
                        entry.compress_type = info.compress_type
                        entry.create_system = 3  # unix: the mode bits below are read
                        entry.external_attr = _canonical_wheel_mode(info) << 16 | (0x10 if info.is_dir() else 0)
                        entry.file_size = info.file_size  # only decides whether the entry needs zip64 headers
                        with source.open(info) as data, out.open(entry, "w") as sink:
                            for block in budget.blocks(data, info.filename):
                                sink.write(block)
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return True


#: What a prepared build environment's path is recorded as: compilers write the full path of each
#: header that uses ``__FILE__`` (torch's INTERNAL ASSERT messages do), and that environment lives
#: under the home, whose path differs from one home to the next.
BUILD_ENV_AS = "/build-env"


def prefix_map_env(
    build_dir: str, env: Mapping[str, str], *, to: str = ".", build_env: str | None = None
) -> dict[str, str]:
    """Compiler flags that record ``build_dir`` as ``to`` (and the build environment ``build_env``,
    when given, as ``BUILD_ENV_AS``) in objects and debug info, appended to what ``env`` already sets
    (gcc/clang through CFLAGS/CXXFLAGS, nvcc's host compiler through NVCC_APPEND_FLAGS): two builds
    in two directories, from two homes, then produce the same binaries."""
    maps = [f"{build_dir}={to}"] + ([f"{build_env}={BUILD_ENV_AS}"] if build_env else [])
    flags = " ".join(f"-ffile-prefix-map={m} -fdebug-prefix-map={m}" for m in maps)
    nvcc = " ".join(f"-Xcompiler -ffile-prefix-map={m} -Xcompiler -fdebug-prefix-map={m}" for m in maps)
    return {
        name: f"{env[name]} {value}" if env.get(name) else value
        for name, value in (("CFLAGS", flags), ("CXXFLAGS", flags), ("NVCC_APPEND_FLAGS", nvcc))
    }
