"""``wheelflow backfill PATH``: build, upload and prove the cells of the current matrix that released
versions lack on their targets (a Prefect flow run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from wheelflow.cli.common import (
    add_json,
    connect_prefect,
    out_console,
    parse_pairs,
    path_argument,
    report_outcome,
    say_ui_link,
    show_table,
)
from wheelflow.config.spec import load_spec
from wheelflow.core.errors import SpecError
from wheelflow.core.home import wheelflow_home
from wheelflow.source.versioning import version_option

NEEDS_PREFECT = True  # main() connects to a Prefect server first (see common.connect_prefect)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("backfill", help="build and publish the matrix cells that released versions lack")
    parser.add_argument(
        "path", type=path_argument("PATH"), help="the project (a git repository whose tags are the releases)"
    )
    parser.add_argument(
        "--spec",
        metavar="FILE",
        type=path_argument("--spec"),
        help="a standalone spec TOML whose matrix is to be completed "
        "(default: [tool.wheelflow] in PATH/pyproject.toml); paths in it are relative to PATH",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--versions", metavar="V1,V2", help="only these released versions (default: every one)")
    which.add_argument("--since", metavar="V", help="only released versions at or above V")
    parser.add_argument(
        "--cells",
        nargs="+",
        default=[],
        metavar="AXIS=VALUE",
        help="only cells with these values, e.g. --cells torch=2.9.1 python=3.12",
    )
    parser.add_argument("--to", action="append", metavar="TARGET", help="target name or index alias (repeatable)")
    parser.add_argument(
        "--builder",
        choices=["docker", "local"],
        help="how cells are built (default: the spec's, else docker when a daemon answers)",
    )
    add_json(parser, "the result, one row per version, cell and target,")
    return parser


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.path, args.spec)  # validated up front: a bad spec never starts a flow run
    for name in args.to or []:
        spec.target(name)
    cells = parse_pairs(args.cells, "--cells", "torch=2.9.1")
    if cells:  # an axis or value no cell has is refused here (exit 2), not by the flow run after it exists
        from wheelflow.ops.backfill import select_cells

        if spec.matrix is None:
            raise SpecError("--cells", "the spec has no matrix, so no cells", "drop --cells")
        select_cells(spec.matrix.cells, cells)
    versions = [v.strip() for v in args.versions.split(",") if v.strip()] if args.versions else None
    if args.versions is not None and not versions:
        raise SpecError("--versions", f"{args.versions!r} names no version", "write e.g. --versions 1.0.0,1.1.0")
    for version in versions or []:
        version_option(version, "--versions")
    if args.since is not None:
        version_option(args.since, "--since")

    connect_prefect()  # after the input is checked: a bad spec never waits for a server
    from wheelflow.flows.backfill import backfill

    state = backfill(
        project=str(Path(args.path).absolute()),
        spec_file=args.spec,
        versions=versions,
        since=args.since,
        cells=cells or None,
        to=args.to,
        builder=args.builder,
        return_state=True,
    )
    run_id = str(state.state_details.flow_run_id)
    crashed = {"ok": False, "name": spec.name, "flow_run_id": run_id, "rows": [], "verdict": ""}
    code = report_outcome(
        state,
        wheelflow_home() / "reports" / f"backfill-{run_id}.json",
        crashed,
        as_json=args.json,
        show=print_summary,
        what="backfill",
    )
    say_ui_link(run_id)
    return code


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"backfill of {summary['name']} (flow run {summary['flow_run_id']})")
    for column in ("version", "cell", "target", "state", "file", "detail"):
        table.add_column(column)
    for row in summary["rows"]:
        style = "red" if row["state"] == "failed" else "green" if row["state"] == "backfilled" else None
        table.add_row(*(row[c] for c in ("version", "cell", "target", "state", "file", "detail")), style=style)
    show_table(table)
    if summary.get("verdict"):
        out_console.print(summary["verdict"])
