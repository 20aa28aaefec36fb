"""``wheelflow``: release a package and prove it is served; verify any index, read-only.

Each command is a module of this package with ``add_parser(commands)`` and ``run(args) -> int``.
Errors a user can cause are :class:`~wheelflow.core.errors.WheelflowError`: one line on stderr (or, with
``--json``, one JSON object on stdout) and the error's ``exit_code``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from wheelflow.cli import (
    approve,
    automations,
    backfill,
    check,
    images,
    matrix,
    monitor,
    release,
    schema,
    serve,
    server,
    status,
    trigger,
    verify,
)
from wheelflow.cli.common import say
from wheelflow.core.errors import ServerUnavailable, WheelflowError

COMMANDS = (
    release,
    backfill,
    verify,
    check,
    matrix,
    images,
    monitor,
    trigger,
    status,
    approve,
    serve,
    automations,
    server,
    schema,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wheelflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands).set_defaults(
            run=command.run, needs_prefect=getattr(command, "NEEDS_PREFECT", False)
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        try:
            return args.run(args)
        except Exception as exc:
            if args.needs_prefect and (lost := _server_gone(exc)):
                raise lost from None
            raise
    except WheelflowError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": str(exc)}, indent=2))
        say(f"wheelflow: error: {exc}")
        return exc.exit_code


def _server_gone(exc: BaseException) -> ServerUnavailable | None:
    """A Prefect server that stopped answering (beyond the client's retries), or Prefect's temporary
    server that did not start in time, as one line instead of a traceback."""
    import httpx

    url = os.environ.get("PREFECT_API_URL") or "Prefect's temporary server"
    if isinstance(exc, httpx.TransportError) or (isinstance(exc, RuntimeError) and "Failed to reach API" in str(exc)):
        return ServerUnavailable(
            f"the Prefect server at {url} did not answer ({type(exc).__name__}: {exc})",
            "start it (`wheelflow server status` for the local one) or point PREFECT_API_URL at a running server, "
            "then run the command again",
        )
    if isinstance(exc, RuntimeError) and "ephemeral Prefect API server" in str(exc):
        return ServerUnavailable(
            f"Prefect's temporary server did not start in time ({exc})",
            "unset WHEELFLOW_EPHEMERAL to use the home's local server, or raise WHEELFLOW_SERVER_START_TIMEOUT",
        )
    return None


if __name__ == "__main__":
    sys.exit(main())
