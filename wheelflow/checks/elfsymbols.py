"""Will a shared object load? Its undefined dynamic symbols resolved the way the dynamic loader would.

The loader searches one global scope: the object's DT_NEEDED libraries, breadth first, each
located by soname. A library is looked for in the wheel itself (RUNPATH/RPATH entries relative to
``$ORIGIN``), then in the runtime's library directories (for a torch extension: the pinned torch's
``lib/``, loaded by ``import torch`` before the extension, and the folders those libraries reach
through their own ``$ORIGIN`` RPATH, such as the CUDA library wheels' ``nvidia/cu13/lib``: see
``runtime_reach``), then, for the libraries the manylinux
policy lets every wheel assume (glibc, libstdc++, libgcc_s, ...), in this machine's own copies
(``ldconfig -p``, then the standard directories). Anything else a wheel needs must come from the
wheel or the runtime. Absolute RUNPATH entries are ignored: they name the build machine's
directories, not the user's. Whether the system libraries are old enough for the user's
machine is auditwheel's manylinux check, not this one.

Not required: weak undefined symbols (the loader leaves them null), and what the interpreter
provides (``Py*``/``_Py*``, libpython). CUDA driver libraries (libcuda.so.1, present only where a
GPU is) are assumed present when absent here: references with their symbol prefix resolve.

Symbol versions, minimally: a versioned reference (``memcpy@GLIBC_2.14``) resolves against an
export of that name with the same version or with none; an unversioned one against any export.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection, GNUVerSymSection

# The manylinux policy's list of libraries a wheel may assume on any system (PEP 600 / auditwheel).
SYSTEM_LIBRARIES = frozenset(
    {
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "librt.so.1",
        "libpthread.so.0",
        "libutil.so.1",
        "libnsl.so.1",
        "libresolv.so.2",
        "libcrypt.so.1",
        "libgcc_s.so.1",
        "libstdc++.so.6",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
        "libX11.so.6",
        "libXext.so.6",
        "libXrender.so.1",
        "libICE.so.6",
        "libSM.so.6",
        "libGL.so.1",
        "libgobject-2.0.so.0",
        "libgthread-2.0.so.0",
        "libglib-2.0.so.0",
    }
)
# Present wherever the GPU is, absent on a build machine: soname -> the prefixes of what it exports.
DRIVER_LIBRARIES: Mapping[str, tuple[str, ...]] = {"libcuda.so.1": ("cu",), "libnvidia-ml.so.1": ("nvml",)}
_INTERPRETER_SYMBOL = re.compile(r"^_?Py")
_INTERPRETER_LIBRARY = re.compile(r"^libpython\d")
_STANDARD_DIRS = (
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
)


@dataclass(frozen=True)
class Symbol:
    name: str
    version: str | None = None  # GLIBCXX_3.4.21; None: unversioned


@dataclass(frozen=True)
class SharedObject:
    path: Path
    soname: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]  # RUNPATH, or RPATH when there is no RUNPATH
    undefined: frozenset[Symbol]  # the strong references that must resolve
    exports: Mapping[str, frozenset[str | None]] = field(repr=False)  # name -> versions defined


@dataclass(frozen=True)
class Unresolved:
    """What keeps ``path`` from loading: symbols no library in scope exports, libraries found nowhere."""

    path: Path
    symbols: tuple[Symbol, ...] = ()
    libraries: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.symbols or self.libraries)


def is_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


def read_shared_object(path: Path) -> SharedObject:
    """The dynamic section and dynamic symbols of ``path`` (cached by path, size and mtime)."""
    stat = path.stat()
    return _read(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _read(path: Path, _size: int, _mtime: int) -> SharedObject:
    with path.open("rb") as handle:
        elf = ELFFile(handle)
        tags = [
            tag for section in elf.iter_sections() if isinstance(section, DynamicSection) for tag in section.iter_tags()
        ]
        versions = _version_names(elf)
        versym = next((s for s in elf.iter_sections() if isinstance(s, GNUVerSymSection)), None)
        dynsym = elf.get_section_by_name(".dynsym")
        undefined: set[Symbol] = set()
        exports: dict[str, set[str | None]] = {}
        for index, sym in enumerate(dynsym.iter_symbols() if dynsym is not None else ()):
            bind = sym["st_info"]["bind"]
            if not sym.name or bind not in ("STB_GLOBAL", "STB_WEAK", "STB_GNU_UNIQUE"):
                continue
            version = versions.get(_version_index(versym, index))
            if sym["st_shndx"] == "SHN_UNDEF":
                if bind != "STB_WEAK":  # the loader leaves an unresolved weak reference null
                    undefined.add(Symbol(sym.name, version))
            else:
                exports.setdefault(sym.name, set()).add(version)
    by_tag: dict[str, list[str]] = {}
    for tag in tags:
        for kind, attr in (
            ("DT_NEEDED", "needed"),
            ("DT_RUNPATH", "runpath"),
            ("DT_RPATH", "rpath"),
            ("DT_SONAME", "soname"),
        ):
            if tag.entry.d_tag == kind:
                by_tag.setdefault(kind, []).append(getattr(tag, attr))
    runpath = by_tag.get("DT_RUNPATH") or by_tag.get("DT_RPATH") or []
    return SharedObject(
        path,
        (by_tag.get("DT_SONAME") or [None])[0],
        tuple(by_tag.get("DT_NEEDED", [])),
        tuple(entry for value in runpath for entry in value.split(":") if entry),
        frozenset(undefined),
        {k: frozenset(v) for k, v in exports.items()},
    )


def _version_index(versym: GNUVerSymSection | None, index: int) -> int:
    if versym is None:
        return 1
    ndx = versym.get_symbol(index)["ndx"]
    return ndx & 0x7FFF if isinstance(ndx, int) else 1  # 0x8000: a hidden (non-default) version


def _version_names(elf: ELFFile) -> dict[int, str]:
    """Version index -> name, from what the object needs and what it defines (indexes 0 and 1: none)."""
    names: dict[int, str] = {}
    for section in elf.iter_sections():
        if isinstance(section, GNUVerNeedSection):
            for _need, auxiliaries in section.iter_versions():
                names.update({aux["vna_other"]: aux.name for aux in auxiliaries})
        elif isinstance(section, GNUVerDefSection):
            for definition, auxiliaries in section.iter_versions():
                if not definition["vd_flags"] & 0x1:  # VER_FLG_BASE names the file, not a version
                    names[definition["vd_ndx"]] = next(iter(auxiliaries)).name
    return names


@functools.lru_cache(maxsize=1)
def system_library_cache() -> Mapping[str, Path]:
    """soname -> path, from ``ldconfig -p`` (this machine's loader cache); empty where it cannot run."""
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if Path(p).exists()), None
    )
    if ldconfig is None:
        return {}
    listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout
    found: dict[str, Path] = {}
    for line in listing.splitlines():
        match = re.match(r"^\s*(\S+) \(([^)]*)\) => (\S+)$", line)
        if match and "64" in match.group(2):  # x86-64 / AArch64: not the 32-bit copies beside them
            found.setdefault(match.group(1), Path(match.group(3)))
    return found


def locate(
    soname: str,
    origin: Path,
    runpath: Sequence[str],
    libdirs: Sequence[Path],
    *,
    system: frozenset[str] = SYSTEM_LIBRARIES,
) -> Path | None:
    """Where the loader would find ``soname`` for an object in directory ``origin``, or None."""
    candidates = [
        Path(entry.replace("${ORIGIN}", str(origin)).replace("$ORIGIN", str(origin)))
        for entry in runpath
        if "ORIGIN" in entry
    ]
    candidates += list(libdirs)
    if soname in system:
        cached = system_library_cache().get(soname)
        candidates += [cached.parent] if cached else []
        candidates += [Path(d) for d in _STANDARD_DIRS]
    for directory in candidates:
        path = directory / soname
        if path.is_file() and is_elf(path):
            return path
    return None


def runtime_reach(libdirs: Sequence[Path]) -> list[Path]:
    """``libdirs`` and the folders their libraries reach through ``$ORIGIN`` RUNPATH/RPATH entries, in
    that order. ``import torch`` loads torch/lib's libraries, which find libcudart and the other CUDA
    libraries of the nvidia-* wheels through their RPATH (``$ORIGIN/../../nvidia/cu13/lib``); an
    extension's own reference to libcudart.so.13 is then met by the library already loaded. So a
    runtime given as torch/lib alone still reaches the CUDA libraries installed beside it."""
    found: dict[Path, None] = dict.fromkeys(Path(d) for d in libdirs)
    for directory in list(found):
        if not directory.is_dir():
            continue
        for library in sorted(directory.glob("lib*.so*")):
            if not library.is_file() or not is_elf(library):
                continue
            for entry in _origin_runpath(library):
                reached = Path(entry.replace("${ORIGIN}", str(library.parent)).replace("$ORIGIN", str(library.parent)))
                if reached.is_dir():
                    found.setdefault(reached.resolve(), None)
    return list(found)


def _origin_runpath(path: Path) -> list[str]:
    """The ``$ORIGIN``-relative RUNPATH (else RPATH) entries of ``path``, reading its dynamic section only."""
    try:
        with path.open("rb") as handle:
            dynamic = ELFFile(handle).get_section_by_name(".dynamic")
            if not isinstance(dynamic, DynamicSection):
                return []
            runpath = [t.runpath for t in dynamic.iter_tags("DT_RUNPATH")] or [
                t.rpath for t in dynamic.iter_tags("DT_RPATH")
            ]
    except (ELFError, OSError, ValueError):
        return []
    return [entry for value in runpath for entry in value.split(":") if "ORIGIN" in entry]


def resolve(
    path: Path,
    libdirs: Sequence[Path],
    *,
    system: frozenset[str] = SYSTEM_LIBRARIES,
    driver: Mapping[str, tuple[str, ...]] = DRIVER_LIBRARIES,
) -> Unresolved:
    """What of ``path``'s undefined symbols no library in its load scope exports, and which direct
    DT_NEEDED libraries are found nowhere (a missing dependency of a dependency is the runtime's own
    business and only shrinks the scope)."""
    top = read_shared_object(path)
    scope: list[SharedObject] = []
    missing: list[str] = []
    assumed: list[str] = []  # driver libraries absent here, whose symbols are taken on trust
    seen = {top.soname or path.name}
    queue = deque([(top, soname) for soname in top.needed])
    while queue:
        parent, soname = queue.popleft()
        if soname in seen or _INTERPRETER_LIBRARY.match(soname):
            continue
        seen.add(soname)
        found = locate(soname, parent.path.parent, parent.runpath, libdirs, system=system)
        if found is None:
            if soname in driver:
                assumed.append(soname)
            elif parent is top:
                missing.append(soname)
            continue
        library = read_shared_object(found)
        scope.append(library)
        queue.extend((library, needed) for needed in library.needed)
    prefixes = tuple(prefix for soname in assumed for prefix in driver[soname])
    unresolved = [
        symbol
        for symbol in top.undefined
        if not _INTERPRETER_SYMBOL.match(symbol.name)
        and not (prefixes and symbol.name.startswith(prefixes))
        and not any(_exports(library, symbol) for library in scope)
    ]
    return Unresolved(path, tuple(sorted(unresolved, key=lambda s: s.name)), tuple(missing))


def _exports(library: SharedObject, symbol: Symbol) -> bool:
    versions = library.exports.get(symbol.name)
    if not versions:
        return False
    return symbol.version is None or symbol.version in versions or None in versions


def demangle(names: Iterable[str]) -> dict[str, str]:
    """C++ names as people read them (``_ZN3c103fooEi`` -> ``c10::foo(int)``), with binutils' c++filt;
    names it cannot demangle, or all of them where c++filt is missing, map to themselves."""
    names = list(dict.fromkeys(names))
    mangled = [n for n in names if n.startswith("_Z")]
    readable = {n: n for n in names}
    tool = shutil.which("c++filt")
    if mangled and tool:
        out = subprocess.run([tool], input="\n".join(mangled) + "\n", capture_output=True, text=True, check=False)
        lines = out.stdout.splitlines()
        if out.returncode == 0 and len(lines) == len(mangled):
            readable.update(zip(mangled, lines))
    return readable
