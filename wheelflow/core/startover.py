"""The scrubbed start-over, with nothing but the standard library: the console entry point
(:mod:`wheelflow.launcher`) runs it before anything else is imported.

``/proc/<pid>/environ`` shows the environment a process was *started* with, and any process of the
same user can read it: unsetting a variable later changes nothing there. So a ``wheelflow`` command
started with secrets in its environment executes itself again at once, with the secret variables
taken out of the environment and handed over through a pipe. Every module imported before that
exec (and the time it takes) widens the window in which the secrets sit in the start environment,
hence this module imports only the standard library; :mod:`wheelflow.core.secretenv` builds on it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence

#: The variable naming the pipe the secrets arrive on, in the re-executed process (no secret itself).
SECRETS_FD_ENV = "WHEELFLOW_SECRETS_FD"
_SECRET_NAME = re.compile(
    r"TOKEN|PASSWORD|PASSWD|SECRET|_KEY$|^KEY$|AUTH|CREDENTIAL|WEBHOOK|^TWINE_|^WHEELFLOW_ALERT_|^WHEELFLOW_\w+_USERNAME$",
    re.IGNORECASE,
)
#: Bytes a pipe takes without a reader (Linux: 64 KiB): the payload is written before the exec.
PIPE_LIMIT = 60_000
_received: dict[str, str] | None = None


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and name != SECRETS_FD_ENV


def secret_variables(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if is_secret_name(name)}


def make_non_dumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``: other processes of this user can no longer read this one's
    /proc/<pid>/environ, its open pipes (/proc/<pid>/fd), its memory (/proc/<pid>/mem) or attach
    to it. Linux only; False where it could not be set."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here: only the started-over process pays for it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        return False


def take_secrets() -> dict[str, str] | None:
    """In the started-over process: the secrets read from the pipe (read once, then the pipe is
    closed; later calls give the same); None in a process started any other way."""
    global _received
    if _received is None:
        fd_text = os.environ.pop(SECRETS_FD_ENV, None)
        if fd_text is None:
            return None
        fd = int(fd_text)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        os.close(fd)
        _received = json.loads(b"".join(chunks))
    return _received


def start_over(command: Sequence[str]) -> None:
    """Execute ``command`` (this same wheelflow command) again without the secret variables in its
    start environment; they wait in a pipe whose descriptor the new process finds in
    ``WHEELFLOW_SECRETS_FD``. Returns (without executing anything) when this process already
    started over, when there is nothing to hide, when the secrets are too many for a pipe, or off
    Linux."""
    if _received is not None or SECRETS_FD_ENV in os.environ or not sys.platform.startswith("linux"):
        return
    secrets = secret_variables(os.environ)
    payload = json.dumps(secrets).encode()
    if not secrets or len(payload) > PIPE_LIMIT:
        return
    read, write = os.pipe()
    os.write(write, payload)
    os.close(write)
    os.set_inheritable(read, True)
    env = {name: value for name, value in os.environ.items() if name not in secrets}
    env[SECRETS_FD_ENV] = str(read)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], list(command), env)
