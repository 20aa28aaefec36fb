"""``wheelflow matrix PATH``: the expanded wheel matrix, rules applied, before anything is built."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from wheelflow.cli.common import add_json, path_argument, show_table
from wheelflow.config.spec import expanded_table, load_spec


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("matrix", help="show the expanded wheel matrix (axes, include/exclude, rules)")
    parser.add_argument(
        "path", nargs="?", default=".", type=path_argument("PATH"), help="the project (default: the current directory)"
    )
    parser.add_argument(
        "--spec",
        metavar="FILE",
        type=path_argument("--spec"),
        help="a standalone spec TOML; paths in it are relative to PATH",
    )
    add_json(parser, "one object per cell")
    return parser


def run(args: argparse.Namespace) -> int:
    spec = load_spec(Path(args.path), args.spec)
    rows = expanded_table(spec)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"{spec.name}: {len(rows)} cell(s)")
    columns = ("cell", "image", "local-version", "env")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["cell"],
            row["image"] or "",
            row["local-version"] or "",
            " ".join(f"{k}={v}" for k, v in row["env"].items()),
        )
    show_table(table)
    return 0
