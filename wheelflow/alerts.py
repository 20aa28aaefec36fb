"""Alerts: a JSON POST to each configured webhook, retried with backoff.

Webhook URLs are secrets (they carry their own tokens): they come from the environment
(``WHEELFLOW_ALERT_WEBHOOK``, comma-separated) and never appear in logs, reports or exceptions.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import httpx

WEBHOOK_ENV = "WHEELFLOW_ALERT_WEBHOOK"


@dataclass(frozen=True)
class Alert:
    event: str  # e.g. "release-failed"
    project: str
    version: str | None
    summary: str  # one line
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        # "text" makes the same payload readable by Slack- and Discord-style receivers too.
        return {**asdict(self), "text": f"[wheelflow] {self.summary}"}


def webhook_urls() -> list[str]:
    return [u.strip() for u in os.environ.get(WEBHOOK_ENV, "").split(",") if u.strip()]


def post_json(url: str, payload: dict[str, Any], *, attempts: int = 4, first_delay: float = 0.5,
              sleep: Callable[[float], None] = time.sleep, timeout: float = 10.0) -> bool:
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


def send_alert(alert: Alert, log: Callable[[str], None] = print) -> int:
    """Send to every configured webhook; returns how many accepted it. Never logs a URL."""
    urls = webhook_urls()
    delivered = sum(post_json(url, alert.payload()) for url in urls)
    if urls:
        log(f"alert {alert.event!r} delivered to {delivered} of {len(urls)} webhook(s)")
    return delivered
