"""A failed run's verdict where a person looks first in the Prefect UI.

The UI's run page shows the run's *name* in its header and in every run list; the final state's
message only appears when one hovers over the state badge, and the failing step's log lines come last
in the Logs tab. A custom state name would show in the badge, but the server names its events after
the state ("prefect.flow-run.Failed") and the alert automations listen for those. So the failed run
is renamed after its verdict instead.
"""

from __future__ import annotations

#: What a run name may grow to: the header wraps it, run lists cut it with an ellipsis.
NAME_LIMIT = 200


def verdict_run_name(name: str, verdict: str, limit: int = NAME_LIMIT) -> str:
    """``name`` followed by the verdict ("install + smoke on staging failed: ..."), on one line and at
    most ``limit`` characters; unchanged when there is no verdict."""
    verdict = " ".join(verdict.split())
    if not verdict:
        return name
    named = f"{name}: {verdict}"
    return named if len(named) <= limit else named[: limit - 1] + "…"
