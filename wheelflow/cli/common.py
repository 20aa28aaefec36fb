"""What every command shares: one-line messages, consoles, the --json and --spec options."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from wheelflow.adapters import localserver
from wheelflow.config.bounds import MAX_COMMAND, check_path, check_url, too_long
from wheelflow.config.spec import ReleaseSpec, load_spec, load_spec_file
from wheelflow.core.deadline import finite_seconds
from wheelflow.core.errors import ExitCode, SpecError, UsageError
from wheelflow.core.home import ensure_home, wheelflow_home

err_console = Console(stderr=True)
out_console = Console()


def say(line: str) -> None:
    """One line on stderr, never wrapped: errors must be greppable and copyable."""
    print(line, file=sys.stderr, flush=True)


def show_table(table: Table) -> None:
    """Print ``table`` on stdout without ever cutting a cell: on a terminal as Rich draws it, long
    cells folded onto more lines; elsewhere (a CI log, a pipe) as plain lines, the title, the
    header, then one row per line, columns separated by `` | ``. A URL or file name in a log is
    copied from there, so it must be whole."""
    if out_console.is_terminal:
        for column in table.columns:
            column.overflow = "fold"
        out_console.print(table)
        return
    if table.title:
        print(str(table.title))
    print(" | ".join(str(c.header) for c in table.columns))
    for row in zip(*(c.cells for c in table.columns)):
        print(" | ".join(str(cell) for cell in row))
    sys.stdout.flush()


def add_json(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")


def add_spec(parser: argparse.ArgumentParser, *, project_option: bool = True) -> None:
    """``--spec FILE`` means the same everywhere: a standalone spec TOML (or a pyproject.toml with
    [tool.wheelflow]); paths in it are relative to the project, not to the file."""
    parser.add_argument(
        "--spec",
        metavar="FILE",
        type=path_argument("--spec"),
        help="a standalone spec TOML, or a pyproject.toml with "
        "[tool.wheelflow] (default: the project's pyproject.toml); paths in it are relative to the project",
    )
    if project_option:
        parser.add_argument(
            "--project",
            metavar="DIR",
            type=path_argument("--project"),
            help="the project the spec describes (default: the folder of "
            "a pyproject.toml given as --spec, else the current directory)",
        )


def load_spec_arg(spec: str | None, project: str | None, *, project_files: bool = True) -> ReleaseSpec:
    """The spec named by ``--spec``/``--project``: see :func:`add_spec`. ``project_files=False``:
    see :func:`wheelflow.config.spec.load_spec`."""
    spec_path = Path(spec) if spec else None  # a file: a directory is refused, naming --spec
    if project is not None:
        return load_spec(Path(project), spec_path, project_files=project_files)
    if spec_path is None:
        return load_spec(Path.cwd(), project_files=project_files)
    return load_spec_file(spec_path, Path.cwd(), project_files=project_files)


def seconds(option: str, *, allow_zero: bool = False, unit: str = "seconds") -> Callable[[str], float]:
    """An argparse ``type`` for a time option: a finite positive number (``nan``, ``inf`` and negative
    numbers refused with a UsageError naming the option, exit 2; :func:`wheelflow.cli.main` shows it
    as one line, also under ``--json``)."""

    def parse(text: str) -> float:
        try:
            return finite_seconds(text, option, allow_zero=allow_zero, unit=unit)
        except SpecError as exc:
            raise UsageError(option, exc.problem, exc.fix or f"give e.g. {option} 60") from None

    parse.__name__ = "seconds"  # argparse names the type in its own messages
    return parse


def path_argument(option: str) -> Callable[[str], str]:
    """An argparse ``type`` for a path option: a path no file can have (a name over 255 bytes, or
    over 4,096 in all) is a UsageError naming the option (exit 2, one line, also under ``--json``),
    not ``OSError: File name too long`` from wherever it is first opened."""

    def parse(text: str) -> str:
        try:
            check_path(text, option)
        except SpecError as exc:
            raise UsageError(option, exc.problem, "give an existing path") from None
        return text

    parse.__name__ = "path"  # argparse names the type in its own messages
    return parse


def command_argument(option: str) -> Callable[[str], str]:
    """An argparse ``type`` for a shell command option (``--smoke``): at most 32 KiB, as in the spec,
    so it is refused here and never by the kernel (``Argument list too long``) after the work is done."""

    def parse(text: str) -> str:
        if problem := too_long(text, MAX_COMMAND):
            raise UsageError(option, problem, "put a long command in a script and run that")
        return text

    parse.__name__ = "command"
    return parse


def location_argument(option: str) -> Callable[[str], str]:
    """An argparse ``type`` for an option that takes a URL, a path or a name (``--index``, ``--repo``):
    at most 8,192 characters; a path (no ``://``) also as :func:`path_argument` checks it."""
    as_path = path_argument(option)

    def parse(text: str) -> str:
        try:
            check_url(text, option)
        except SpecError as exc:
            raise UsageError(option, exc.problem, exc.fix or "give a shorter URL") from None
        return text if "://" in text else as_path(text)

    parse.__name__ = "location"
    return parse


def split_pairs(items: list[str], option: str, example: str) -> list[tuple[str, str]]:
    """Repeated ``KEY=VALUE`` options, in order; anything else is refused naming the option."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(option, f"{item!r} is not KEY=VALUE", f"write e.g. {option} {example}")
        pairs.append((key, value))
    return pairs


def parse_pairs(items: list[str], option: str, example: str) -> dict[str, str]:
    """Repeated ``KEY=VALUE`` options as a mapping (a repeated key: the last value)."""
    return dict(split_pairs(items, option, example))


def report_outcome(
    state: Any,
    path: Path,
    fallback: dict[str, Any],
    *,
    as_json: bool,
    show: Callable[[dict[str, Any]], None],
    what: str,
) -> int:
    """A flow run's JSON report (``fallback`` when the run ended before writing one), as JSON or as
    ``show`` prints it; exit 1, saying why, unless the run completed and its report says ok (3 when
    it was cancelled)."""
    report = json.loads(path.read_text()) if path.exists() else fallback
    report["ok"] = bool(report.get("ok")) and state.is_completed()
    if not state.is_completed():
        report["error"] = report.get("error") or state.message
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        show(report)
    if state.is_cancelled():
        say(f"wheelflow: {what} {state.message or 'cancelled'}")
        return ExitCode.CANCELLED
    if not report["ok"]:
        say(f"wheelflow: {what} failed: {report.get('error') or state.message}")
        return 1
    return 0


def connect_prefect() -> str:
    """Point this process at a Prefect server before Prefect is imported; returns the mode.

    A user's ``PREFECT_API_URL`` (environment or active profile) always wins. ``WHEELFLOW_EPHEMERAL=1``
    keeps Prefect's temporary in-process server, with its startup deadline raised. Otherwise the
    home's own background server is reused, or started once (see :mod:`wheelflow.adapters.localserver`).
    Prefect's client retries long enough to bridge a server restart in every mode."""
    mode = localserver.connection_mode(os.environ)
    timeout = localserver.start_timeout(os.environ)
    for key, value in localserver.client_defaults(mode, timeout).items():
        os.environ.setdefault(key, value)
    if mode == "local":
        # The home's server keeps its database there: a home that cannot be written is bad input
        # (exit 2, one line naming the folder), as for every command that uses the home.
        ensure_home()
        state = localserver.ensure_server(
            wheelflow_home(), timeout=timeout, port=localserver.requested_port(os.environ), say=say
        )
        os.environ["PREFECT_API_URL"] = state.api_url
    return mode


def say_ui_link(flow_run_id: str) -> None:
    """The run's page in the Prefect UI, once per run, last (stderr: ``--json`` keeps stdout JSON).
    Nothing with Prefect's temporary server: it is gone when the command ends."""
    from wheelflow.adapters.prefect_api import ui_url

    link = ui_url(flow_run_id) if localserver.connection_mode(os.environ) != "ephemeral" else None
    if link:
        sys.stdout.flush()
        say(f"see it in the Prefect UI: {link}")
