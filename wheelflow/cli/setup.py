"""``wheelflow setup``: the team path in one command, against the server PREFECT_API_URL names.

Creates the two process work pools, the Variables and the Secret block that prefect.yaml's pull step
reads, registers the deployments with ``prefect deploy --all`` and then makes their parameter schemas
strict (as ``wheelflow serve`` does), turns on the schedules that are configured, and installs the
automations. Running it again changes only what differs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from wheelflow.cli.automations import add_window_options, install
from wheelflow.cli.common import say
from wheelflow.core import secretenv
from wheelflow.core.errors import SpecError
from wheelflow.ops.doctor import CODE_VARIABLES, GIT_TOKEN_BLOCK, POOLS

DEPLOYMENTS = (
    "release/release",
    "release/nightly",
    "sync-monitor/sync-monitor",
    "backfill/backfill",
    "upstream-check/upstream-check",
    "build-cell/build-cell",
)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "setup", help="set up a Prefect server for workers: pools, Variables, Secret block, deployments, automations"
    )
    parser.add_argument(
        "--code-repository",
        metavar="URL",
        required=True,
        help="git URL the workers clone wheelflow's code from (the Variable wheelflow_code_repository)",
    )
    parser.add_argument(
        "--code-ref", metavar="REF", default="main", help="tag or branch they check out (default: main)"
    )
    parser.add_argument(
        "--git-token-env",
        metavar="VAR",
        help="environment variable holding the token for a private code repository (default: an empty "
        "token, for a public one; an existing token is kept)",
    )
    parser.add_argument(
        "--prefect-yaml",
        metavar="FILE",
        help="the prefect.yaml to deploy (default: the one beside this wheelflow's source)",
    )
    parser.add_argument("--no-automations", action="store_true", help="do not install the automations")
    parser.add_argument(
        "--monitor-interval", type=float, metavar="S", help="sync-monitor's interval for the silent-monitor alert"
    )
    add_window_options(parser)
    return parser


def _prefect_yaml(given: str | None) -> Path:
    path = Path(given) if given else Path(__file__).resolve().parents[2] / "prefect.yaml"
    if not path.is_file():
        raise SpecError(
            "--prefect-yaml",
            f"{path} does not exist",
            "run setup from a wheelflow checkout, or pass the prefect.yaml of one",
        )
    return path


def run(args: argparse.Namespace) -> int:
    from wheelflow.adapters.prefect_api import (
        ensure_process_pool,
        ensure_secret,
        finish_registration,
        read_variable,
        server_problem,
        write_variable,
    )
    from wheelflow.deployments import PROJECTS_VARIABLE, waiting_for_configuration
    from wheelflow.source.gitauth import refuse_url_credentials

    refuse_url_credentials(args.code_repository, "--code-repository")
    token = None
    if args.git_token_env:
        token = secretenv.environ().get(args.git_token_env)  # a secret's name: held in memory since the start-over
        if token is None:
            raise SpecError("--git-token-env", f"{args.git_token_env} is not set", f"export {args.git_token_env}=TOKEN")
    prefect_yaml = _prefect_yaml(args.prefect_yaml)
    problem = server_problem() if os.environ.get("PREFECT_API_URL") else "PREFECT_API_URL is not set"
    if problem:
        raise SpecError("PREFECT_API_URL", problem, "export PREFECT_API_URL=http://SERVER:4200/api")
    for pool in POOLS:
        say(f"wheelflow: work pool {pool}: {'created' if ensure_process_pool(pool) else 'exists'}")
    for name, value in zip(CODE_VARIABLES, (args.code_repository, args.code_ref)):
        write_variable(name, value)
        say(f"wheelflow: Variable {name} = {value}")
    say(f"wheelflow: Secret block {GIT_TOKEN_BLOCK}: {ensure_secret(GIT_TOKEN_BLOCK, token)}")
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=prefect_yaml.parent,
        capture_output=True,
        text=True,
    )
    if deploy.returncode != 0:
        last = next((line for line in reversed((deploy.stdout + deploy.stderr).splitlines()) if line.strip()), "")
        raise SpecError("prefect deploy --all", f"failed: {last.strip()}", f"fix {prefect_yaml} and run setup again")
    waiting = waiting_for_configuration(None, read_variable(PROJECTS_VARIABLE))
    finish_registration(list(DEPLOYMENTS), {"sync-monitor": "sync-monitor" not in waiting})
    say(f"wheelflow: deployments {', '.join(DEPLOYMENTS)} registered; unknown parameters are refused")
    for name, what in waiting.items():
        say(f"wheelflow: {name}: schedule registered inactive until configured: {what}")
    if not args.no_automations:
        install(args, monitor_interval=args.monitor_interval)
    say("wheelflow: next, on each worker machine: wheelflow doctor, then prefect worker start --pool POOL")
    return 0
