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
- ``WHEELFLOW_ALERT_TIMEOUT``: seconds an alert may take in all, every channel and retry included
  (default 30). A receiver that never answers, or answers one byte every few seconds, never holds a
  run (a failure hook, the monitor) longer: what has not been delivered by then counts as failed.
"""

from __future__ import annotations

import email.policy
import random
import smtplib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx

from wheelflow.core import secretenv
from wheelflow.core.deadline import Deadline, finite_seconds
from wheelflow.core.errors import SpecError
from wheelflow.core.redaction import redact, redact_value, register_secret, register_url

WEBHOOK_ENV = "WHEELFLOW_ALERT_WEBHOOK"
SLACK_ENV = "WHEELFLOW_ALERT_SLACK_WEBHOOK"
DISCORD_ENV = "WHEELFLOW_ALERT_DISCORD_WEBHOOK"
EMAIL_TO_ENV = "WHEELFLOW_ALERT_EMAIL_TO"
TIMEOUT_ENV = "WHEELFLOW_ALERT_TIMEOUT"
DEFAULT_ALERT_TIMEOUT = 30.0
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
    deadline: Deadline | None = None,
) -> bool:
    """POST with retries on 5xx, 429 and connection errors; True once the receiver accepted it.
    ``timeout`` bounds each read; ``deadline`` the whole (no retry starts after it, no backoff runs past
    it; a read in progress is left behind by :func:`within`)."""
    delay = first_delay
    deadline = deadline or Deadline.after(DEFAULT_ALERT_TIMEOUT)
    with httpx.Client(timeout=min(timeout, max(deadline.remaining(), 0.1))) as client:
        for attempt in range(attempts):
            try:
                response = client.post(url, json=payload)
                if response.status_code < 400:
                    return True
                if response.status_code < 500 and response.status_code != 429:
                    return False  # refused for good: retrying will not help
            except httpx.HTTPError:
                pass
            pause = delay * (1 + random.random() * 0.5)  # backoff with jitter
            if attempt + 1 >= attempts or pause >= deadline.remaining():
                return False
            sleep(pause)
            delay *= 2
    return False


def send_email(
    channel: Channel,
    alert: Alert,
    *,
    attempts: int = 3,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float = 10.0,
    deadline: Deadline | None = None,
) -> bool:
    deadline = deadline or Deadline.after(DEFAULT_ALERT_TIMEOUT)
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
            read_timeout = min(timeout, max(deadline.remaining(), 0.1))
            with smtplib.SMTP(smtp["host"], int(smtp.get("port", "25")), timeout=read_timeout) as server:
                if smtp.get("starttls") in ("1", "true", "yes"):
                    server.starttls()
                if smtp.get("username"):
                    server.login(smtp["username"], smtp.get("password", ""))
                server.send_message(message)
            return True
        except (OSError, smtplib.SMTPException):
            pause = delay * (1 + random.random() * 0.5)
            if attempt + 1 >= attempts or pause >= deadline.remaining():
                return False
            sleep(pause)
            delay *= 2
    return False


def deliver(channel: Channel, alert: Alert, deadline: Deadline | None = None) -> bool:
    if channel.kind == "email":
        return send_email(channel, alert, deadline=deadline)
    if channel.kind == "slack":
        return post_json(channel.target, {"text": alert.text()}, deadline=deadline)
    if channel.kind == "discord":
        # Discord's message limit
        return post_json(channel.target, {"content": alert.text()[:2000]}, deadline=deadline)
    return post_json(channel.target, alert.payload(), deadline=deadline)


def alert_timeout(env: Mapping[str, str] | None = None, log: Callable[[str], None] = print) -> float:
    """``WHEELFLOW_ALERT_TIMEOUT`` in seconds (default 30). A bad value is said and the default used:
    it is read when something already went wrong, and the alert must still go out."""
    env = secretenv.environ() if env is None else env
    value = env.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_ALERT_TIMEOUT
    try:
        return finite_seconds(value, TIMEOUT_ENV)
    except SpecError as exc:
        log(f"{exc}; using {DEFAULT_ALERT_TIMEOUT:g} s")
        return DEFAULT_ALERT_TIMEOUT


def within(deadline: Deadline, work: list[Callable[[], bool]]) -> list[bool]:
    """Run each of ``work`` at once, each in a thread of its own; the results that came by ``deadline``
    (False for the others, which are left to end on their own: daemon threads never keep a process alive).
    Sockets' timeouts are per read: a receiver that drips one byte every few seconds never trips them."""
    results = [False] * len(work)
    done = threading.Semaphore(0)

    def run(index: int) -> None:
        try:
            results[index] = bool(work[index]())
        except Exception:
            results[index] = False
        finally:
            done.release()

    for index in range(len(work)):
        threading.Thread(target=run, args=(index,), name="wheelflow-alert", daemon=True).start()
    finished = 0
    while finished < len(work) and done.acquire(timeout=deadline.remaining()):
        finished += 1
    return list(results)  # a copy: a late thread changes nothing now


def send_alert(
    alert: Alert,
    channels: list[Channel],
    log: Callable[[str], None] = print,
    *,
    deadline: Deadline | None = None,
) -> int:
    """Send to every channel at once (see :func:`configured_channels`) within ``deadline`` (default:
    :func:`alert_timeout` from now); returns how many accepted it by then. Names channels by kind only."""
    deadline = deadline or Deadline.after(alert_timeout(log=log))
    accepted = within(deadline, [lambda c=channel: deliver(c, alert, deadline) for channel in channels])
    delivered = [channel.kind for channel, ok in zip(channels, accepted) if ok]
    if channels:
        failed = len(channels) - len(delivered)
        late = " (the alert deadline passed)" if failed and deadline.expired else ""
        log(
            f"alert {alert.event!r} delivered to {len(delivered)} of {len(channels)} channel(s)"
            + (f" ({', '.join(delivered)})" if delivered else "")
            + (f"; {failed} failed{late}" if failed else "")
        )
    return len(delivered)
