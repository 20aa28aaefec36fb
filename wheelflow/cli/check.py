"""``wheelflow check FILE...``: audit built files without uploading (the release flow's own checks)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..audits import audit_files, audit_target, preflight
from ..distributions import blocking, describe, kind_of
from ..errors import SpecError
from ..indexes import limits_for
from ..spec import INDEX_ALIASES, Target
from .common import add_json, add_spec, load_spec_arg, out_console, parse_pairs, say


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("check", help="audit built files without uploading (the release flow's own checks)")
    parser.add_argument("files", nargs="+", metavar="FILE")
    add_spec(parser)
    parser.add_argument("--target", help="also apply this target's rules (size limit, budget, local versions, platform tags)")
    parser.add_argument("--cell", action="append", default=[], metavar="AXIS=VALUE",
                        help="the matrix cell that built the files, e.g. python=3.11 torch=2.5.1 (repeatable)")
    add_json(parser, "the findings")
    return parser


def run(args: argparse.Namespace) -> int:
    cell = parse_pairs(args.cell, "--cell", "torch=2.5.1")
    paths = [Path(f) for f in args.files]
    for path in paths:
        if not path.is_file():
            raise SpecError("FILE", f"{str(path)!r} does not exist", "pass the paths of built wheels and sdists")
    spec = load_spec_arg(args.spec, args.project) if args.spec or args.project else None
    dists = [describe(p) for p in paths if kind_of(p.name)]
    findings = preflight(dists, name=spec.name if spec else None, cell=cell, strict=bool(spec and spec.strict_checks))
    findings += audit_files([p for p in paths if not kind_of(p.name)])  # names the files that are no distribution
    if args.target:
        if spec is not None:
            target = spec.target(args.target)
        elif args.target in INDEX_ALIASES:
            target = Target(name=args.target, index=args.target)
        else:
            raise SpecError("--target", f"unknown target {args.target!r} without --spec",
                            f"pass --spec, or use one of {', '.join(INDEX_ALIASES)}")
        findings += audit_target(dists, limits_for(target), target.name)
    if args.json:
        print(json.dumps({
            "ok": not blocking(findings),
            "files": [{"filename": d.filename, "sha256": d.sha256, "size": d.path.stat().st_size} for d in dists],
            "findings": [{"filename": f.filename, "rule": f.rule, "message": f.message,
                          "severity": "warning" if f.warning else "error"} for f in findings],
        }, indent=2))
    for finding in findings:
        say(f"wheelflow: check: {finding}")
    if not args.json and not blocking(findings):
        verdict = "passed with warnings" if findings else "pass every check"
        out_console.print(f"[green]{len(dists)} file(s) {verdict}[/green]")
    return 1 if blocking(findings) else 0
