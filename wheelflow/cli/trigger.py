"""``wheelflow trigger DEPLOYMENT``: start a deployment's flow run through the Prefect API (for CI).

Parameters are checked against the deployment's own schema before anything starts: an unknown name
is refused (exit 2) with a did-you-mean, values are typed by the schema. With ``--wait`` it follows
the run, prints what was released (or what failed), and cancels the run when CI cancels the job.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
from collections.abc import Iterator
from typing import Any

from wheelflow.cli.common import add_json, connect_prefect, say, seconds, split_pairs
from wheelflow.ops.orchestration import EXIT_CANCELLED, RunOutcome, coerce_parameters, run_reason
from wheelflow.source.gitauth import refuse_url_credentials
from wheelflow.source.versioning import version_option

NEEDS_PREFECT = True  # main() connects to a Prefect server first (see common.connect_prefect)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("trigger", help="start a deployment's flow run through the Prefect API (for CI)")
    parser.add_argument("deployment", help="DEPLOYMENT or FLOW/DEPLOYMENT, e.g. release")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a flow parameter, typed by the deployment's schema; repeat a list parameter's key "
        "for more items (repeatable)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow the run; exit 0 on Completed, 1 Failed, 3 Cancelled/Crashed (or SIGTERM/SIGINT: "
        "the run is cancelled first), 4 --timeout passed (the run goes on)",
    )
    parser.add_argument(
        "--timeout", type=seconds("--timeout"), metavar="SECONDS", help="with --wait: give up after this long"
    )
    add_json(parser, "the outcome")
    return parser


class Cancelled(Exception):
    """SIGTERM or SIGINT while following a run (CI cancelled the job)."""


@contextlib.contextmanager
def signals_cancel() -> Iterator[None]:
    def stop(signum: int, frame: Any) -> None:
        raise Cancelled(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(args: argparse.Namespace) -> int:
    connect_prefect()
    from prefect.client.orchestration import get_client

    from wheelflow.adapters.prefect_api import (
        cancel_run,
        error_logs,
        final_message,
        find_deployment,
        follow_run,
        release_verdict,
        start_run,
        task_histories,
        ui_url,
    )

    with get_client(sync_client=True) as client:
        deployment = find_deployment(client, args.deployment)
        parameters = coerce_parameters(
            deployment.parameter_openapi_schema or {},
            split_pairs(args.param, "--param", "version=1.2.3"),
            args.deployment,
        )
        for key in ("project", "repo"):
            if isinstance(parameters.get(key), str):
                refuse_url_credentials(parameters[key], f"--param {key}")  # never stored in a flow run's parameters
        for key in ("version", "since"):
            if isinstance(parameters.get(key), str):
                version_option(parameters[key], f"--param {key}")  # refused before a flow run exists
        flow_run = start_run(client, deployment, parameters, args.deployment)
        url = ui_url(str(flow_run.id))
        say(f"wheelflow: started {flow_run.name} ({flow_run.id}) of {args.deployment}" + (f": {url}" if url else ""))
        state, timed_out, verdict, reason = flow_run.state, False, None, None
        message = state.message if state is not None else None
        if args.wait:

            def on_state(name: str, message: str | None) -> None:
                say(f"wheelflow: {flow_run.name}: {name}" + (f": {' '.join(message.split())}" if message else ""))

            try:
                with signals_cancel():
                    state, timed_out = follow_run(client, flow_run.id, timeout=args.timeout, on_state=on_state)
            except Cancelled as exc:
                say(f"wheelflow: {exc} received: cancelling flow run {flow_run.id}")
                cancel_run(client, flow_run.id, f"cancelled by wheelflow trigger ({exc})")
                return EXIT_CANCELLED
            message = state.message if state is not None else None
            if not timed_out:
                message = final_message(client, flow_run.id, state)
                verdict = release_verdict(client, flow_run.id)
                if state is not None and state.is_final() and not state.is_completed():
                    tasks = [h.json() for h in task_histories(client, flow_run.id)]
                    errors = error_logs(client, flow_run.id) if not tasks else []
                    reason = run_reason(state.name, message, tasks, verdict["failed_checks"], errors)
    outcome = RunOutcome(
        str(flow_run.id),
        args.deployment,
        state.name if state else "Unknown",
        state.type.value if state else "UNKNOWN",
        url,
        timed_out,
    )
    exit_code = outcome.exit_code if args.wait else 0  # without --wait: started, no verdict yet
    if verdict is not None:
        print_verdict(verdict, reason or message)
    if args.wait and state is not None and state.is_cancelled() and reason:
        say(f"wheelflow: {flow_run.name} Cancelled: {reason}")  # the canceller's reason, not a killed task's crash
    if args.json:
        print(
            json.dumps(
                {
                    **outcome.json(),
                    **(verdict or {}),
                    "message": message,
                    "reason": reason,
                    "exit_code": int(exit_code),
                },
                indent=2,
            )
        )
    if timed_out:
        say(f"wheelflow: gave up after {args.timeout:g} s; the run goes on: {flow_run.id}")
    return exit_code


def print_verdict(verdict: dict[str, Any], message: str | None) -> None:
    """What was released, file by file with its proof, or what failed: one line each."""
    files = verdict["files"]
    if files:
        say(f"wheelflow: {files[0]['name']} {files[0]['version']}:")
    for f in files:
        proof = f.get("proof") or f.get("served")  # "served": the column's name before 2026-12-04
        # file, target, upload, proof, sha256: the order of every files table
        say(f"wheelflow:   {f['file']} → {f['target']}: {f['upload']}, proof: {proof}, sha256 {f.get('sha256', '?')}")
    for check in verdict["failed_checks"]:
        say(f"wheelflow: failed: {check['check']}: {' '.join(check['detail'].split())}")
    if not files and not verdict["failed_checks"] and message:
        say(f"wheelflow: {' '.join(message.split())}")
