"""``wheelflow trigger DEPLOYMENT``: start a deployment's flow run through the Prefect API (for CI)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..orchestration import RunOutcome
from .common import add_json, parse_pairs, say


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("trigger", help="start a deployment's flow run through the Prefect API (for CI)")
    parser.add_argument("deployment", help="DEPLOYMENT or FLOW/DEPLOYMENT, e.g. release")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a flow parameter; JSON values (numbers, lists, true) are read as JSON (repeatable)")
    parser.add_argument("--wait", action="store_true",
                        help="follow the run; exit 0 on Completed, 1 Failed, 3 Cancelled/Crashed, 4 timeout")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="with --wait: give up after this long")
    add_json(parser, "the outcome")
    return parser


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; a VALUE that reads as JSON (numbers, true, lists, objects) is taken as JSON."""
    params: dict[str, Any] = {}
    for key, value in parse_pairs(pairs, "--param", "version=1.2.3").items():
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def run(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client

    from ..prefect_api import follow_run, start_run, ui_url

    parameters = parse_params(args.param)
    with get_client(sync_client=True) as client:
        _, flow_run = start_run(client, args.deployment, parameters)
        url = ui_url(str(flow_run.id))
        say(f"wheelflow: started {flow_run.name} ({flow_run.id}) of {args.deployment}" + (f": {url}" if url else ""))
        state, timed_out = flow_run.state, False
        if args.wait:
            def on_state(name: str, message: str | None) -> None:
                say(f"wheelflow: {flow_run.name}: {name}" + (f": {' '.join(message.split())}" if message else ""))

            state, timed_out = follow_run(client, flow_run.id, timeout=args.timeout, on_state=on_state)
    outcome = RunOutcome(str(flow_run.id), args.deployment, state.name if state else "Unknown",
                         state.type.value if state else "UNKNOWN", url, timed_out)
    if args.json:
        print(json.dumps(outcome.json(), indent=2))
    if not args.wait:
        return 0
    if timed_out:
        say(f"wheelflow: gave up after {args.timeout:g} s; the run goes on: {flow_run.id}")
    return outcome.exit_code
