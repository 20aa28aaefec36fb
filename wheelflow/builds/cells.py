"""Build one matrix cell into one wheel, reusing it when the cell's inputs are unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

from wheelflow import __version__
from wheelflow.builds.buildenv import BuildSetup, read_build_info
from wheelflow.builds.builders import Builder, Log
from wheelflow.builds.repair import platform_of
from wheelflow.config.matrix import Cell
from wheelflow.config.repairoptions import RepairOptions
from wheelflow.core.distributions import Distribution, describe, parse_filename
from wheelflow.core.errors import BuildError
from wheelflow.core.reproducible import normalise_wheel

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CellBuild:
    cell: str
    wheel: Distribution
    cached: bool
    duration: float
    identity: str
    platform: str = ""  # the final wheel's platform tag (after the repair step)
    unrepaired_wheel: str | None = None  # the wheel as built, when the repair step changed it
    unrepaired_sha256: str | None = None
    build_torch: str | None = None  # the torch in the build environment, when it had one
    compiler_cache: tuple[int, int] | None = None  # (hits, compiles) of ccache, when the build compiled through it


def expected_version(version: str, cell: Cell) -> str:
    return f"{version}+{cell.local_version}" if cell.local_version else version


def cell_key(
    source_digest: str,
    cell: Cell,
    identity: str,
    build_env: Mapping[str, str],
    version: str,
    source_date_epoch: int | None = None,
    repair: RepairOptions | None = None,
    setup: BuildSetup | None = None,
) -> str:
    """``source_digest`` is the Source's identity (a clean commit's tree id), never a digest of the
    working tree; the epoch is in the wheel's timestamps, so it is an input too; so is the repair."""
    inputs = {
        "source": source_digest,
        "source_date_epoch": source_date_epoch,
        "cell": dict(cell.values),
        "identity": identity,  # the image id or the interpreter: a rebuilt image is a new cell
        "env": dict(sorted({**build_env, **cell.env}.items())),
        "build_requires": list(cell.build_requires),
        "version": expected_version(version, cell),
        "wheelflow": __version__,
        "repair": asdict(repair) if repair is not None else None,  # another repair is another wheel
        # another build environment is another wheel (the compiler cache changes no bytes)
        "setup": [list(setup.requires), setup.isolation] if setup is not None and setup.prepared else None,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def build_cell_wheel(
    builder: Builder,
    cell: Cell,
    *,
    project: Path,
    source_digest: str,
    name: str,
    version: str,
    build_env: Mapping[str, str],
    home: Path,
    log: Log,
    labels: Mapping[str, str],
    source_date_epoch: int | None = None,
    repair: RepairOptions | None = None,
    setup: BuildSetup | None = None,
) -> CellBuild:
    """Build the cell's wheel, then repair it (``repair``; None: publish it as built), in a staging
    directory that replaces the cell's cache entry only when everything succeeded."""
    started = time.monotonic()
    identity = builder.identity(cell)
    key = cell_key(source_digest, cell, identity, build_env, version, source_date_epoch, repair, setup)
    directory = home / "builds" / canonicalize_name(name) / version / "cells" / cell.name / key[:16]
    manifest = directory / MANIFEST
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        wheel = directory / recorded["wheel"]
        if wheel.is_file() and describe(wheel).sha256 == recorded["sha256"]:
            log(f"cell {cell.name}: inputs unchanged (key {key[:16]}): reusing {wheel.name}, no build started")
            unrepaired = recorded.get("unrepaired") or {}
            return CellBuild(
                cell.name,
                describe(wheel),
                True,
                time.monotonic() - started,
                identity,
                platform_of(wheel),
                unrepaired.get("wheel"),
                unrepaired.get("sha256"),
                (recorded.get("build_info") or {}).get("torch"),
            )

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=directory.parent))
    try:
        env = {
            **build_env,
            **cell.env,
            "WHEELFLOW_VERSION": expected_version(version, cell),
            "WHEELFLOW_RELEASE_VERSION": version,
        }
        if cell.local_version:
            env["WHEELFLOW_LOCAL_VERSION"] = cell.local_version
        if source_date_epoch is not None:
            env.setdefault("SOURCE_DATE_EPOCH", str(source_date_epoch))
        if cell.build_requires:
            constraints = staging / ".wheelflow-constraints.txt"
            constraints.write_text("\n".join(cell.build_requires) + "\n")
            env["PIP_CONSTRAINT"] = env["PIP_BUILD_CONSTRAINT"] = str(constraints)
        builder.build(cell, project, staging, env, log, labels, setup)
        info = read_build_info(staging)
        wheels = sorted(staging.glob("*.whl"))
        if len(wheels) != 1:
            raise BuildError(
                f"cell {cell.name}: the build left {len(wheels)} wheels, expected one; fix: build one wheel per cell"
            )
        parsed = parse_filename(wheels[0].name)
        wanted = expected_version(version, cell)
        if parsed is None or parsed[1] != Version(wanted):
            got = parsed[1] if parsed else wheels[0].name
            raise BuildError(
                f"cell {cell.name}: built version {got}, the cell's is {wanted}; fix: make the build read "
                "WHEELFLOW_RELEASE_VERSION / WHEELFLOW_LOCAL_VERSION"
            )
        if source_date_epoch is not None:
            normalise_wheel(wheels[0], source_date_epoch)  # entry modes follow the builder's umask otherwise
        built = describe(wheels[0])
        final, unrepaired = wheels[0], None
        if repair is not None:
            repaired = builder.repair(cell, wheels[0], staging / ".repaired", repair, log, labels)
            if repaired.repaired:
                wheels[0].unlink()
                final = repaired.path.replace(staging / repaired.path.name)
                if source_date_epoch is not None:  # the repair rewrote the archive with the time of day
                    normalise_wheel(final, source_date_epoch)
                unrepaired = {"wheel": built.filename, "sha256": built.sha256}
                log(f"cell {cell.name}: repaired {built.filename} -> {final.name}")
        dist = describe(final)
        for leftover in staging.iterdir():
            if leftover != final:
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        (staging / MANIFEST).write_text(
            json.dumps(
                {
                    "cell": cell.name,
                    "values": dict(cell.values),
                    "identity": identity,
                    "wheel": dist.filename,
                    "sha256": dist.sha256,
                    "unrepaired": unrepaired,
                    "build_info": {"torch": info.get("torch")},
                },
                indent=2,
            )
        )
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    wheel = directory / dist.filename
    return CellBuild(
        cell.name,
        describe(wheel),
        False,
        time.monotonic() - started,
        identity,
        platform_of(wheel),
        (unrepaired or {}).get("wheel"),
        (unrepaired or {}).get("sha256"),
        info.get("torch"),
        _cache_stats(info),
    )


def _cache_stats(info: Mapping[str, object]) -> tuple[int, int] | None:
    stats = info.get("compiler_cache")
    return (int(stats["hits"]), int(stats["compiles"])) if isinstance(stats, dict) else None


#: The one-line summary of failed cells stays short enough to read in a CI log; the report lists all.
SUMMARY_LIMIT = 480


def summarize_failures(failures: list[tuple[str, str]], total: int) -> str:
    """``N of TOTAL cells failed: CELL: ERROR; CELL and K more: ERROR``: cells failing with one error
    are grouped (named by the first), the whole line stays under ``SUMMARY_LIMIT`` characters."""
    groups: dict[str, list[str]] = {}
    for cell, error in failures:
        groups.setdefault(error.removeprefix(f"cell {cell}: "), []).append(cell)
    parts = [
        f"{cells[0]}" + (f" and {len(cells) - 1} more" if len(cells) > 1 else "") + f": {error}"
        for error, cells in sorted(groups.items(), key=lambda item: -len(item[1]))
    ]
    head = f"{len(failures)} of {total} cells failed: "
    line = head + "; ".join(parts)
    if len(line) <= SUMMARY_LIMIT:
        return line
    # Too long: each group's detail is cut in the middle, never its fix; groups that still do not
    # fit are counted (the report lists every cell's error in full).
    shown: list[str] = []
    for index, part in enumerate(parts):
        rest = len(parts) - index - 1
        more = f"; {rest} more error(s) in the report" if rest else ""
        room = SUMMARY_LIMIT - len(head + "; ".join([*shown, ""])) - len(more)
        cut = keep_fix(part, room)
        if cut is None:
            return head + "; ".join(shown) + f"; {len(parts) - index} more error(s) in the report"
        shown.append(cut)
    return head + "; ".join(shown)


#: What is kept of a message's detail when its fix must stay whole.
_MIN_DETAIL = 60


def keep_fix(message: str, limit: int) -> str | None:
    """``message`` within ``limit`` characters, cut in its detail (``…``) and never in its ``fix:``;
    None when even the fix with a short detail does not fit."""
    if len(message) <= limit:
        return message
    detail, sep, fix = message.rpartition("; fix: ")
    if not sep:
        detail, fix = message, ""
    keep = limit - len(sep) - len(fix) - 1
    if keep < min(_MIN_DETAIL, len(detail)):
        return None
    return detail[:keep].rstrip() + "…" + sep + fix
