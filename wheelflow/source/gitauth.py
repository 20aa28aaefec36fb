"""Credentials for git remotes: handed to git through GIT_ASKPASS, never in a URL.

A URL with ``user:token@`` ends up in ``.git/config`` of the clone, in ``ps`` while git runs, in
flow run parameters and in error messages. So such a URL is refused, and credentials come from
``WHEELFLOW_GIT_USERNAME`` / ``WHEELFLOW_GIT_PASSWORD`` (or a Prefect Secret block): they are put
in the environment of the one git process that needs them, whose askpass helper (a script that
holds no secret) prints them when git asks. Git's credential helpers are switched off for that
process, so no helper stores them on disk either.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from wheelflow.core import secretenv
from wheelflow.core.childenv import child_env
from wheelflow.core.credentials import Credentials, secret_block_credentials
from wheelflow.core.errors import SpecError
from wheelflow.core.redaction import redact_url, register_secret, url_credentials

USERNAME_ENV = "WHEELFLOW_GIT_USERNAME"
PASSWORD_ENV = "WHEELFLOW_GIT_PASSWORD"
#: The user name sent with a bare token (forges that take tokens accept any user name with them).
TOKEN_USERNAME = "x-access-token"
#: What git over SSH needs from the environment (an agent's socket, a custom ssh command): no secrets.
SSH_VARIABLES = ("SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "GIT_SSH")

_ASKPASS = """#!/bin/sh
# wheelflow's GIT_ASKPASS helper: answers git's prompts from this process's environment.
case "$1" in
  [Uu]sername*) printf '%s\\n' "$WHEELFLOW_GIT_USERNAME" ;;
  *) printf '%s\\n' "$WHEELFLOW_GIT_PASSWORD" ;;
esac
"""
_askpass_path: Path | None = None


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


def git_command(args: tuple[str, ...] | list[str], credentials: Credentials | None) -> list[str]:
    """``git ARGS``; with credentials, with git's credential helpers off (none may store them)."""
    helpers_off = ["-c", "credential.helper="] if credentials else []
    return ["git", *helpers_off, *args]


def git_env(credentials: Credentials | None) -> dict[str, str]:
    """The environment of one git process: allow-listed, never prompting on a terminal, and with
    credentials, the askpass helper and the two variables it reads."""
    env = child_env(extra={"GIT_TERMINAL_PROMPT": "0"}, pass_env=SSH_VARIABLES)
    if credentials is not None:
        env.update(
            {
                "GIT_ASKPASS": str(_askpass_script()),
                USERNAME_ENV: credentials.username,
                PASSWORD_ENV: credentials.password,
            }
        )
    return env


def _askpass_script() -> Path:
    global _askpass_path
    if _askpass_path is None or not _askpass_path.is_file():
        directory = Path(tempfile.mkdtemp(prefix="wheelflow-askpass-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        path = directory / "askpass"
        path.write_text(_ASKPASS)
        path.chmod(0o700)
        _askpass_path = path
    return _askpass_path
