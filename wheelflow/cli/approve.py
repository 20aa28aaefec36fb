"""``wheelflow approve RUN_ID``: answer a release waiting for approval (resumes its flow run)."""

from __future__ import annotations

import argparse
from typing import Any

from wheelflow.cli.common import connect_prefect, say
from wheelflow.cli.status import parse_run_id
from wheelflow.core.errors import UsageError
from wheelflow.ops.approval import reason_too_long

NEEDS_PREFECT = True  # main() connects to a Prefect server first (see common.connect_prefect)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("approve", help="answer a release waiting for approval (resumes its flow run)")
    parser.add_argument("run_id", metavar="RUN_ID")
    parser.add_argument(
        "--reject", action="store_true", help="refuse: the release fails and the next target gets nothing"
    )
    parser.add_argument("--reason", default="", help="why (at most 4,096 characters); recorded in the report and alert")
    return parser


def run(args: argparse.Namespace) -> int:
    run_id = parse_run_id(args.run_id)
    if problem := reason_too_long(args.reason):
        raise UsageError("--reason", problem, "say why in a few lines; link to a longer text")
    connect_prefect()
    from wheelflow.adapters.prefect_api import resume_with_decision

    resume_with_decision(run_id, approve=not args.reject, reason=args.reason)
    say(
        f"wheelflow: {'rejected' if args.reject else 'approved'} flow run {run_id}"
        + (f": {args.reason}" if args.reason else "")
    )
    return 0
