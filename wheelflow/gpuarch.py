"""GPU architectures: what a cell declares, and what device code a shared object really carries.

A CUDA shared object keeps its kernels in the ``.nv_fatbin`` ELF section: one or more fat binary
containers, each a list of entries, either SASS (a cubin for one SM, e.g. ``sm_80``) or PTX (the
virtual ISA, JIT-compiled by the driver on GPUs newer than any SASS present). ``cuobjdump
--list-elf/--list-ptx`` lists them where a CUDA toolkit has it; otherwise the containers' headers are
read here directly (their layout is stable since CUDA 9 and checked against cuobjdump in the tests).

Names: SASS ``sm_80``/``sm_90a``/``sm_100f``, PTX ``compute_90``. A declaration comes from a
``gpu-archs`` list (``["sm_80", "sm_90", "compute_90"]``) or from PyTorch's ``TORCH_CUDA_ARCH_LIST``
(``"8.0;9.0+PTX"``: SASS for both, PTX for 9.0).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from wheelflow.errors import SpecError

FATBIN_SECTIONS = (".nv_fatbin", "__nv_relfatbin")  # the second holds relocatable (-rdc) device code
_FATBIN_MAGIC = 0xBA55ED50
_HEADER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries that follow
_ENTRY = struct.Struct("<HHIQIIHHIII")  # kind, ?, header size, payload size, ..., arch (offset 28)
_ENTRY_FLAGS = struct.Struct("<Q")  # at offset 40
_KIND_PTX, _KIND_SASS = 1, 2
_FLAG_ARCH_SPECIFIC, _FLAG_FAMILY = 0x100000, 0x200000  # sm_90a, sm_100f
_NAME_RE = re.compile(r"^(sm|compute)_(\d{2,3})([af]?)$")
_TORCH_RE = re.compile(r"^(\d+)\.(\d)([af]?)(\+PTX)?$", re.IGNORECASE)
_CUOBJDUMP_RE = re.compile(r"\.(sm_\d+[af]?)\.(cubin|ptx)$")


@dataclass(frozen=True)
class DeviceCode:
    """The architectures present: ``sass`` like {"sm_80"}, ``ptx`` like {"compute_90"}."""

    sass: frozenset[str] = frozenset()
    ptx: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.sass or self.ptx)


ArchSpec = DeviceCode  # a declaration has the same shape as what is found


def parse_archs(value: str | Sequence[str], key: str = "gpu-archs") -> ArchSpec:
    """``["sm_80", "compute_90"]``, ``"8.0;9.0+PTX"`` or ``["8.0", "9.0+PTX"]``; a SpecError names ``key``."""
    tokens = re.split(r"[;\s,]+", value) if isinstance(value, str) else [str(v) for v in value]
    sass: set[str] = set()
    ptx: set[str] = set()
    for token in filter(None, (t.strip() for t in tokens)):
        named, torch = _NAME_RE.match(token), _TORCH_RE.match(token)
        if named:
            (sass if named.group(1) == "sm" else ptx).add(token)
        elif torch:
            number = f"{torch.group(1)}{torch.group(2)}{torch.group(3)}"
            sass.add(f"sm_{number}")
            if torch.group(4):
                ptx.add(f"compute_{number}")
        else:
            raise SpecError(key, f"{token!r} is not a GPU architecture",
                            'write sm_80 / compute_90, or TORCH_CUDA_ARCH_LIST style "8.0;9.0+PTX"')
    if not sass and not ptx:
        raise SpecError(key, f"{value!r} names no GPU architecture", 'write e.g. ["sm_80", "sm_90"]')
    return ArchSpec(frozenset(sass), frozenset(ptx))


def declared_archs(gpu_archs: str | Sequence[str] | None, env: Mapping[str, str],
                   key: str = "gpu-archs") -> ArchSpec | None:
    """A cell's declaration: its ``gpu-archs`` value, else its TORCH_CUDA_ARCH_LIST, else None (not checked)."""
    if gpu_archs is not None:
        return parse_archs(gpu_archs, key)
    if env.get("TORCH_CUDA_ARCH_LIST"):
        return parse_archs(env["TORCH_CUDA_ARCH_LIST"], "env.TORCH_CUDA_ARCH_LIST")
    return None


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
            blobs = [s.data() for s in (elf.get_section_by_name(n) for n in FATBIN_SECTIONS)
                     if s is not None and s["sh_type"] != "SHT_NOBITS"]
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
    return DeviceCode(frozenset(found["cubin"]),
                      frozenset(name.replace("sm_", "compute_", 1) for name in found["ptx"]))


def missing_archs(found: DeviceCode, declared: ArchSpec) -> list[str]:
    """Declared architectures without their exact SASS (or PTX) in ``found``, sorted by SM number."""
    missing = (declared.sass - found.sass) | (declared.ptx - found.ptx)
    return sorted(missing, key=_sort_key)


def _sort_key(name: str) -> tuple[int, str]:
    match = _NAME_RE.match(name)
    return (int(match.group(2)), name) if match else (0, name)


def describe(archs: frozenset[str]) -> str:
    return ", ".join(sorted(archs, key=_sort_key)) or "none"
