"""The human decision between staging and production.

Policies: ``manual`` always asks; ``auto`` never does; ``auto-if-staging-verified`` goes on by itself
when every file of the earlier targets was verified (served with its sha256, installed, smoke-tested)
and asks otherwise. The question is a Prefect pause with an input form (``Decision``) that the UI
shows (:class:`wheelflow.adapters.prefect_api.Decision`); ``wheelflow approve RUN_ID`` answers it from a terminal or CI.
"""

from __future__ import annotations

#: The longest reason a decision keeps (characters). The reason goes into the release report, the
#: run's logs and state messages, and the alert's webhook body: a 10 MiB reason made each of them huge.
MAX_REASON = 4096
REASON_CUT = " [cut: {more:,} more characters]"


def needs_person(policy: str, earlier_verified: bool) -> bool:
    if policy == "manual":
        return True
    if policy == "auto-if-staging-verified":
        return not earlier_verified
    return False


def approval_key(target: str) -> str:
    return f"approve-{target}"


def reason_too_long(reason: str) -> str | None:
    """Why a reason given on the command line is refused, or None when it fits."""
    if len(reason) <= MAX_REASON:
        return None
    return f"the reason is {len(reason):,} characters, over the limit of {MAX_REASON:,}"


def cap_reason(reason: str) -> str:
    """A reason that came through the API or the UI's form, cut to :data:`MAX_REASON` characters with
    a marker saying how much was cut (the command line refuses a longer one instead)."""
    if len(reason) <= MAX_REASON:
        return reason
    marker = REASON_CUT.format(more=len(reason) - MAX_REASON)
    kept = MAX_REASON - len(marker)
    return reason[:kept] + REASON_CUT.format(more=len(reason) - kept)
