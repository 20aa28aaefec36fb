"""``wheelflow server start|status|stop|list``: the home's local Prefect server (see adapters/localserver.py)
and, for ``status``, ``stop``, ``list`` and ``stop --all``, the home's embedded index (index/localindex.py),
which lives the same way; ``list`` and ``stop --all``: every home server and index of this user."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from wheelflow.adapters import localserver
from wheelflow.cli.common import add_json, say
from wheelflow.core.errors import UsageError
from wheelflow.core.home import ensure_home, wheelflow_home
from wheelflow.index import localindex


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "server",
        help="start, show or stop the local Prefect server of $WHEELFLOW_HOME (used without PREFECT_API_URL); "
        "status and stop also show and stop the home's local index; "
        "list or stop --all: every home's server and index of this user",
    )
    parser.add_argument("action", choices=["start", "status", "stop", "list"])
    parser.add_argument(
        "--all", action="store_true", help="with stop: stop the servers of all this user's homes (see `server list`)"
    )
    add_json(parser, "the server's state")
    return parser


def idle_words(seconds: float) -> str:
    """``idle for`` as a person reads it: 42 s, 12 min, 2 h 05 min."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


def run_all(action: str, as_json: bool) -> int:
    """``server list`` and ``server stop --all``: every running server in this user's registry."""
    registry = localserver.registry_dir(os.environ)
    index_registry = localindex.registry_dir(os.environ)
    if action == "stop":
        stopped = localserver.stop_all(registry)
        indexes = stop_all_indexes(index_registry)
        if as_json:
            print(json.dumps({"stopped": stopped, "stopped_indexes": indexes}, indent=2))
        for server in [] if as_json else stopped:
            print(f"stopped: the local Prefect server of {server['home']} (pid {server['pid']}, port {server['port']})")
        for index in [] if as_json else indexes:
            print(f"stopped: the local index of {index['home']} (pid {index['pid']}, port {index['port']})")
        if not as_json and not stopped:
            print("stopped: no home's local Prefect server was running")
        return 0
    now = time.time()
    servers = [
        {
            "home": e.home,
            "port": e.port,
            "pid": e.pid,
            "idle_for_s": round(e.idle_for(now), 1),
            "ui_url": f"http://127.0.0.1:{e.port}",
        }
        for e in localserver.running_servers(registry)
    ]
    indexes = [
        {
            "home": e.home,
            "port": e.port,
            "pid": e.pid,
            "idle_for_s": round(e.idle_for(now), 1),
            "simple_url": f"http://127.0.0.1:{e.port}/simple/",
        }
        for e in localserver.running_servers(index_registry, is_server=localindex.is_index_watchdog)
    ]
    if as_json:
        print(json.dumps({"servers": servers, "indexes": indexes}, indent=2))
        return 0
    if not servers:
        print("no home's local Prefect server is running")
    else:
        rows = [("HOME", "PORT", "PID", "IDLE FOR")] + [
            (s["home"], str(s["port"]), str(s["pid"]), idle_words(float(s["idle_for_s"]))) for s in servers
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3])
    for index in indexes:
        idle = idle_words(float(index["idle_for_s"]))  # type: ignore[arg-type]
        print(f"local index of {index['home']}: {index['simple_url']} (pid {index['pid']}, idle for {idle})")
    return 0


def stop_all_indexes(registry: Path) -> list[dict[str, object]]:
    """Stop every running home index of the registry (each keeps its port for its next start)."""
    stopped = []
    for entry in localserver.running_servers(registry, is_server=localindex.is_index_watchdog):
        state = localindex.read_index_state(Path(entry.home) / "index")
        if state is not None and state.pid == entry.pid:
            localindex.stop_index(Path(entry.home))
        else:  # its home is gone or records another index: stop it by its PID
            localindex.kill_index_group(entry.pid)
        localserver.unregister(registry, entry.home, entry.pid)
        stopped.append({"home": entry.home, "pid": entry.pid, "port": entry.port})
    return stopped


def run(args: argparse.Namespace) -> int:
    if args.action == "list" or (args.action == "stop" and getattr(args, "all", False)):
        return run_all(args.action, args.json)
    if getattr(args, "all", False):
        raise UsageError(
            "--all", f"applies to `server stop` and `server list`, not `server {args.action}`", "drop --all"
        )
    home = wheelflow_home()
    if args.action == "start":
        ensure_home()  # a home that cannot be written: exit 2 naming it, as every other command (not 6)
        state = localserver.ensure_server(
            home,
            timeout=localserver.start_timeout(os.environ),
            port=localserver.requested_port(os.environ),
            say=say,
            idle=localserver.idle_timeout(os.environ),
        )
        info: dict[str, Any] = localserver.server_status(home) | {"pid": state.pid, "port": state.port}
    elif args.action == "status":
        info = localserver.server_status(home) | {"index": localindex.index_status(home)}
    else:
        info = localserver.stop_server(home) | {"index": localindex.stop_index(home)}
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
    index = info.get("index") if not args.json else None
    if isinstance(index, dict) and index.get("pid") and args.action == "stop":
        print(
            f"stopped: the local index of {index['home']} (pid {index['pid']}, port {index['port']}); "
            f"the next command that uses it starts it on port {index['port']} again"
        )
    elif isinstance(index, dict) and index["status"] in ("running", "starting"):
        print(f"local index {index['status']}: pid {index['pid']}, {index['simple_url']} (log {index['log']})")
    elif isinstance(index, dict) and args.action == "status":
        print(f"local index stopped: none runs for {index['home']}")
    if info.get("note"):
        say(f"wheelflow: note: {info['note']}")
    return 0 if args.action != "status" or info["status"] in ("running", "stopped") else 1
