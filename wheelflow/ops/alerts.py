"""Alerts: generic JSON, Slack- and Discord-compatible webhooks, and email over SMTP.

Every destination is a secret (webhook URLs carry their own tokens; SMTP has a password), so they
come from the environment, or from a Prefect Secret block when the variable's value is
``prefect-secret:BLOCK``. They never appear in logs, reports or exceptions.

- ``WHEELFLOW_ALERT_WEBHOOK``: generic JSON webhooks, comma-separated (the whole Alert as JSON,
  plus a ``text`` line so simple receivers can show it);
- ``WHEELFLOW_ALERT_SLACK_WEBHOOK`` / ``WHEELFLOW_ALERT_DISCORD_WEBHOOK``: incoming webhooks;
- ``WHEELFLOW_ALERT_EMAIL_TO`` (comma-separated) with ``WHEELFLOW_SMTP_HOST`` and optionally
  ``WHEELFLOW_SMTP_PORT`` (25), ``WHEELFLOW_SMTP_FROM``, ``WHEELFLOW_SMTP_USERNAME``,
  ``WHEELFLOW_SMTP_PASSWORD``, ``WHEELFLOW_SMTP_STARTTLS`` (1 to upgrade the connection).
"""

from __future__ import annotations

import email.policy
import random
import smtplib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx

from wheelflow.core import secretenv
from wheelflow.core.redaction import redact, redact_value, register_secret, register_url

WEBHOOK_ENV = "WHEELFLOW_ALERT_WEBHOOK"
SLACK_ENV = "WHEELFLOW_ALERT_SLACK_WEBHOOK"
DISCORD_ENV = "WHEELFLOW_ALERT_DISCORD_WEBHOOK"
EMAIL_TO_ENV = "WHEELFLOW_ALERT_EMAIL_TO"
SECRET_PREFIX = "prefect-secret:"


@dataclass(frozen=True)
class Alert:
    event: str  # release-failed, incident-opened, incident-reminder, incident-resolved, ...
    project: str
    version: str | None
    summary: str  # one line
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    lines: tuple[str, ...] = ()  # the message body, one fact per line

    def text(self) -> str:
        body = [f"[wheelflow] {self.summary}", *self.lines]
        if self.flow_run_url:
            body.append(f"flow run: {self.flow_run_url}")
        return redact("\n".join(body))

    def payload(self) -> dict[str, Any]:
        # "text" makes the same payload readable by simple receivers too.
        return redact_value({**asdict(self), "lines": list(self.lines), "text": self.text()})


@dataclass(frozen=True)
class Channel:
    kind: str  # webhook, slack, discord, email
    target: str = field(repr=False)  # a URL or the recipients: secret, never printed
    smtp: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        return self.kind


SecretReader = Callable[[str], Any]


def _resolve(value: str, read_secret: SecretReader | None) -> str:
    if not value.startswith(SECRET_PREFIX):
        return value
    if read_secret is None:
        raise ValueError(f"{value.split(':')[0]}: a Prefect Secret reference needs a Prefect API to read it")
    return str(read_secret(value[len(SECRET_PREFIX) :]))


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def configured_channels(env: Mapping[str, str] | None = None, read_secret: SecretReader | None = None) -> list[Channel]:
    """The destinations named in ``env`` (default: the environment); ``read_secret`` resolves
    ``prefect-secret:BLOCK`` values (see :func:`wheelflow.adapters.prefect_api.read_secret`). Every webhook URL
    and the SMTP password are registered for redaction as they are read."""
    env = secretenv.environ() if env is None else env
    channels = [Channel("webhook", url) for url in _split(_resolve(env.get(WEBHOOK_ENV, ""), read_secret))]
    if env.get(SLACK_ENV):
        channels += [Channel("slack", url) for url in _split(_resolve(env[SLACK_ENV], read_secret))]
    if env.get(DISCORD_ENV):
        channels += [Channel("discord", url) for url in _split(_resolve(env[DISCORD_ENV], read_secret))]
    for channel in channels:
        register_url(channel.target)
    if env.get(EMAIL_TO_ENV) and env.get("WHEELFLOW_SMTP_HOST"):
        smtp = {
            key: env[f"WHEELFLOW_SMTP_{key.upper()}"]
            for key in ("host", "port", "from", "username", "password", "starttls")
            if env.get(f"WHEELFLOW_SMTP_{key.upper()}")
        }
        if "password" in smtp:
            smtp["password"] = _resolve(smtp["password"], read_secret)
            register_secret(smtp["password"])
        channels.append(Channel("email", env[EMAIL_TO_ENV], smtp))
    return channels


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    attempts: int = 4,
    first_delay: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float = 10.0,
) -> bool:
    """POST with retries on 5xx, 429 and connection errors; True once the receiver accepted it."""
    delay = first_delay
    with httpx.Client(timeout=timeout) as client:
        for attempt in range(attempts):
            try:
                response = client.post(url, json=payload)
                if response.status_code < 400:
                    return True
                if response.status_code < 500 and response.status_code != 429:
                    return False  # refused for good: retrying will not help
            except httpx.HTTPError:
                pass
            if attempt + 1 < attempts:
                sleep(delay * (1 + random.random() * 0.5))  # backoff with jitter
                delay *= 2
    return False


def send_email(
    channel: Channel,
    alert: Alert,
    *,
    attempts: int = 3,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float = 10.0,
) -> bool:
    smtp = channel.smtp
    # RFC 5322's hard line limit: a subject with a long index URL stays on one line, unfolded.
    message = EmailMessage(policy=email.policy.SMTP.clone(max_line_length=998))
    message["Subject"] = f"[wheelflow] {alert.summary}"
    message["From"] = smtp.get("from", "wheelflow@localhost")
    message["To"] = ", ".join(_split(channel.target))
    message.set_content(alert.text())
    delay = 1.0
    for attempt in range(attempts):
        try:
            with smtplib.SMTP(smtp["host"], int(smtp.get("port", "25")), timeout=timeout) as server:
                if smtp.get("starttls") in ("1", "true", "yes"):
                    server.starttls()
                if smtp.get("username"):
                    server.login(smtp["username"], smtp.get("password", ""))
                server.send_message(message)
            return True
        except (OSError, smtplib.SMTPException):
            if attempt + 1 < attempts:
                sleep(delay * (1 + random.random() * 0.5))
                delay *= 2
    return False


def deliver(channel: Channel, alert: Alert) -> bool:
    if channel.kind == "email":
        return send_email(channel, alert)
    if channel.kind == "slack":
        return post_json(channel.target, {"text": alert.text()})
    if channel.kind == "discord":
        return post_json(channel.target, {"content": alert.text()[:2000]})  # Discord's message limit
    return post_json(channel.target, alert.payload())


def send_alert(alert: Alert, channels: list[Channel], log: Callable[[str], None] = print) -> int:
    """Send to every channel (see :func:`configured_channels`); returns how many accepted it.
    Names channels by kind only."""
    delivered = [channel.kind for channel in channels if deliver(channel, alert)]
    if channels:
        failed = len(channels) - len(delivered)
        log(
            f"alert {alert.event!r} delivered to {len(delivered)} of {len(channels)} channel(s)"
            + (f" ({', '.join(delivered)})" if delivered else "")
            + (f"; {failed} failed" if failed else "")
        )
    return len(delivered)
