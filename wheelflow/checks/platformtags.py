"""Does a manylinux wheel's binary honour its platform tag? auditwheel's own analysis says.

A ``manylinux_2_17`` tag promises the wheel loads on any system with glibc 2.17 or newer. A shared
object compiled on a newer system can need newer symbol versions (``GLIBC_2.34``, ``GLIBCXX_3.4.30``,
``CXXABI_1.3.13``): pip installs it on an older system and the import fails with ``version
`GLIBC_2.34' not found``. auditwheel (already the repair step's tool) knows which symbol versions
each manylinux policy allows; this module asks it (``analyze_wheel_abi``, what ``auditwheel show``
runs) for the best tag the wheel's symbol versions allow and compares it with each tag the filename
claims. Plain ``linux_*`` and non-Linux tags claim nothing and are not analysed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from packaging.utils import parse_wheel_filename

from wheelflow.checks.abi import unpacked
from wheelflow.core.distributions import Finding


def claimed_manylinux(filename: str) -> list[str]:
    """The manylinux platform tags a wheel's filename claims (legacy aliases such as manylinux2014 included)."""
    return sorted({tag.platform for tag in parse_wheel_filename(filename)[3] if tag.platform.startswith("manylinux")})


def platform_tag_findings(wheel: Path) -> list[Finding]:
    """One finding per claimed manylinux tag that promises more than the wheel's symbol versions allow."""
    if not wheel.name.endswith(".whl") or not claimed_manylinux(wheel.name):
        return []
    try:
        from auditwheel.error import AuditwheelError
        from auditwheel.wheel_abi import analyze_wheel_abi
        from auditwheel.wheeltools import get_wheel_architecture, get_wheel_libc
    except ImportError:  # auditwheel installs on Linux only; a manylinux wheel is checked where it runs
        return []
    quiet = logging.getLogger("auditwheel")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its per-library warnings are not the user's business here
    try:
        info = analyze_wheel_abi(
            get_wheel_libc(wheel.name),
            get_wheel_architecture(wheel.name),
            wheel,
            frozenset(),
            disable_isa_ext_check=True,
            allow_graft=True,
            # No library paths of this machine: the verdict rests on what the wheel's own ELF files
            # need (their version references), not on which CUDA or torch libraries this runner has.
            args_ldpaths="",
        )
    except AuditwheelError:  # no ELF in it (a pure wheel under a platform tag), or tags auditwheel cannot read
        return []
    except (ELFError, ValueError, OSError) as exc:  # a truncated or foreign shared object: no loader takes it
        return [
            Finding(
                wheel.name,
                "platform-tag",
                f"auditwheel cannot analyse its shared objects ({exc}), so its tag cannot be proven; fix: rebuild it",
            )
        ]
    finally:
        quiet.setLevel(level)
    allowed = info.sym_policy
    promises = {}  # one finding per policy, however many of its aliases the filename names
    for claimed in claimed_manylinux(wheel.name):
        try:
            promised = info.policies.get_policy_by_name(claimed)
        except LookupError:  # a tag newer than this auditwheel knows: it cannot be judged here
            continue
        if promised.priority > allowed.priority:
            promises.setdefault(promised.name, promised)
    findings = []
    for name, promised in sorted(promises.items()):
        beyond = _versions_beyond(info.versioned_symbols, promised.symbol_versions)
        needs = ", ".join(f"{version} ({library})" for library, version in beyond[:3]) or "newer symbol versions"
        members = _members_needing(wheel, {version for _, version in beyond}) if beyond else []
        where = ", ".join(members[:3]) + (f" and {len(members) - 3} more" if len(members) > 3 else "")
        verb = "needs" if len(members) == 1 else "need"
        findings.append(
            Finding(
                wheel.name,
                "platform-tag",
                f"{where or 'its shared objects'} {verb} {needs}, more than its tag {name} promises "
                f"(auditwheel: these symbol versions allow {allowed.name} at best); pip installs it on older "
                f"systems, where the import fails; fix: build it in a {_family(name)} image (older glibc and "
                f"compilers), or tag it {allowed.name} (auditwheel repair --plat {allowed.name})",
            )
        )
    return findings


def _family(tag: str) -> str:
    """``manylinux_2_17_x86_64`` → ``manylinux_2_17``."""
    return "_".join(tag.split("_")[:3])


def _versions_beyond(needed: dict[str, set[str]], allowed: dict[str, frozenset[str]]) -> list[tuple[str, str]]:
    """(library, symbol version) pairs the wheel needs that the policy does not list, for the message
    (auditwheel decided the verdict: this only names what it saw)."""
    beyond = []
    for library, versions in sorted(needed.items()):
        for version in sorted(versions):
            family, _, number = version.partition("_")
            if family in allowed and number not in allowed[family]:
                beyond.append((library, version))
    return beyond


def _members_needing(wheel: Path, versions: set[str]) -> list[str]:
    """The wheel's shared objects that need one of ``versions``, named as in the wheel."""
    from auditwheel.elfutils import elf_find_versioned_symbols

    named = []
    with unpacked(wheel) as objects:  # streamed to disk, never held whole
        for member, path in objects:
            try:
                with path.open("rb") as handle:
                    found = {version for _, version in elf_find_versioned_symbols(ELFFile(handle))}
            except (ELFError, ValueError):
                continue
            if found & versions:
                named.append(member)
    return named
