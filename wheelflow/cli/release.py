"""``wheelflow release PATH``: build, check, upload and verify a release (a Prefect flow run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from wheelflow.cli.common import (
    add_json,
    connect_prefect,
    out_console,
    path_argument,
    report_outcome,
    say_ui_link,
    show_table,
)
from wheelflow.config.spec import load_spec
from wheelflow.core.home import wheelflow_home
from wheelflow.source.gitauth import refuse_url_credentials
from wheelflow.source.versioning import version_option

NEEDS_PREFECT = True  # main() connects to a Prefect server first (see common.connect_prefect)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("release", help="build, check, upload and verify a release (a Prefect flow run)")
    parser.add_argument("path", type=path_argument("PATH"), help="the project to release")
    parser.add_argument(
        "--spec",
        metavar="FILE",
        type=path_argument("--spec"),
        help="a standalone spec TOML (default: [tool.wheelflow] in "
        "PATH/pyproject.toml); paths in it are relative to PATH",
    )
    parser.add_argument("--version", help="the version to release (must agree with the tag and version file)")
    parser.add_argument("--to", action="append", metavar="TARGET", help="target name or index alias (repeatable)")
    parser.add_argument(
        "--builder",
        choices=["docker", "local"],
        help="how the wheel matrix is built (default: the spec's, else docker when a daemon answers)",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="a development build: next micro version + .devYYYYMMDDHHMM (for nightlies; no tag needed)",
    )
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="build the working tree where tracked files differ from the release commit (labelled dirty)",
    )
    parser.add_argument(
        "--approval",
        choices=["manual", "auto", "auto-if-staging-verified"],
        help="who decides before each target after the first (default: the spec's, else auto)",
    )
    add_json(parser, "the report")
    return parser


def run(args: argparse.Namespace) -> int:
    refuse_url_credentials(args.path, "PATH")  # before it could reach a flow run's parameters
    if args.version is not None:
        version_option(args.version, "--version")  # a flow run never exists for a version that is not one
    spec = load_spec(args.path, args.spec)  # validated up front: a bad spec never starts a flow run
    for name in args.to or []:
        spec.target(name)

    connect_prefect()  # after the input is checked: a bad spec never waits for a server
    from wheelflow.flows.release import release

    state = release(
        project=str(Path(args.path).absolute()),
        spec_file=args.spec,
        version=args.version,
        to=args.to,
        builder=args.builder,
        approval=args.approval,
        dev=args.dev,
        allow_dirty=args.allow_dirty,
        return_state=True,
    )
    flow_run_id = str(state.state_details.flow_run_id)
    crashed = {
        "ok": False,
        "name": spec.name,
        "version": args.version,
        "files": [],
        "flow_run_id": flow_run_id,
        "checks": [],
        "error": state.message,
    }
    code = report_outcome(
        state,
        wheelflow_home() / "reports" / f"{flow_run_id}.json",
        crashed,
        as_json=args.json,
        show=print_report,
        what="release",
    )
    say_ui_link(flow_run_id)
    return code


def print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"{report.get('name')} {report.get('version')} (flow run {report.get('flow_run_id')})")
    for column in ("file", "target", "upload", "proof", "sha256"):  # the layout of every files table
        table.add_column(column)
    for f in report["files"]:
        table.add_row(f["filename"], f["target"], f["upload"], f["status"], f["sha256"])
    show_table(table)
    checks = Table(title="checks")
    for column in ("check", "status", "detail"):
        checks.add_column(column)
    for c in report["checks"]:
        checks.add_row(c["check"], c["status"], c["detail"])
    show_table(checks)
    if report.get("cells"):
        cells = Table(title=f"wheel matrix ({report.get('builder')} builder)")
        for column in CELL_COLUMNS:
            cells.add_column(column)
        for c in report["cells"]:
            cells.add_row(*cell_columns(c))
        show_table(cells)
    for flag in report.get("flags") or []:  # what users should know though nothing failed
        out_console.print(f"warning: {flag}", highlight=False, markup=False, soft_wrap=True)
    verdict = "[green]released and verified[/green]" if report["ok"] else "[red]FAILED[/red]"
    out_console.print(verdict)
    if report["ok"] and report.get("install"):  # the last lines: what a user does next
        out_console.print("install it with:", highlight=False)
        for command in report["install"]:
            out_console.print(command, highlight=False, markup=False, soft_wrap=True)


#: The cell table's columns, as docs/matrix-and-builders.md describes them.
CELL_COLUMNS = ("cell", "wheel", "state", "duration", "smoke", "torch", "built from", "compiler cache")


def cell_columns(cell: dict) -> tuple[str, ...]:
    """One row of the cell table from a cell's JSON (``CellReport.json``)."""
    return (
        cell["cell"],
        cell.get("wheel") or "",
        cell["state"] + (" (cached)" if cell.get("cached") else ""),
        f"{cell.get('duration') or 0.0:.1f} s",
        cell.get("smoke") or "",
        cell.get("torch") or "",
        "sdist" if cell.get("from_sdist") else "source tree",
        cell.get("compiler_cache") or "",
    )
