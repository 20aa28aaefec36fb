"""``wheelflow server start|status|stop``: the home's local Prefect server (see adapters/localserver.py)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from wheelflow.adapters import localserver
from wheelflow.cli.common import add_json, say
from wheelflow.core.home import ensure_home, wheelflow_home


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "server", help="start, show or stop the local Prefect server of $WHEELFLOW_HOME (used without PREFECT_API_URL)"
    )
    parser.add_argument("action", choices=["start", "status", "stop"])
    add_json(parser, "the server's state")
    return parser


def run(args: argparse.Namespace) -> int:
    home = wheelflow_home()
    if args.action == "start":
        ensure_home()  # a home that cannot be written: exit 2 naming it, as every other command (not 6)
        state = localserver.ensure_server(
            home,
            timeout=localserver.start_timeout(os.environ),
            port=localserver.requested_port(os.environ),
            say=say,
        )
        info: dict[str, Any] = localserver.server_status(home) | {"pid": state.pid, "port": state.port}
    elif args.action == "status":
        info = localserver.server_status(home)
    else:
        info = localserver.stop_server(home)
    if localserver.user_api_url(os.environ):
        info["note"] = "PREFECT_API_URL is set: commands use that server, not this one"
    if args.json:
        print(json.dumps(info, indent=2))
    elif info["status"] in ("running", "starting"):
        print(f"{info['status']}: pid {info['pid']}, {info['ui_url']} (home {info['home']}, log {info['log']})")
    elif args.action == "stop" and info.get("pid"):
        print(
            f"stopped: the local Prefect server of {info['home']} (pid {info['pid']}, port {info['port']}); "
            f"`wheelflow server start` starts it on port {info['port']} again"
        )
    elif args.action == "stop":
        print(f"stopped: no local Prefect server was running for {info['home']}")
    else:
        print(f"{info['status']}: no local Prefect server runs for {info['home']}")
    if info.get("note"):
        say(f"wheelflow: note: {info['note']}")
    return 0 if args.action != "status" or info["status"] in ("running", "stopped") else 1
