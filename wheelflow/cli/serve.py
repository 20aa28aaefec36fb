"""``wheelflow serve``: serve wheelflow's deployments (deployments/) from this process, schedules included."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from wheelflow.cli.automations import add_window_options, install
from wheelflow.cli.common import connect_prefect, say, seconds
from wheelflow.core import secretenv
from wheelflow.core.errors import SpecError

NEEDS_PREFECT = True  # main() connects to a Prefect server first (see common.connect_prefect)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("serve", help="serve wheelflow's deployments from this process, schedules included")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="serve only this deployment (repeatable; default: all of them)"
    )
    parser.add_argument(
        "--monitor-projects",
        metavar="FILE",
        help="JSON list of the projects sync-monitor watches (default: the Prefect Variable "
        "wheelflow-monitor-projects; with neither, its schedule is registered inactive)",
    )
    parser.add_argument(
        "--monitor-interval",
        type=seconds("--monitor-interval"),
        metavar="SECONDS",
        help="run sync-monitor every SECONDS instead of every 15 minutes",
    )
    parser.add_argument(
        "--no-automations",
        action="store_true",
        help="do not register wheelflow's Prefect Automations (server-side alerts, zombie-run detection)",
    )
    add_window_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    connect_prefect()
    # Each served flow run is a child process with this one's environment, and reads its credentials there.
    secretenv.hand_down_to_children()
    from wheelflow.adapters.prefect_api import read_variable, serve_deployments
    from wheelflow.deployments import PROJECTS_VARIABLE, project_deployments, waiting_for_configuration

    monitored = None
    if args.monitor_projects:
        try:
            monitored = json.loads(Path(args.monitor_projects).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SpecError(
                "--monitor-projects",
                f"cannot read a JSON list from {args.monitor_projects} ({type(exc).__name__})",
                "give a file holding a JSON list of projects",
            ) from None
    known = [d.name for d in project_deployments()]
    for name in args.only or []:
        if name not in known:
            raise SpecError("--only", f"no deployment {name!r}", f"use one of: {', '.join(known)}")
    waiting = waiting_for_configuration(monitored, read_variable(PROJECTS_VARIABLE))
    deployments = project_deployments(monitored=monitored, monitor_interval=args.monitor_interval, inactive=waiting)
    deployments = [d for d in deployments if not args.only or d.name in args.only]
    for name, what in waiting.items():
        if not args.only or name in args.only:
            say(f"wheelflow: {name}: schedule registered inactive until configured: {what}")
    if not args.no_automations:
        install(args, monitor_interval=args.monitor_interval, inactive=waiting)
    say(f"wheelflow: serving {', '.join(d.name for d in deployments)} (Ctrl-C to stop)")
    serve_deployments(deployments)
    return 0
