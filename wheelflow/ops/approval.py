"""The human decision between staging and production.

Policies: ``manual`` always asks; ``auto`` never does; ``auto-if-staging-verified`` goes on by itself
when every file of the earlier targets was verified (served with its sha256, installed, smoke-tested)
and asks otherwise. The question is a Prefect pause with an input form (``Decision``) that the UI
shows (:class:`wheelflow.adapters.prefect_api.Decision`); ``wheelflow approve RUN_ID`` answers it from a terminal or CI.
"""

from __future__ import annotations


def needs_person(policy: str, earlier_verified: bool) -> bool:
    if policy == "manual":
        return True
    if policy == "auto-if-staging-verified":
        return not earlier_verified
    return False


def approval_key(target: str) -> str:
    return f"approve-{target}"
