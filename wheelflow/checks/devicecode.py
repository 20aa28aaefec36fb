"""What device code a CUDA shared object really carries: its fat binary containers read directly, or
``cuobjdump`` where a toolkit has it. The declarations it is compared with are :mod:`wheelflow.config.gpuarch`'s."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from wheelflow.config.gpuarch import ArchSpec, DeviceCode, arch_sort_key

FATBIN_SECTIONS = (".nv_fatbin", "__nv_relfatbin")  # the second holds relocatable (-rdc) device code
_FATBIN_MAGIC = 0xBA55ED50
_HEADER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries that follow
_ENTRY = struct.Struct("<HHIQIIHHIII")  # kind, ?, header size, payload size, ..., arch (offset 28)
_ENTRY_FLAGS = struct.Struct("<Q")  # at offset 40
_KIND_PTX, _KIND_SASS = 1, 2


_FLAG_ARCH_SPECIFIC, _FLAG_FAMILY = 0x100000, 0x200000  # sm_90a, sm_100f
_CUOBJDUMP_RE = re.compile(r"\.(sm_\d+[af]?)\.(cubin|ptx)$")


def find_cuobjdump(cuda_home: Path | None = Path("/usr/local/cuda")) -> Path | None:
    """The toolkit's cuobjdump (``cuda_home``/bin, then PATH), or None."""
    if cuda_home is not None and (cuda_home / "bin" / "cuobjdump").is_file():
        return cuda_home / "bin" / "cuobjdump"
    found = shutil.which("cuobjdump")
    return Path(found) if found else None


def device_code(path: Path, cuobjdump: Path | None = None) -> DeviceCode:
    """The architectures compiled into the shared object at ``path``; empty when it has no device code."""
    if cuobjdump is not None:
        return _listed_by_cuobjdump(path, cuobjdump)
    return read_fatbin(path)


def read_fatbin(path: Path) -> DeviceCode:
    """Device code from the fat binary containers' headers, without the CUDA toolkit."""
    sass: set[str] = set()
    ptx: set[str] = set()
    try:
        with path.open("rb") as handle:
            elf = ELFFile(handle)
            blobs = [
                s.data()
                for s in (elf.get_section_by_name(n) for n in FATBIN_SECTIONS)
                if s is not None and s["sh_type"] != "SHT_NOBITS"
            ]
    except ELFError:
        return DeviceCode()
    for blob in blobs:
        for kind, arch in _fatbin_entries(blob):
            if kind == _KIND_SASS:
                sass.add(f"sm_{arch}")
            elif kind == _KIND_PTX:
                ptx.add(f"compute_{arch}")
    return DeviceCode(frozenset(sass), frozenset(ptx))


def _fatbin_entries(blob: bytes) -> list[tuple[int, str]]:
    """(kind, "90a") per entry of every container in a fatbin section."""
    entries = []
    start = blob.find(struct.pack("<I", _FATBIN_MAGIC))
    while 0 <= start and start + _HEADER.size <= len(blob):
        _magic, _version, header_size, size = _HEADER.unpack_from(blob, start)
        end = min(start + header_size + size, len(blob))
        offset = start + header_size
        while offset + _ENTRY.size + _ENTRY_FLAGS.size <= end:
            kind, _, entry_header, payload, *_, arch, _, _ = _ENTRY.unpack_from(blob, offset)
            (flags,) = _ENTRY_FLAGS.unpack_from(blob, offset + 40)
            if entry_header == 0:  # padding, not an entry
                break
            suffix = "a" if flags & _FLAG_ARCH_SPECIFIC else "f" if flags & _FLAG_FAMILY else ""
            entries.append((kind, f"{arch}{suffix}"))
            offset += entry_header + payload
        # Containers of several translation units follow each other, aligned: find the next magic.
        start = blob.find(struct.pack("<I", _FATBIN_MAGIC), max(end, start + 1))
    return entries


def _listed_by_cuobjdump(path: Path, cuobjdump: Path) -> DeviceCode:
    found: dict[str, set[str]] = {"cubin": set(), "ptx": set()}
    for flag in ("--list-elf", "--list-ptx"):
        # It exits 255 for "does not contain device code": an empty listing, not an error.
        listing = subprocess.run([str(cuobjdump), flag, str(path)], capture_output=True, text=True, check=False)
        for line in listing.stdout.splitlines():
            match = _CUOBJDUMP_RE.search(line.strip())
            if match:
                found[match.group(2)].add(match.group(1))
    return DeviceCode(frozenset(found["cubin"]), frozenset(name.replace("sm_", "compute_", 1) for name in found["ptx"]))


def missing_archs(found: DeviceCode, declared: ArchSpec) -> list[str]:
    """Declared architectures without their exact SASS (or PTX) in ``found``, sorted by SM number."""
    missing = (declared.sass - found.sass) | (declared.ptx - found.ptx)
    return sorted(missing, key=arch_sort_key)


def undeclared_archs(found: DeviceCode, declared: ArchSpec) -> list[str]:
    """SASS in ``found`` for architectures ``declared`` does not name, sorted by SM number: device code
    nobody asked for (each one compiled separately, for every ``.cu`` file)."""
    return sorted(found.sass - declared.sass, key=arch_sort_key)
