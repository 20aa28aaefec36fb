"""``wheelflow images``: build the builder and runtime images offline (debootstrap + docker import)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from wheelflow.builds.builders.docker import docker_client
from wheelflow.builds.images import ensure_images
from wheelflow.cli.common import err_console, show_table
from wheelflow.core.home import wheelflow_home


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "images", help="build the builder and runtime images offline (debootstrap + docker import)"
    )
    parser.add_argument("--mirror", help="Debian archive URL (default: the one this machine's apt uses)")
    return parser


def run(args: argparse.Namespace) -> int:
    client = docker_client()
    with err_console.status("making images (debootstrap takes about a minute per base image)…"):
        outcome = ensure_images(
            client,
            mirror=args.mirror,
            cache=wheelflow_home() / "debootstrap-cache",
            log=lambda line: err_console.print(line, markup=False, highlight=False),
        )
    table = Table(title="wheelflow images")
    table.add_column("image")
    table.add_column("")
    for tag, what in outcome.items():
        table.add_row(tag, what)
    show_table(table)
    return 0
