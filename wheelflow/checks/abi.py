"""The ABI gate: before any upload, will each wheel's compiled code run where it is meant to?

Two questions per wheel, answered from the files alone (no GPU, no import):

- GPU architectures: every shared object with device code carries SASS for each architecture the
  cell declares (``gpu-archs``, or its TORCH_CUDA_ARCH_LIST); a wheel whose shared objects have no
  device code at all while architectures are declared was built without CUDA. SASS for architectures
  nobody declared (a hard-coded ``-gencode`` list that overrides TORCH_CUDA_ARCH_LIST) is a warning
  that says what it costs, or a refusal with ``gpu-archs-policy = "exact"``. PTX is reported
  (``gpu_arch_rows``), never refused: it is how a wheel reaches GPUs newer than its SASS.
- Symbols: every shared object's undefined dynamic symbols resolve against what it loads from the
  wheel, the runtime (the pinned torch's ``lib/``) and the system (see ``elfsymbols``). The missing
  ones are named demangled: ``c10::foo(int)``, the ``undefined symbol: _ZN3c10...`` users otherwise
  meet at import when a wheel built for one torch meets another.

``compat_grid`` asks the symbol question against several runtimes at once (torch versions), as
table rows.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from elftools.common.exceptions import ELFError

from wheelflow.checks.devicecode import device_code, missing_archs, undeclared_archs
from wheelflow.checks.elfsymbols import Unresolved, demangle, is_elf, resolve, runtime_reach
from wheelflow.config.gpuarch import DEFAULT_ARCH_POLICY, ArchSpec, DeviceCode, arch_sort_key, describe
from wheelflow.core.distributions import Distribution, Finding
from wheelflow.core.errors import CheckError, RuntimeInstallError

Runtimes = Mapping[str, Sequence[Path]]  # label (e.g. "torch-2.9.1") -> its library directories
_SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")
_DATA_DIR = re.compile(r"^[^/]+\.data/(purelib|platlib)/")
_SHOWN = 3  # symbols named in one finding; the rest are counted


@contextmanager
def unpacked(wheel: Path) -> Iterator[list[tuple[str, Path]]]:
    """The wheel's ELF shared objects, extracted where they will be installed relative to each other
    (so ``$ORIGIN`` RUNPATHs find their neighbours): (member name, path) pairs, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="wheelflow-abi-") as tmp:
        try:
            found = _extract_shared_objects(wheel, Path(tmp))
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckError(f"{wheel.name}: cannot be read as a wheel ({exc}); fix: rebuild it") from None
        yield found


def _extract_shared_objects(wheel: Path, tmp: Path) -> list[tuple[str, Path]]:
    found = []
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            installed = _DATA_DIR.sub("", member)
            relative = PurePosixPath(installed)
            if not _SHARED_OBJECT.search(member) or relative.is_absolute() or ".." in relative.parts:
                continue
            target = Path(tmp, *relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as source, target.open("wb") as sink:
                while block := source.read(1 << 20):
                    sink.write(block)
            if is_elf(target):
                found.append((member, target))
    return found


def arch_findings(
    wheel: Path,
    objects: Sequence[tuple[str, Path]],
    declared: ArchSpec,
    cuobjdump: Path | None = None,
    policy: str = DEFAULT_ARCH_POLICY,
) -> list[Finding]:
    """Missing declared architectures per shared object; no device code anywhere is refused too.
    SASS for undeclared architectures is a warning, or with ``policy`` "exact" a refusal."""
    codes = {member: device_code(path, cuobjdump) for member, path in objects}
    with_code = {member: code for member, code in codes.items() if code}
    if objects and not with_code:
        names = ", ".join(member for member, _ in objects[:_SHOWN])
        return [
            Finding(
                wheel.name,
                "gpu-arch",
                f"{names} contain no GPU device code, but the cell declares {describe(declared.sass | declared.ptx)}; "
                "fix: build with the CUDA toolkit present (the build fell back to CPU-only code)",
            )
        ]
    findings = []
    for member, code in with_code.items():
        missing = missing_archs(code, declared)
        if missing:
            findings.append(
                Finding(
                    wheel.name,
                    "gpu-arch",
                    f"{member} has no device code for {', '.join(missing)} (it has {describe(code.sass | code.ptx)}); "
                    "fix: add them to the build's architectures (TORCH_CUDA_ARCH_LIST / -gencode), "
                    "or drop them from the cell's gpu-archs",
                )
            )
        extra = undeclared_finding(wheel.name, member, code, declared, policy)
        if extra is not None:
            findings.append(extra)
    return findings


def undeclared_finding(
    filename: str, member: str, code: DeviceCode, declared: ArchSpec, policy: str = DEFAULT_ARCH_POLICY
) -> Finding | None:
    """SASS for architectures the cell does not declare: a warning naming the likely cause and what it
    costs (nvcc compiles each architecture of each ``.cu`` file separately, so device-code compile time
    grows with the number of targets), or a refusal under ``gpu-archs-policy = "exact"``. None when
    the shared object carries no undeclared SASS."""
    extra = undeclared_archs(code, declared)
    if not extra:
        return None
    built = len(code.sass) + len(code.ptx)
    wanted = len(code.sass & declared.sass) + len(code.ptx & declared.ptx)
    undeclared_ptx = sorted(code.ptx - declared.ptx, key=arch_sort_key)
    plural = "architecture" if len(extra) == 1 else "architectures"
    cost = f"{len(extra)} extra {plural}" + (f" and PTX {', '.join(undeclared_ptx)}" if undeclared_ptx else "")
    if wanted:
        cost += f": {built} device-code targets compiled for {wanted} declared, about {built / wanted:.3g}× the device-code compile time"
    said = (
        f"{member} carries SASS for {', '.join(extra)}, which the cell does not declare "
        f"(declared: {describe(declared.sass | declared.ptx)}); likely cause: a hard-coded -gencode in setup.py "
        f"overrides TORCH_CUDA_ARCH_LIST (torch then adds no flags of its own); cost: {cost}"
    )
    if policy == "exact":
        return Finding(
            filename,
            "gpu-arch",
            f"{said}; fix: remove the hard-coded -gencode flags so TORCH_CUDA_ARCH_LIST decides, "
            'or declare these architectures in gpu-archs, or set gpu-archs-policy = "at-least" to only warn',
        )
    return Finding(
        filename,
        "gpu-arch",
        f"{said}; fix: remove the hard-coded -gencode flags so TORCH_CUDA_ARCH_LIST decides, "
        'or declare these architectures in gpu-archs (gpu-archs-policy = "exact" refuses such wheels)',
        warning=True,
    )


def symbol_findings(
    wheel: Path, objects: Sequence[tuple[str, Path]], runtime: Sequence[Path], label: str
) -> list[Finding]:
    """One finding per shared object that would not load against ``runtime`` (named ``label``)."""
    findings = []
    for member, problem in _unresolved(objects, runtime):
        findings.append(
            Finding(
                wheel.name,
                "abi-library" if problem.libraries else "abi-symbol",
                f"{member} would not load against {label}: {_explain(problem)}; fix: {_fix(problem, label)}",
            )
        )
    return findings


def installed_objects(site_packages: Path, dist_info: Path) -> list[tuple[str, Path]]:
    """The ELF shared objects an installed distribution put into ``site_packages`` (from its RECORD):
    (path as installed, file) pairs, for ``symbol_findings`` on a wheel as its users installed it."""
    record = dist_info / "RECORD"
    found = []
    for line in record.read_text(encoding="utf-8").splitlines() if record.is_file() else []:
        relative = PurePosixPath(line.split(",", 1)[0])
        path = site_packages.joinpath(*relative.parts)
        if _SHARED_OBJECT.search(relative.name) and ".." not in relative.parts and path.is_file() and is_elf(path):
            found.append((str(relative), path))
    return found


def _fix(problem: Unresolved, label: str) -> str:
    if problem.libraries:
        return (
            f"add the package that ships it to {label}'s requirements in abi.runtimes (runtimes are installed "
            "with their dependencies, as users get them), or ship it in the wheel (the repair step)"
        )
    return (
        f"build the wheel against the torch {label} pins (the same version in the build environment), "
        "or point abi.cell-runtime at the runtime it was built for"
    )


def _unresolved(objects: Sequence[tuple[str, Path]], runtime: Sequence[Path]) -> list[tuple[str, Unresolved]]:
    results = []
    reach = runtime_reach(runtime) if objects else []
    for member, path in objects:
        try:
            problem = resolve(path, reach)
        except (ELFError, ValueError) as exc:  # a truncated or foreign ELF: the loader would refuse it too
            problem = Unresolved(path, libraries=(f"<unreadable ELF: {exc}>",))
        if problem:
            results.append((member, problem))
    return results


def _explain(problem: Unresolved) -> str:
    if problem.libraries:
        return f"needs {', '.join(problem.libraries)}, found neither in the wheel, the runtime nor the system"
    readable = demangle(s.name for s in problem.symbols)
    shown = [
        f"{readable[s.name]}" + (f" ({s.name})" if readable[s.name] != s.name else "") for s in problem.symbols[:_SHOWN]
    ]
    more = f" and {len(problem.symbols) - _SHOWN} more" if len(problem.symbols) > _SHOWN else ""
    noun = "symbol" if len(problem.symbols) == 1 else "symbols"
    return f"undefined {noun} {'; '.join(shown)}{more}"


def abi_findings(
    dists: Iterable[Distribution | Path],
    archs: ArchSpec | None = None,
    runtimes: Runtimes | None = None,
    *,
    cuobjdump: Path | None = None,
    arch_policy: str = DEFAULT_ARCH_POLICY,
) -> list[Finding]:
    """The ABI gate for the wheels of one cell: declared GPU architectures (None: not checked) and
    symbol resolution against every runtime in ``runtimes`` (None or empty: not checked; a runtime
    with no directories checks against the wheel and the system libraries alone). SASS for undeclared
    architectures is a warning finding, a refusal when ``arch_policy`` is "exact". Sdists are skipped."""
    findings: list[Finding] = []
    for dist in dists:
        wheel = dist.path if isinstance(dist, Distribution) else Path(dist)
        if not wheel.name.endswith(".whl"):
            continue
        try:
            findings += _wheel_findings(wheel, archs, runtimes or {}, cuobjdump, arch_policy)
        except CheckError as exc:  # only unpacking raises it: the file is no zip
            findings.append(Finding(wheel.name, "archive", str(exc).split(": ", 1)[-1]))
    return findings


def _wheel_findings(
    wheel: Path, archs: ArchSpec | None, runtimes: Runtimes, cuobjdump: Path | None, arch_policy: str
) -> list[Finding]:
    findings: list[Finding] = []
    with unpacked(wheel) as objects:
        if archs is not None:
            findings += arch_findings(wheel, objects, archs, cuobjdump, arch_policy)
        for label, libdirs in runtimes.items():
            findings += symbol_findings(wheel, objects, libdirs, label)
    return findings


def unresolved_lines(objects: Sequence[tuple[str, Path]], runtime: Sequence[Path]) -> list[str]:
    """``member: why`` for each shared object that would not load against ``runtime``."""
    return [f"{member}: {_explain(problem)}" for member, problem in _unresolved(objects, runtime)]


def compat_grid(wheel: Path, runtimes: Runtimes) -> list[dict[str, str]]:
    """One row per runtime: would ``wheel`` load against it? For a Prefect table artifact."""
    rows = []
    with unpacked(wheel) as objects:
        for label, libdirs in runtimes.items():
            problems = _unresolved(objects, libdirs)
            rows.append(
                {
                    "wheel": wheel.name,
                    "runtime": label,
                    "loads": "no" if problems else "yes",
                    "why": "; ".join(f"{member}: {_explain(problem)}" for member, problem in problems),
                }
            )
    return rows


def gpu_arch_rows(wheels: Iterable[Path], cuobjdump: Path | None = None) -> list[dict[str, str]]:
    """One row per shared object with device code: its SASS and its PTX (forward compatibility, reported)."""
    rows = []
    for wheel in wheels:
        with unpacked(wheel) as objects:
            for member, path in objects:
                code: DeviceCode = device_code(path, cuobjdump)
                if code:
                    rows.append(
                        {
                            "wheel": wheel.name,
                            "file": member,
                            "sass": describe(code.sass),
                            "ptx": describe(code.ptx) + (" (JIT-compiled on newer GPUs)" if code.ptx else ""),
                        }
                    )
    return rows


def install_runtime(requirements: Sequence[str], dest: Path, pip_args: Sequence[str] = ()) -> list[Path]:
    """Install ``requirements`` (e.g. ``["torch==2.9.1"]``) with their dependencies into ``dest``, as a
    user's ``pip install`` would, and return the directories holding their shared libraries: a runtime
    for ``abi_findings``. A CUDA torch finds libcudart and the other CUDA libraries in the nvidia-*
    wheels it depends on (``nvidia/*/lib``, through its RPATH), so a runtime without its dependencies
    refuses correct wheels. pip's own configuration picks the index, as for every other install
    wheelflow runs (``pip_args`` add to it; ``--no-deps`` there installs the requirements alone). A
    ``dest`` that already holds exactly these requirements is reused (a CUDA torch with its libraries
    is gigabytes)."""
    marker = dest / ".wheelflow-runtime"
    wanted = "\n".join(requirements) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        return library_dirs(dest)
    if dest.exists():
        shutil.rmtree(dest)  # another runtime, or one half-installed when a run died
    dest.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(dest),
        *pip_args,
        *requirements,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeInstallError(
            f"cannot install the ABI check's runtime {' '.join(requirements)}: {last}; "
            "fix: check the pins in the spec's abi.runtimes and that the index (abi.pip-args, pip's configuration) "
            "serves them and their dependencies"
        )
    marker.write_text(wanted)
    return library_dirs(dest)


def library_dirs(root: Path) -> list[Path]:
    """The directories under ``root`` that hold ``lib*.so*`` files (torch/lib, nvidia/*/lib, the CUDA
    library wheels' folders), sorted."""
    return sorted({path.parent for path in root.rglob("lib*.so*") if path.is_file()})
