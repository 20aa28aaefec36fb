"""Credentials out of reach of the code a release runs: build backends, smoke commands, installers.

Any process of the same user can read ``/proc/<pid>/environ``, and that file shows the environment a
process was *started* with: unsetting a variable later does not remove it there. So every wheelflow
command started with secrets in its environment starts over once, before anything else: the console
entry point (:mod:`wheelflow.launcher`) re-executes the same command through
:func:`wheelflow.core.startover.start_over`, before the CLI is imported, with its secret variables
taken out of the environment and handed to the new process through a pipe, in memory.
:func:`hide_secrets` does the same for a process that entered through ``wheelflow.cli.main`` some
other way (later: after the CLI's imports). In the new process the secrets are kept in
:func:`environ` (wheelflow's own readers look there), never in its start environment, and the
process is made non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): other processes of the same user can
then read neither its ``/proc/<pid>/environ`` nor its memory. Secrets of libraries that read the
environment themselves (``PREFECT_API_KEY``, cloud storage keys) are put back into ``os.environ``
in memory, where those libraries find them and ``/proc`` does not.

What remains: root on the same host reads anything; the first process holds the secrets in its
start environment for as long as Python takes to start and exec again (tens of milliseconds); a
child started with this process's whole environment (wheelflow's own children never are:
:mod:`wheelflow.core.childenv`; Prefect's temporary server, started when no PREFECT_API_URL is set,
is) carries the library secrets in its start environment. The Docker builder separates better.
"""

from __future__ import annotations

import collections
import os
import re
import sys
from collections.abc import Mapping, Sequence

from wheelflow.core.redaction import register_secret
from wheelflow.core.startover import (
    SECRETS_FD_ENV,
    is_secret_name,
    make_non_dumpable,
    start_over,
    take_secrets,
)

__all__ = [
    "SECRETS_FD_ENV",
    "environ",
    "hand_down_to_children",
    "hide_secrets",
    "is_secret_name",
    "make_non_dumpable",
    "receive_secrets",
]

#: Secrets that libraries in this process read from os.environ themselves (Prefect's client, cloud
#: storage through fsspec): set there, in memory. Every other one stays out of os.environ altogether.
_LIBRARY = re.compile(r"^(PREFECT_|AWS_|GOOGLE_|AZURE_)", re.IGNORECASE)
_held: dict[str, str] = {}


def environ() -> Mapping[str, str]:
    """The environment as wheelflow's own readers see it: the secrets held in memory over ``os.environ``."""
    return collections.ChainMap(_held, os.environ)  # type: ignore[arg-type]


def hand_down_to_children() -> None:
    """The held secrets back in ``os.environ``, in memory, for a process whose children read them
    from their own environment: ``serve``, where Prefect starts each flow run as a child with this
    process's ``os.environ`` (flow runs read their targets' credentials there, as they do under a
    worker). This process's /proc/<pid>/environ still does not show them; its children's does."""
    os.environ.update(_held)


def receive_secrets() -> bool:
    """In the re-executed process: take the secrets from the pipe into memory (registered for
    masking, held in :func:`environ`); False in a process started any other way."""
    received = take_secrets()
    if received is None:
        return False
    for name, value in received.items():
        # A user name is kept from code we do not control, but is no secret to mask: a devpi index is
        # named after its user (releaser/deps), and masking it would garble every message naming one.
        if not name.upper().endswith("_USERNAME"):
            register_secret(value)
        if _LIBRARY.match(name):
            os.environ[name] = value  # in memory: /proc/<pid>/environ keeps the start environment
        else:
            _held[name] = value
    return True


def hide_secrets(argv: Sequence[str], command: Sequence[str] | None = None) -> None:
    """Start over without the secret variables in the start environment (they arrive through a
    pipe), and become non-dumpable. Returns in the re-executed process (or at once when there is
    nothing to hide or no way to start over). The console command has done this already, before
    its imports (:mod:`wheelflow.launcher`); this is for ``wheelflow.cli.main`` entered otherwise.

    ``argv`` is the wheelflow command line; ``command`` what is executed again (default:
    ``wheelflow ARGV`` through this interpreter)."""
    if not receive_secrets():
        code = "import sys; from wheelflow.cli import main; sys.exit(main())"
        start_over(list(command) if command is not None else [sys.executable, "-c", code, *argv])
    make_non_dumpable()
