"""The pre-upload gate's read of every archive: every entry, to its last byte, before anything else reads it.

An installer writes a wheel's entries where their names say. A name that is absolute or climbs
out with ``..``, or an entry that is a link, writes outside the install folder, even when RECORD
lists it with its right hash (RECORD only proves the entry is what the builder wrote). Such a
file is refused before any upload: an index never deletes a file. An sdist's members are held to
the same rule (pip unpacks them to build).

Each archive is read in one streaming pass under an unpack budget (``core.archivelimits``): the
bytes actually read are counted, never the sizes the archive declares, so a compression bomb is
refused after a bounded read and no entry is ever held whole. The same pass hashes every wheel
entry for the RECORD check. The other audits (METADATA, twine check, auditwheel) read a file only
after it passed here.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from wheelflow.core.archivelimits import UnpackBudget, UnpackLimitExceeded, count_members
from wheelflow.core.distributions import Finding
from wheelflow.core.sizes import human_size

#: Rules that make a file unsafe to read further: a file refused under one of them is read by nothing
#: else (a RECORD mismatch, this module's other rule, is not such a danger).
ARCHIVE_RULES = frozenset({"archive", "archive-size", "entry-path", "entry-link"})
#: Metadata files (RECORD, METADATA, PKG-INFO, ...) are read whole by installers and by twine: capped.
MAX_METADATA_BYTES = 64 * 2**20
_UNREADABLE = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)
_DRIVE = re.compile(r"^[A-Za-z]:")
_PATH_FIX = (
    "fix: find what in the build names it so (a data_files, package_data or extension path that is "
    "absolute or climbs out with '..'); every entry must stay inside the install folder"
)
_LINK_FIX = "fix: ship the file itself instead of a link (copy it in the build); installers do not keep links"


def audit_archive(path: Path) -> list[Finding]:
    """Refusals of a wheel's or an sdist's entries (names, links, unpacked size, RECORD for a wheel);
    empty when every entry was read to its end within budget and is where it should be."""
    if path.name.endswith(".whl"):
        return audit_wheel_archive(path)
    if path.name.endswith(".tar.gz"):
        return audit_sdist_archive(path)
    return []


def escapes(name: str) -> str | None:
    """Why an entry name leaves the folder it is unpacked into ("an absolute path", "'..'"), or None."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "contains '..'"
    return None


def _zip_entry_problem(info: zipfile.ZipInfo) -> Finding | None:
    name = info.filename
    why = escapes(name)
    if why is not None:
        return Finding(
            "", "entry-path", f"entry {name!r} {why}: installing it writes outside the install folder; {_PATH_FIX}"
        )
    kind = stat.S_IFMT(info.external_attr >> 16)  # unix mode bits, where the zip was written on unix
    if kind == stat.S_IFLNK:
        return Finding("", "entry-link", f"entry {name!r} is a symbolic link; {_LINK_FIX}")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return Finding("", "entry-link", f"entry {name!r} is not a regular file (mode {oct(kind)}); {_LINK_FIX}")
    return None


def _record_digest(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def audit_wheel_archive(path: Path) -> list[Finding]:
    """One pass over the wheel: entry names and kinds, every entry read to its end within the unpack
    budget (its sha256 and size taken on the way), then RECORD compared with what was read."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            count_members(len(infos))
            seen: set[str] = set()
            for info in infos:
                problem = _zip_entry_problem(info)
                if problem is None and info.filename in seen:
                    problem = Finding(
                        "",
                        "entry-path",
                        f"entry {info.filename!r} appears twice; installers keep one of them; fix: rebuild it",
                    )
                if problem is not None:
                    return [Finding(path.name, problem.rule, problem.message)]
                seen.add(info.filename)
            budget = UnpackBudget(path.stat().st_size)
            read: dict[str, tuple[str, int]] = {}
            record_text = None
            records = [i for i in infos if i.filename.count("/") == 1 and i.filename.endswith(".dist-info/RECORD")]
            for info in infos:
                if info.is_dir():
                    continue
                digest, size, kept = hashlib.sha256(), 0, [] if info in records[:1] else None
                with zf.open(info) as stream:
                    for block in budget.blocks(stream, info.filename):
                        digest.update(block)
                        size += len(block)
                        _cap_metadata(info.filename, size)
                        if kept is not None:
                            kept.append(block)
                read[info.filename] = (_record_digest(digest.digest()), size)
                if kept is not None:
                    record_text = b"".join(kept).decode()
    except UnpackLimitExceeded as exc:
        return [Finding(path.name, "archive-size", str(exc))]
    except (*_UNREADABLE, UnicodeDecodeError) as exc:
        return [Finding(path.name, "archive", f"cannot be read ({exc}); fix: rebuild it")]
    if record_text is None:
        return [Finding(path.name, "record", "has no .dist-info/RECORD; fix: rebuild it with a standard build backend")]
    return _record_findings(path.name, records[0].filename, record_text, read)


def _cap_metadata(name: str, size: int) -> None:
    """UnpackLimitExceeded when a metadata file (read whole by installers and twine) is over its cap."""
    path = PurePosixPath(name)
    if size > MAX_METADATA_BYTES and (
        path.parent.name.endswith((".dist-info", ".egg-info")) or path.name == "PKG-INFO"
    ):
        raise UnpackLimitExceeded(
            f"{name} is over {human_size(MAX_METADATA_BYTES)}, and installers read it whole; "
            "fix: keep data out of the package metadata (e.g. a generated long description)"
        )


def _record_findings(filename: str, record: str, text: str, read: dict[str, tuple[str, int]]) -> list[Finding]:
    """Every entry read is in RECORD with its sha256 and size, and RECORD lists nothing else."""
    try:
        listed = {row[0]: row for row in csv.reader(io.StringIO(text)) if row}
    except csv.Error as exc:
        return [Finding(filename, "record", f"{record} is not valid CSV ({exc}); fix: rebuild it")]
    unsigned = {record, record + ".jws", record + ".p7s"}
    for member, (digest, size) in read.items():
        if member in unsigned:
            continue
        row = listed.pop(member, None)
        if row is None:
            return [
                Finding(
                    filename, "record", f"{member} is not listed in RECORD; fix: rebuild instead of editing the wheel"
                )
            ]
        if len(row) < 3 or row[1] != digest or (row[2] and row[2].strip() != str(size)):
            return [
                Finding(
                    filename,
                    "record",
                    f"{member} does not match its RECORD hash; fix: rebuild instead of editing the wheel",
                )
            ]
    missing = [name for name in listed if name not in unsigned]
    if missing:
        return [Finding(filename, "record", f"RECORD lists {missing[0]}, which the wheel lacks; fix: rebuild it")]
    return []


def link_leaves(member: tarfile.TarInfo) -> bool:
    """A tar link whose target is absolute or climbs above the archive's root."""
    target = member.linkname
    # a symbolic link's target is relative to its folder, a hard link's to the archive's root
    resolved = PurePosixPath(member.name).parent / target if member.issym() else PurePosixPath(target)
    return target.startswith(("/", "\\")) or bool(_DRIVE.match(target)) or _climbs_out(resolved)


def _tar_member_problem(member: tarfile.TarInfo) -> Finding | None:
    name = member.name
    why = escapes(name)
    if why is not None:
        return Finding(
            "", "entry-path", f"member {name!r} {why}: unpacking it writes outside the build folder; {_PATH_FIX}"
        )
    if member.issym() or member.islnk():
        if link_leaves(member):
            return Finding(
                "", "entry-link", f"member {name!r} is a link to {member.linkname!r}, outside the sdist; {_LINK_FIX}"
            )
        return None
    if not (member.isreg() or member.isdir()):
        return Finding("", "entry-link", f"member {name!r} is not a regular file or folder; {_LINK_FIX}")
    return None


def _climbs_out(path: PurePosixPath) -> bool:
    """An absolute path, or a relative one whose ``..`` climb above where it starts."""
    if path.is_absolute():
        return True
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return True
    return False


def audit_sdist_archive(path: Path) -> list[Finding]:
    """One pass over the sdist's headers: member names and kinds, the member count, and the bytes the
    members unpack to within the unpack budget (a tar member unpacks to exactly its declared size,
    so the sizes counted are those an unpacker writes; the stream is read only to skip them)."""
    budget = UnpackBudget(path.stat().st_size)
    try:
        with tarfile.open(path, "r:gz") as archive:
            count = 0
            for member in archive:
                count += 1
                count_members(count)
                problem = _tar_member_problem(member)
                if problem is not None:
                    return [Finding(path.name, problem.rule, problem.message)]
                budget.take(member.size, member.name)
                _cap_metadata(member.name, member.size)
    except UnpackLimitExceeded as exc:
        return [Finding(path.name, "archive-size", str(exc))]
    except _UNREADABLE as exc:
        return [Finding(path.name, "archive", f"cannot be read as a .tar.gz ({exc}); fix: rebuild it")]
    return []
