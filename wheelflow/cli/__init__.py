"""``wheelflow``: release a package and prove it is served; verify any index, read-only.

Each command is a module of this package with ``add_parser(commands)`` and ``run(args) -> int``.
Errors a user can cause are :class:`~wheelflow.core.errors.WheelflowError`: one line on stderr (or, with
``--json``, one JSON object on stdout) and the error's ``exit_code``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
from collections.abc import Sequence

from wheelflow.cli.common import say
from wheelflow.config.bounds import quoted
from wheelflow.core.errors import ExitCode, ServerUnavailable, UsageError, WheelflowError
from wheelflow.core.home import ensure_home
from wheelflow.core.secretenv import hide_secrets


class ArgumentsRefused(Exception):
    """The argument parser refused the command line (an unknown option, a missing argument)."""


class Parser(argparse.ArgumentParser):
    """argparse, except that a refused command line raises instead of printing usage and exiting, so
    that ``main`` reports it as every other bad input: one line (and, with ``--json``, JSON), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ArgumentsRefused(f"{self.prog}: {message}")


#: Each command's module (``wheelflow.cli.<name>``), in the order ``--help`` lists them.
COMMAND_NAMES = (
    "release",
    "backfill",
    "verify",
    "check",
    "matrix",
    "images",
    "monitor",
    "trigger",
    "status",
    "approve",
    "serve",
    "setup",
    "doctor",
    "automations",
    "server",
    "schema",
)


#: The commands that keep state under $WHEELFLOW_HOME (checked writable before they start).
USES_HOME = frozenset({"release", "backfill", "verify", "check", "monitor", "images", "serve"})


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The command line's parser: with the command named in ``argv``, only that command's (its
    module alone is imported: ``trigger`` and ``status`` in CI need neither the builders nor the
    checks); else every command's, for ``--help`` and for a refusal that lists them."""
    named = next((a for a in argv if not a.startswith("-")), None)
    parser = Parser(prog="wheelflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in (named,) if named in COMMAND_NAMES else COMMAND_NAMES:
        command = importlib.import_module(f"wheelflow.cli.{name}")
        command.add_parser(commands).set_defaults(
            run=command.run, needs_prefect=getattr(command, "NEEDS_PREFECT", False)
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Without PREFECT_API_URL, Prefect runs a temporary server on SQLite for this one command. Its
    # telemetry heartbeat then races the release for SQLite's write lock and prints "database is
    # locked" tracebacks on runs that succeed; a throwaway server has nothing worth reporting. A
    # user's own setting wins, and a real server (PREFECT_API_URL) is not started by us at all.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if argv is None:  # a command line: the console command started over already (wheelflow.launcher);
        hide_secrets(sys.argv[1:])  # entered any other way, the secrets leave the start environment now
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv  # before parsing: an option refused by its type is shown the same way
    try:
        try:
            args = build_parser(argv).parse_args(argv)
        except ArgumentsRefused as exc:
            command = next((a for a in argv if not a.startswith("-")), None)
            fix = f"see `wheelflow {command} --help`" if command in COMMAND_NAMES else "see `wheelflow --help`"
            error = f"usage error: {exc}; fix: {fix}"
            if as_json:
                print(json.dumps({"ok": False, "error": error, "exit_code": int(ExitCode.BAD_INPUT)}, indent=2))
            say(f"wheelflow: error: {error}")
            return ExitCode.BAD_INPUT
        as_json = getattr(args, "json", False)
        if args.command in USES_HOME:
            ensure_home()  # a home that cannot be written: one line naming it, before any flow run
        try:
            return args.run(args)
        except Exception as exc:
            if getattr(args, "needs_prefect", False) and (lost := _server_gone(exc)):
                raise lost from None
            raise
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        # A path option or spec value no check caught: still one line naming the path, exit 2.
        error: WheelflowError = UsageError(
            "a path", f"{quoted(str(exc.filename or ''))} is too long for a file name", "give an existing path"
        )
        return _refused(error, as_json)
    except WheelflowError as exc:
        return _refused(exc, as_json)


def _refused(exc: WheelflowError, as_json: bool) -> int:
    """``exc`` as the user sees it: one line on stderr (and one JSON object on stdout with ``--json``)."""
    if as_json:
        print(json.dumps({"ok": False, "error": str(exc), "exit_code": int(exc.exit_code)}, indent=2))
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
