"""``wheelflow schema``: print the JSON Schema of ``[tool.wheelflow]`` (for editors and validators)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from wheelflow.config.spec import schema_text


def add_parser(commands: Any) -> argparse.ArgumentParser:
    return commands.add_parser("schema", help="print the JSON Schema of [tool.wheelflow] (as in wheelflow.schema.json)")


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return 0
