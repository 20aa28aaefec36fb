"""Credentials out of reach of the code a release runs: build backends, smoke commands, installers.

Any process of the same user can read ``/proc/<pid>/environ``, and that file shows the environment a
process was *started* with: unsetting a variable later does not remove it there. So a command that
runs code we do not control (:data:`FOREIGN_CODE_COMMANDS`) starts over once, before anything else:
:func:`hide_secrets` re-executes the same command with its secret variables taken out of the
environment and hands them to the new process through a pipe, in memory. There they are kept in
:func:`environ` (wheelflow's own readers look there), never in the process's start environment, and
the process is made non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): other processes of the same user
can then read neither its ``/proc/<pid>/environ`` nor its memory. Secrets of libraries that read
the environment themselves (``PREFECT_API_KEY``, cloud storage keys) are put back into
``os.environ`` in memory, where those libraries find them and ``/proc`` does not.

What remains: root on the same host reads anything; a child started with this process's whole
environment (wheelflow's own children never are: :mod:`wheelflow.core.childenv`; Prefect's temporary
server, started when no PREFECT_API_URL is set, is) carries the library secrets in its start
environment. The Docker builder separates better.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence

from wheelflow.core.redaction import register_secret

#: The variable naming the pipe the secrets arrive on, in the re-executed process.
SECRETS_FD_ENV = "WHEELFLOW_SECRETS_FD"
#: The commands that run code we do not control (setup.py, build backends, smoke commands, pip).
FOREIGN_CODE_COMMANDS = frozenset({"release", "backfill", "verify", "check"})
_SECRET_NAME = re.compile(
    r"TOKEN|PASSWORD|PASSWD|SECRET|_KEY$|^KEY$|AUTH|CREDENTIAL|WEBHOOK|^TWINE_|^WHEELFLOW_ALERT_|^WHEELFLOW_\w+_USERNAME$",
    re.IGNORECASE,
)
#: Secrets that libraries in this process read from os.environ themselves (Prefect's client, cloud
#: storage through fsspec): set there, in memory. Every other one stays out of os.environ altogether.
_LIBRARY = re.compile(r"^(PREFECT_|AWS_|GOOGLE_|AZURE_)", re.IGNORECASE)
_PIPE_LIMIT = 60_000  # bytes a pipe takes without a reader (Linux: 64 KiB)
_held: dict[str, str] = {}


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and name != SECRETS_FD_ENV


def environ() -> Mapping[str, str]:
    """The environment as wheelflow's own readers see it: the secrets held in memory over ``os.environ``."""
    return collections.ChainMap(_held, os.environ)  # type: ignore[arg-type]


def make_non_dumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``: other processes of this user can no longer read this one's
    /proc/<pid>/environ, cmdline-adjacent memory (/proc/<pid>/mem) or attach to it. Linux only;
    False where it could not be set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        return False


def receive_secrets() -> bool:
    """In the re-executed process: read the secrets from the pipe into memory, close it; False
    in a process started any other way."""
    fd_text = os.environ.pop(SECRETS_FD_ENV, None)
    if fd_text is None:
        return False
    fd = int(fd_text)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    for name, value in json.loads(b"".join(chunks)).items():
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
    """Before a command that runs code we do not control: start over without the secret variables
    in the start environment (they arrive through a pipe), and become non-dumpable. Returns in the
    re-executed process (or at once when there is nothing to hide or no way to start over).

    ``argv`` is the wheelflow command line (its first word decides); ``command`` what is executed
    again (default: ``wheelflow ARGV`` through this interpreter)."""
    started_over = receive_secrets()
    if not started_over and argv and argv[0] in FOREIGN_CODE_COMMANDS and sys.platform.startswith("linux"):
        secrets = {k: v for k, v in os.environ.items() if is_secret_name(k)}
        payload = json.dumps(secrets).encode()
        if secrets and len(payload) <= _PIPE_LIMIT:
            read, write = os.pipe()
            os.write(write, payload)
            os.close(write)
            os.set_inheritable(read, True)
            env = {k: v for k, v in os.environ.items() if k not in secrets}
            env[SECRETS_FD_ENV] = str(read)
            sys.stdout.flush()
            sys.stderr.flush()
            code = "import sys; from wheelflow.cli import main; sys.exit(main())"
            again = list(command) if command is not None else [sys.executable, "-c", code, *argv]
            os.execve(again[0], again, env)
    make_non_dumpable()
