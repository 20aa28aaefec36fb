"""``wheelflow check FILE...``: audit built files without uploading (the release flow's own checks)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from wheelflow.checks.abi import abi_findings, compat_grid
from wheelflow.checks.audits import audit_files, audit_target, preflight, unreadable
from wheelflow.checks.devicecode import find_cuobjdump
from wheelflow.cli.common import (
    add_json,
    add_spec,
    load_spec_arg,
    out_console,
    parse_pairs,
    path_argument,
    say,
    split_pairs,
)
from wheelflow.config.gpuarch import ARCH_POLICIES, DEFAULT_ARCH_POLICY, ArchSpec, declared_archs, parse_archs
from wheelflow.config.matrix import Cell
from wheelflow.config.spec import INDEX_ALIASES, IndexTarget, ReleaseSpec, Target
from wheelflow.core.distributions import artifact_kind_of, blocking, describe
from wheelflow.core.errors import SpecError
from wheelflow.index.indexes import limits_for


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("check", help="audit built files without uploading (the release flow's own checks)")
    parser.add_argument("files", nargs="+", metavar="FILE", type=path_argument("FILE"))
    add_spec(parser)
    parser.add_argument(
        "--target", help="also apply this target's rules (size limit, budget, local versions, platform tags)"
    )
    parser.add_argument(
        "--cell",
        action="append",
        default=[],
        metavar="AXIS=VALUE",
        help="the matrix cell that built the files, e.g. python=3.11 torch=2.5.1 (repeatable)",
    )
    parser.add_argument(
        "--gpu-archs",
        metavar="ARCHS",
        help="the ABI gate: device code every shared object must "
        'carry, e.g. "sm_80,sm_90" or "8.0;9.0+PTX" (default: the --cell\'s gpu-archs with --spec)',
    )
    parser.add_argument(
        "--gpu-archs-policy",
        choices=ARCH_POLICIES,
        help="the ABI gate: SASS for architectures not declared is a warning (at-least) or refused (exact) "
        "(default: the --cell's gpu-archs-policy with --spec, else at-least)",
    )
    parser.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="LABEL=DIR[:DIR]",
        help="the ABI gate: library folders (e.g. an installed torch's lib/) each wheel's undefined "
        "symbols must resolve against (repeatable: every runtime must load it)",
    )
    add_json(parser, "the findings")
    return parser


def run(args: argparse.Namespace) -> int:
    cell = parse_pairs(args.cell, "--cell", "torch=2.5.1")
    paths = [Path(f) for f in args.files]
    for path in paths:
        if not path.is_file():
            raise SpecError("FILE", f"{str(path)!r} does not exist", "pass the paths of built wheels and sdists")
    spec = load_spec_arg(args.spec, args.project) if args.spec or args.project else None
    dists = [describe(p) for p in paths if artifact_kind_of(p.name)]
    findings = preflight(dists, name=spec.name if spec else None, cell=cell, strict=bool(spec and spec.strict_checks))
    findings += audit_files(
        [p for p in paths if not artifact_kind_of(p.name)]
    )  # names the files that are no distribution
    if args.target:
        if spec is not None:
            target = spec.target(args.target)
        elif args.target in INDEX_ALIASES:
            target: Target = IndexTarget(name=args.target, index=args.target)
        else:
            raise SpecError(
                "--target",
                f"unknown target {args.target!r} without --spec",
                f"pass --spec, or use one of {', '.join(INDEX_ALIASES)}",
            )
        findings += audit_target(dists, limits_for(target), target.name)
    archs = parse_archs(args.gpu_archs, "--gpu-archs") if args.gpu_archs else cell_archs(spec, cell)
    policy = args.gpu_archs_policy or cell_arch_policy(spec, cell)
    runtimes = {
        label: [Path(d) for d in dirs.split(":") if d]
        for label, dirs in split_pairs(args.runtime, "--runtime", "torch-2.9=/venv/torch/lib")
    }
    for label, dirs in runtimes.items():
        for folder in dirs:
            if not folder.is_dir():
                raise SpecError(
                    "--runtime",
                    f"{label}: {str(folder)!r} is not a folder",
                    "pass LABEL=DIR[:DIR] with existing library folders",
                )
    readable = [d for d in dists if d.filename not in unreadable(findings)]  # refused entries: never unpacked
    if archs is not None or runtimes:
        findings += abi_findings(readable, archs, runtimes, cuobjdump=find_cuobjdump(), arch_policy=policy)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not blocking(findings),
                    "files": [
                        {"filename": d.filename, "sha256": d.sha256, "size": d.path.stat().st_size} for d in dists
                    ],
                    "findings": [
                        {
                            "filename": f.filename,
                            "rule": f.rule,
                            "message": f.message,
                            "severity": "warning" if f.warning else "error",
                        }
                        for f in findings
                    ],
                    "grid": [row for d in readable if d.kind == "wheel" for row in compat_grid(d.path, runtimes)]
                    if runtimes
                    else [],
                },
                indent=2,
            )
        )
    for finding in findings:
        say(f"wheelflow: check: {finding}")
    if not args.json and not blocking(findings):
        verdict = "passed with warnings" if findings else "pass every check"
        out_console.print(f"[green]{len(dists)} file(s) {verdict}[/green]")
    return 1 if blocking(findings) else 0


def cell_archs(spec: ReleaseSpec | None, values: dict[str, str]) -> ArchSpec | None:
    """The declared architectures of the one cell of the spec's matrix that --cell names, if any."""
    cell = _the_cell(spec, values)
    return declared_archs(cell.gpu_archs, cell.env) if cell is not None else None


def cell_arch_policy(spec: ReleaseSpec | None, values: dict[str, str]) -> str:
    """The gpu-archs-policy of the one cell --cell names, else the default."""
    cell = _the_cell(spec, values)
    return cell.gpu_archs_policy if cell is not None else DEFAULT_ARCH_POLICY


def _the_cell(spec: ReleaseSpec | None, values: dict[str, str]) -> Cell | None:
    if spec is None or spec.matrix is None or not values:
        return None
    matching = [c for c in spec.matrix.cells if all(c.values.get(k) == v for k, v in values.items())]
    return matching[0] if len(matching) == 1 else None
