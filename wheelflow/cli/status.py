"""``wheelflow status RUN_ID``: every task run of a flow run with its full state history."""

from __future__ import annotations

import argparse
import json
from typing import Any
from uuid import UUID

from wheelflow.cli.common import add_json, connect_prefect, say
from wheelflow.core.errors import SpecError
from wheelflow.ops.orchestration import RunOutcome
from wheelflow.ops.runhistory import describe_attempts

NEEDS_PREFECT = True  # main() connects to a Prefect server first (see common.connect_prefect)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("status", help="every task run of a flow run with its full state history")
    parser.add_argument("run_id", metavar="RUN_ID")
    add_json(parser, "a list, one object per task run,")
    return parser


def parse_run_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise SpecError("RUN_ID", f"{text!r} is not a flow run id", "pass the id that trigger printed") from None


def run(args: argparse.Namespace) -> int:
    run_id = parse_run_id(args.run_id)
    connect_prefect()
    from wheelflow.adapters.prefect_api import read_flow_run, run_histories

    flow_run = read_flow_run(run_id)
    # A finished flow run's last task states reach the API a moment after it ends: let them settle.
    finished = flow_run.state is not None and flow_run.state.is_final()
    histories = run_histories(run_id, settle=10.0 if finished else 0.0)
    state = flow_run.state
    # Exit codes as trigger --wait's: 1 Failed, 3 Cancelled or Crashed; a run still going is 0.
    exit_code = RunOutcome(str(run_id), "", state.name, state.type.value, None).exit_code if finished else 0
    if args.json:
        print(json.dumps([h.json() for h in histories], indent=2))
        return exit_code
    # Plain lines, not a table: CI logs are narrow and error messages must stay whole.
    print(f"flow run {flow_run.name} ({run_id}): {state.name if state else 'Unknown'}")
    for h in histories:
        duration = "" if h.duration_s is None else f", {h.duration_s:.1f} s"
        print(f"{h.name} [{h.flow_run}]: {h.state}, {h.attempts} attempt(s){duration}")
        for e in h.history:
            print(
                f"    {e.time[:19].replace('T', ' ')} {e.name}"
                + (f": {' '.join(e.message.split())}" if e.message else "")
            )
    if exit_code:
        say(f"wheelflow: flow run {flow_run.name} {state.name}: {' '.join((state.message or '').split())}")
        for h in histories:
            if h.state in ("Failed", "Crashed", "TimedOut"):
                say(f"wheelflow: {h.name}: {h.state} after {h.attempts} attempt(s)")
                for line in describe_attempts(h):
                    say(f"wheelflow:   {line}")
    return exit_code
