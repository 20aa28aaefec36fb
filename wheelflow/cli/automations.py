"""``wheelflow automations install``: register wheelflow's Prefect Automations (server-side alerts
and zombie-run detection, see wheelflow/automations.py) on the server PREFECT_API_URL names.
``wheelflow serve`` does the same when it starts; this command is for ``prefect deploy`` users."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection
from typing import Any

from wheelflow.cli.common import connect_prefect, say, seconds
from wheelflow.deployments import MONITOR_INTERVAL, NIGHTLY_INTERVAL
from wheelflow.ops.alerts import configured_channels
from wheelflow.ops.automations import HEARTBEAT_ENV, Windows, automation_destinations, wheelflow_automations

NEEDS_PREFECT = True  # main() connects to a Prefect server first (see common.connect_prefect)


def add_window_options(parser: argparse.ArgumentParser) -> None:
    defaults = Windows()
    group = parser.add_argument_group("automation windows (seconds)")
    group.add_argument(
        "--alert-dedup-window",
        type=seconds("--alert-dedup-window"),
        default=defaults.dedup,
        metavar="S",
        help="after a release fails, how long its own hook has to deliver the rich alert before the "
        f"server sends one (default {defaults.dedup:.0f})",
    )
    group.add_argument(
        "--running-limit",
        type=seconds("--running-limit"),
        default=defaults.running_limit,
        metavar="S",
        help=f"alert when a run stays Running longer (default {defaults.running_limit:.0f})",
    )
    group.add_argument(
        "--paused-limit",
        type=seconds("--paused-limit"),
        default=defaults.paused_limit,
        metavar="S",
        help=f"alert when a run stays Paused (awaiting approval) longer (default {defaults.paused_limit:.0f})",
    )
    group.add_argument(
        "--zombie-window",
        type=seconds("--zombie-window"),
        metavar="S",
        help=f"mark a run Crashed after this long without a heartbeat (default: 3 × {HEARTBEAT_ENV}, "
        "which the workers must share)",
    )


def plan(
    args: argparse.Namespace, *, monitor_interval: float | None, inactive: Collection[str] = ()
) -> Callable[[], list[str]]:
    """Read what the options and the alert channels describe, changing nothing (a channel that cannot
    be read fails here), and return what installs it: ``setup`` checks every input before it changes
    anything."""
    from wheelflow.adapters.prefect_api import install_automations, read_secret, ui_base_url

    windows = Windows(
        dedup=args.alert_dedup_window,
        running_limit=args.running_limit,
        paused_limit=args.paused_limit,
        zombie=args.zombie_window,
        # a schedule registered inactive (waiting for its configuration) cannot go silent: no page for it
        silent={
            name: interval
            for name, interval in (
                ("sync-monitor", monitor_interval or MONITOR_INTERVAL),
                ("nightly", NIGHTLY_INTERVAL),
            )
            if name not in inactive
        },
    )
    destinations, unreachable = automation_destinations(configured_channels(read_secret=read_secret))
    specs = wheelflow_automations(windows, notify=bool(destinations), ui_base=ui_base_url())

    def apply() -> list[str]:
        done = install_automations(specs, destinations)
        where = (
            ", ".join(str(d) for d in destinations)
            or "nowhere: no WHEELFLOW_ALERT_WEBHOOK / _SLACK_WEBHOOK / _DISCORD_WEBHOOK"
        )
        say(
            f"wheelflow: automations {', '.join(f'{name} ({what})' for name, what in done.items())}; "
            f"server-side alerts go to {where}"
            + (f" ({', '.join(unreachable)}: only from the release hook)" if unreachable else "")
        )
        return list(done)

    return apply


def install(args: argparse.Namespace, *, monitor_interval: float | None, inactive: Collection[str] = ()) -> list[str]:
    """Register the automations the options describe; one line says what and where it notifies."""
    return plan(args, monitor_interval=monitor_interval, inactive=inactive)()


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("automations", help="register wheelflow's Prefect Automations (server-side alerts)")
    actions = parser.add_subparsers(dest="action", required=True)
    install_parser = actions.add_parser(
        "install", help="create them, or update those whose definition changed (pending alerts still fire)"
    )
    add_window_options(install_parser)
    install_parser.add_argument(
        "--monitor-interval",
        type=seconds("--monitor-interval"),
        metavar="S",
        help="sync-monitor's schedule interval, if not the shipped 15 minutes",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from wheelflow.adapters.prefect_api import read_variable, schedules_switched_on
    from wheelflow.deployments import PROJECTS_VARIABLE, waiting_for_configuration

    connect_prefect()
    # The same silent alerts serve and setup install: none for a schedule that is switched off on the
    # server, nor for one not registered there yet that serve and setup would register switched off.
    switched_on = schedules_switched_on()
    waiting = waiting_for_configuration(None, read_variable(PROJECTS_VARIABLE))
    inactive = {name for name, on in switched_on.items() if not on} | {n for n in waiting if n not in switched_on}
    install(args, monitor_interval=args.monitor_interval, inactive=inactive)
    return 0
