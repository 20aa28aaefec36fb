"""``wheelflow status RUN_ID``: a flow run's state, message and reason, and every task run with its
full state history."""

from __future__ import annotations

import argparse
import json
from typing import Any
from uuid import UUID

from wheelflow.cli.common import add_json, connect_prefect, say
from wheelflow.core.errors import SpecError
from wheelflow.ops.orchestration import EXIT_RUNNING, run_status
from wheelflow.ops.runhistory import describe_attempts

NEEDS_PREFECT = True  # main() connects to a Prefect server first (see common.connect_prefect)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "status",
        help="a flow run's state and reason, and every task run with its full state history; "
        "exit 0 Completed, 1 Failed, 3 Cancelled/Crashed, 5 not finished yet",
    )
    parser.add_argument("run_id", metavar="RUN_ID")
    add_json(parser, "an object: the flow run's state, message, reason, exit_code and tasks,")
    return parser


def parse_run_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise SpecError("RUN_ID", f"{text!r} is not a flow run id", "pass the id that trigger printed") from None


def run(args: argparse.Namespace) -> int:
    run_id = parse_run_id(args.run_id)
    connect_prefect()
    from prefect.client.orchestration import get_client

    from wheelflow.adapters.prefect_api import (
        error_logs,
        final_message,
        read_flow_run,
        release_verdict,
        run_histories,
        ui_url,
    )

    flow_run = read_flow_run(run_id)
    state = flow_run.state
    # A finished flow run's last task states reach the API a moment after it ends: let them settle.
    finished = state is not None and state.is_final()
    histories = run_histories(run_id, settle=10.0 if finished else 0.0)
    with get_client(sync_client=True) as client:
        failed_checks = release_verdict(client, run_id)["failed_checks"]
        errors = error_logs(client, run_id) if finished and not histories else []
        message = final_message(client, run_id, state)
    status = run_status(
        str(run_id),
        flow_run.name,
        state.name if state else None,
        state.type.value if state else None,
        message,
        [h.json() for h in histories],
        failed_checks,
        ui_url(str(run_id)),
        errors,
    )
    exit_code = status["exit_code"]
    if args.json:
        print(json.dumps(status, indent=2))
        return exit_code
    # Plain lines, not a table: CI logs are narrow and error messages must stay whole.
    print(
        f"flow run {flow_run.name} ({run_id}): {status['state']}"
        + (f": {status['message']}" if status["message"] else "")
    )
    for h in histories:
        duration = "" if h.duration_s is None else f", {h.duration_s:.1f} s"
        print(f"{h.name} [{h.flow_run}]: {h.state}, {h.attempts} attempt(s){duration}")
        for e in h.history:
            print(
                f"    {e.time[:19].replace('T', ' ')} {e.name}"
                + (f": {' '.join(e.message.split())}" if e.message else "")
            )
    if exit_code == EXIT_RUNNING:
        say(f"wheelflow: flow run {flow_run.name} is {status['state']}: not finished yet (exit {exit_code})")
    elif exit_code:
        say(f"wheelflow: flow run {flow_run.name} {status['state']}: {status['message'] or ''}".rstrip(": "))
        if status["reason"] and status["reason"] != status["message"]:
            say(f"wheelflow: reason: {status['reason']}")
        for h in histories:
            if h.state in ("Failed", "Crashed", "TimedOut"):
                say(f"wheelflow: {h.name}: {h.state} after {h.attempts} attempt(s)")
                for line in describe_attempts(h):
                    say(f"wheelflow:   {line}")
    return exit_code
