"""``wheelflow doctor``: check this machine as a wheelflow worker and print what is missing, with the fix."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import Any

from wheelflow.cli.common import add_json, say
from wheelflow.core import secretenv


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "doctor", help="check this machine as a worker (git, Docker, pool, blocks, Variables, CUDA, disk)"
    )
    parser.add_argument("--pool", metavar="NAME", help="the work pool this worker serves (default: both)")
    add_json(parser, "one object per check")
    return parser


def run(args: argparse.Namespace) -> int:
    from wheelflow.adapters.prefect_api import pool_exists, read_variable, secret_block_exists, server_problem
    from wheelflow.builds.builders.docker import daemon_answers
    from wheelflow.core.home import wheelflow_home
    from wheelflow.core.sandbox import protection
    from wheelflow.ops.doctor import Probes, diagnose, missing

    def free_gib() -> float:
        path = wheelflow_home()
        while not path.exists():
            path = path.parent
        return shutil.disk_usage(path).free / 2**30

    probes = Probes(
        which=shutil.which,
        docker_answers=daemon_answers,
        free_gib=free_gib,
        pool_exists=pool_exists,
        variable=read_variable,
        secret_block_exists=secret_block_exists,
        env=secretenv.environ(),  # the credentials it looks for were taken out of os.environ at the start-over
        # Without PREFECT_API_URL, Prefect would start a throwaway server of its own: nothing to check there.
        server=lambda: server_problem() if os.environ.get("PREFECT_API_URL") else "PREFECT_API_URL is not set",
        sandbox=protection,
    )
    findings = diagnose(probes, args.pool)
    if args.json:
        print(json.dumps([f.json() for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding.line())
    lacking = missing(findings)
    if lacking:
        say(f"wheelflow: this worker lacks {len(lacking)} thing(s): {', '.join(f.check for f in lacking)}")
        return 1
    return 0
