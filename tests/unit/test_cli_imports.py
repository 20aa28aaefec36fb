"""The command line imports the command it runs, not every command: ``wheelflow trigger`` and
``wheelflow status`` (run by CI for each release) leave the builders, checks and monitor unimported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("wheelflow.builds.builders.docker", "wheelflow.checks.abi", "wheelflow.ops.monitor", "wheelflow.cli.release")


@pytest.mark.parametrize("command", ["trigger", "status"])
def test_a_ci_command_imports_only_its_own_module(command: str) -> None:
    code = (
        "import json, sys; from wheelflow.cli import build_parser; "
        f"build_parser([{command!r}, '--help'][:1]); "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_help_and_a_mistyped_command_still_see_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from wheelflow.cli import COMMAND_NAMES, build_parser, main

    listed = build_parser([]).format_help()
    assert all(name in listed for name in COMMAND_NAMES)
    assert main(["trigerr", "release"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'trigerr'" in err and "trigger" in err and "see `wheelflow --help`" in err
