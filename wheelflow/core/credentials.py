"""Credentials as values, and reading them from a Prefect Secret block through a callable (no Prefect here)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wheelflow.core.errors import CredentialsError


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


def secret_block_value(block: str, owner: str, other_source: str, read_secret: Callable[[str], Any] | None) -> Any:
    """What a Prefect Secret block holds: a JSON object or list decoded, else the string itself;
    ``owner`` and ``other_source`` complete the error messages."""
    if read_secret is None:
        raise CredentialsError(
            f"{owner}: credentials in Prefect Secret block {block!r} need a Prefect API; "
            f"fix: set PREFECT_API_URL, or {other_source}"
        )
    try:
        value = read_secret(block)
    except CredentialsError as exc:
        raise CredentialsError(f"{owner}: {exc}") from None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def secret_block_credentials(
    block: str,
    owner: str,
    other_source: str,
    read_secret: Callable[[str], Any] | None,
    token_username: str = "__token__",
) -> Credentials:
    """Credentials from a Prefect Secret block holding a token or {"username": ..., "password": ...}."""
    value = secret_block_value(block, owner, other_source, read_secret)
    if isinstance(value, str):
        return Credentials(token_username, value)
    if isinstance(value, dict) and value.get("password"):
        return Credentials(str(value.get("username", token_username)), str(value["password"]))
    raise CredentialsError(
        f"{owner}: Secret block {block!r} must hold a token or "
        '{"username": ..., "password": ...}; fix: store it in one of those forms'
    )
