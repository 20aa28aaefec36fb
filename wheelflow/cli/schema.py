"""``wheelflow schema``: print the JSON Schema of ``[tool.wheelflow]`` (for editors and validators)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(commands: Any) -> argparse.ArgumentParser:
    return commands.add_parser("schema", help="print the JSON Schema of [tool.wheelflow] (also wheelflow.schema.json)")


def run(args: argparse.Namespace) -> int:
    from ..spec import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))
    return 0
