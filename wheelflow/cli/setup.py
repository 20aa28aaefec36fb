"""``wheelflow setup``: the team path in one command, against the server PREFECT_API_URL names.

Creates the two process work pools, the Variables and the Secret block that the workers' pull step
reads, registers the deployments itself (as ``wheelflow serve`` does, from the installed package: no
checkout, any folder) with strict parameter schemas and the pull step, turns on the schedules that are
configured, and installs the automations. Running it again changes only what differs.

Every input is checked before anything changes; when a later step fails, the error names the step and
everything it had already changed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from wheelflow.cli.automations import add_window_options, plan
from wheelflow.cli.common import say
from wheelflow.core import secretenv
from wheelflow.core.errors import SpecError, WheelflowError
from wheelflow.ops.doctor import CODE_VARIABLES, GIT_TOKEN_BLOCK, POOLS


class SetupIncomplete(WheelflowError):
    """A step of setup failed after earlier ones changed the server: says which, and what they changed."""


class ServerChanges:
    """What setup has changed on the server so far, so that a step that fails can say it."""

    def __init__(self) -> None:
        self.changed: list[str] = []

    def step(self, what: str, change: Callable[[], Any]) -> Any:
        """``change()``; when it raises, SetupIncomplete naming ``what``, the error and every change so far."""
        try:
            return change()
        except Exception as exc:
            done = "; ".join(self.changed) or "nothing"
            raise SetupIncomplete(
                f"setup stopped at {what}: {exc}; already changed on the server: {done}; fix: run setup again "
                "once the cause is fixed (it changes only what differs)"
            ) from exc


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
    parser.add_argument("--no-automations", action="store_true", help="do not install the automations")
    parser.add_argument(
        "--monitor-interval", type=float, metavar="S", help="sync-monitor's interval for the silent-monitor alert"
    )
    add_window_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from wheelflow.adapters.prefect_api import (
        ensure_process_pool,
        ensure_secret,
        finish_registration,
        parameter_names,
        read_variable,
        register_deployments,
        registered_deployments,
        server_problem,
        write_variable,
    )
    from wheelflow.deployments import PROJECTS_VARIABLE, PULL_STEPS, project_deployments
    from wheelflow.deployments.configured import Registered, changed_by_user, kept_parameters, schedules_off
    from wheelflow.source.gitauth import refuse_url_credentials

    # Every input first: nothing changes on the server until all of them are good.
    refuse_url_credentials(args.code_repository, "--code-repository")
    if not args.code_ref.strip():
        raise SpecError("--code-ref", "is empty", "give the tag or branch workers check out, e.g. --code-ref main")
    token = None
    if args.git_token_env:
        token = secretenv.environ().get(args.git_token_env)  # a secret's name: held in memory since the start-over
        if token is None:
            raise SpecError("--git-token-env", f"{args.git_token_env} is not set", f"export {args.git_token_env}=TOKEN")
    problem = server_problem() if os.environ.get("PREFECT_API_URL") else "PREFECT_API_URL is not set"
    if problem:
        raise SpecError("PREFECT_API_URL", problem, "export PREFECT_API_URL=http://SERVER:4200/api")
    # A re-run keeps what users configured on the deployments (nightly's project, a schedule switched
    # on or off in the UI): registering the shipped ones again must not reset them to the demo project.
    shipped = project_deployments(module_entrypoints=True)
    registered = {
        name: Registered(parameters, on)
        for name, (parameters, on) in registered_deployments([d.full_name for d in shipped]).items()
    }
    waiting, kept_off = schedules_off(registered, read_variable(PROJECTS_VARIABLE))
    deployments = project_deployments(inactive={**waiting, **kept_off}, module_entrypoints=True)
    kept: dict[str, list[str]] = {}
    for deployment in deployments:
        defaults = dict(deployment.parameters)
        deployment.parameters = kept_parameters(defaults, parameter_names(deployment), registered.get(deployment.name))
        if changed := changed_by_user(defaults, deployment.parameters):
            kept[deployment.name] = changed
    automations = (
        None
        if args.no_automations
        else plan(args, monitor_interval=args.monitor_interval, inactive={**waiting, **kept_off})
    )

    changes = ServerChanges()
    step, changed = changes.step, changes.changed

    for pool in POOLS:
        created = step(f"work pool {pool}", lambda pool=pool: ensure_process_pool(pool))
        if created:
            changed.append(f"work pool {pool} created")
        say(f"wheelflow: work pool {pool}: {'created' if created else 'exists'}")
    for name, value in zip(CODE_VARIABLES, (args.code_repository, args.code_ref)):
        if step(f"Variable {name}", lambda name=name: read_variable(name)) != value:
            step(f"Variable {name}", lambda name=name, value=value: write_variable(name, value))
            changed.append(f"Variable {name} set")
        say(f"wheelflow: Variable {name} = {value}")
    secret = step(f"Secret block {GIT_TOKEN_BLOCK}", lambda: ensure_secret(GIT_TOKEN_BLOCK, token))
    if secret != "kept":
        changed.append(f"Secret block {GIT_TOKEN_BLOCK} {secret}")
    say(f"wheelflow: Secret block {GIT_TOKEN_BLOCK}: {secret}")
    names = step("registering the deployments", lambda: register_deployments(deployments, PULL_STEPS))
    changed.append(f"deployments {', '.join(names)} registered")
    step(
        "making the deployments' parameters strict",
        lambda: finish_registration(names, {"sync-monitor": "sync-monitor" not in waiting}),
    )
    say(f"wheelflow: deployments {', '.join(names)} registered; unknown parameters are refused")
    for name, names_kept in kept.items():
        say(f"wheelflow: {name}: kept the parameters set on the server: {', '.join(names_kept)}")
    for name, what in waiting.items():
        say(f"wheelflow: {name}: schedule registered inactive until configured: {what}")
    for name, why in kept_off.items():
        say(f"wheelflow: {name}: schedule {why}")
    if automations is not None:
        step("installing the automations", automations)
    say("wheelflow: next, on each worker machine: wheelflow doctor, then prefect worker start --pool POOL")
    return 0
