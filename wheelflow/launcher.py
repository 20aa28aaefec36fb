"""The ``wheelflow`` console command: the scrubbed start-over first, then the command line interface.

The secrets in the environment leave the start environment before anything else is imported (see
:mod:`wheelflow.core.startover`): the CLI with Prefect, pydantic and httpx takes 0.4-0.9 s to import,
and for all that time ``/proc/<pid>/environ`` would show them. Every command starts over this way,
``monitor`` included. This module imports the standard library and wheelflow.core.startover only;
``python -m wheelflow`` runs it too.
"""

from __future__ import annotations

import sys


def same_command() -> list[str]:
    """This command line again: the interpreter, its options and what it ran (-X.., -m wheelflow, -c
    CODE or a script: sys.orig_argv), and the arguments as they are now (sys.argv)."""
    ran = sys.orig_argv[1 : len(sys.orig_argv) - len(sys.argv) + 1]
    return [sys.executable, *ran, *sys.argv[1:]]


def main() -> int:
    from wheelflow.core import startover

    startover.start_over(same_command())
    startover.make_non_dumpable()  # before the secrets are read: nobody else may read our pipe or memory
    startover.take_secrets()  # out of the pipe into memory at once, before the slow imports

    from wheelflow.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
