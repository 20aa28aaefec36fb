"""Credentials for git remotes: handed to git through a credential helper reading an inherited pipe,
never in a URL and never in an environment.

A URL with ``user:token@`` ends up in ``.git/config`` of the clone, in ``ps`` while git runs, in
flow run parameters and in error messages. So such a URL is refused, and credentials come from
``WHEELFLOW_GIT_USERNAME`` / ``WHEELFLOW_GIT_PASSWORD`` (or a Prefect Secret block). An environment
variable would sit in the start environment (``/proc/<pid>/environ``) of git and of every process
git starts (``git-remote-http``, ``index-pack``) for as long as each lives. Instead the answer git's
credential protocol expects (``username=...``/``password=...``) is written into a pipe whose read
end the one git process inherits, and git's only credential helper (:func:`credential_helper`, a
shell function that holds no secret) reads it from there when git asks: the pipe is then empty.
Git's other credential helpers are switched off for that process, so no helper stores the
credentials on disk either.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wheelflow.core import secretenv
from wheelflow.core.childenv import child_env
from wheelflow.core.credentials import Credentials, secret_block_credentials
from wheelflow.core.errors import SpecError
from wheelflow.core.redaction import redact_url, register_secret, url_credentials
from wheelflow.core.startover import PIPE_LIMIT

USERNAME_ENV = "WHEELFLOW_GIT_USERNAME"
PASSWORD_ENV = "WHEELFLOW_GIT_PASSWORD"
#: The user name sent with a bare token (forges that take tokens accept any user name with them).
TOKEN_USERNAME = "x-access-token"
#: What git over SSH needs from the environment (an agent's socket, a custom ssh command): no secrets.
SSH_VARIABLES = ("SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "GIT_SSH")


def refuse_url_credentials(url: str, key: str = "project") -> None:
    """SpecError when a git URL carries credentials: ``user:password@``, a user name in an http(s)
    URL (``git+https://`` too: tokens are given that way), a token in the query (``?token=``,
    ``?access_token=``), or a user other than ``git`` in the scp form ``USER@host:path``. An ssh://
    user name alone is not one."""
    found = url_credentials(url)
    if found:
        raise SpecError(
            key,
            f"{redact_url(url)!r} carries credentials in the URL ({found[0]}), where git would store and show them",
            f"remove them from the URL and export {USERNAME_ENV} and {PASSWORD_ENV} (or name a Prefect Secret block)",
        )


def git_credentials(
    secret_block: str | None = None,
    environ: Mapping[str, str] | None = None,
    read_secret: Callable[[str], Any] | None = None,
) -> Credentials | None:
    """The credentials for git remotes: from a Prefect Secret block when one is named (a token, or
    {"username": ..., "password": ...}), else from the environment; None when there are none."""
    if secret_block:
        credentials = secret_block_credentials(
            secret_block, "git credentials", f"export {PASSWORD_ENV}", read_secret, token_username=TOKEN_USERNAME
        )
    else:
        environ = secretenv.environ() if environ is None else environ
        password = environ.get(PASSWORD_ENV)
        credentials = Credentials(environ.get(USERNAME_ENV) or TOKEN_USERNAME, password) if password else None
    if credentials is not None:
        register_secret(credentials.password)
    return credentials


def credential_helper(fd: int) -> str:
    """git's credential helper for one git process: on ``get`` it prints what is waiting on the
    inherited descriptor ``fd`` (the credentials, once); on ``store`` and ``erase`` it reads git's
    request and keeps nothing."""
    return f'!f() {{ if [ "$1" = get ]; then cat /dev/fd/{fd}; else cat >/dev/null; fi; }}; f'


def credential_answer(credentials: Credentials) -> bytes:
    """What the helper prints: git's credential protocol, one ``key=value`` a line. A value with a
    line break or NUL could add keys of its own, and is refused; so is one too long for the pipe
    to hold before git reads it."""
    for name, value in ((USERNAME_ENV, credentials.username), (PASSWORD_ENV, credentials.password)):
        if "\n" in value or "\r" in value or "\0" in value:
            raise SpecError(
                name, "contains a line break or NUL, which git's credential protocol cannot carry", "remove it"
            )
    answer = f"username={credentials.username}\npassword={credentials.password}\n".encode()
    if len(answer) > PIPE_LIMIT:
        raise SpecError(PASSWORD_ENV, f"is {len(answer)} bytes long, more than git credentials take", "check its value")
    return answer


def git_command(args: Sequence[str], credential_fd: int | None = None) -> list[str]:
    """``git ARGS``; with a credential descriptor, with git's configured credential helpers off (none
    may store the credentials) and :func:`credential_helper` as the only one."""
    if credential_fd is None:
        return ["git", *args]
    return ["git", "-c", "credential.helper=", "-c", f"credential.helper={credential_helper(credential_fd)}", *args]


def git_env() -> dict[str, str]:
    """The environment of one git process: allow-listed (no secret in it), never prompting on a terminal."""
    return child_env(extra={"GIT_TERMINAL_PROMPT": "0"}, pass_env=SSH_VARIABLES)


def run_git(
    args: Sequence[str], cwd: Path | None = None, credentials: Credentials | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``git ARGS`` with the allow-listed environment, its output captured; ``credentials``
    reach it through the credential helper and an inherited pipe only."""
    if credentials is None:
        return subprocess.run(git_command(args), capture_output=True, text=True, cwd=cwd, env=git_env())
    answer = credential_answer(credentials)
    read, write = os.pipe()
    try:
        os.write(write, answer)  # a few hundred bytes: the pipe holds them until git's helper reads
    finally:
        os.close(write)
    try:
        return subprocess.run(
            git_command(args, read), capture_output=True, text=True, cwd=cwd, env=git_env(), pass_fds=(read,)
        )
    finally:
        os.close(read)
