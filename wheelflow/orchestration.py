"""What a deployment run ended as, for a CI job: the outcome and its exit code.

Starting and following runs goes through the Prefect API (:mod:`wheelflow.prefect_api`); Prefect is
the scheduler and the queue, wheelflow only asks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import WheelflowError

#: ``wheelflow trigger --wait`` exit codes (2 is bad input, as everywhere in wheelflow).
EXIT_COMPLETED, EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT = 0, 1, 3, 4


class OrchestrationError(WheelflowError):
    transient = False


@dataclass(frozen=True)
class RunOutcome:
    flow_run_id: str
    deployment: str
    state: str  # the last state name seen
    state_type: str
    url: str | None
    timed_out: bool = False

    @property
    def exit_code(self) -> int:
        if self.timed_out:
            return EXIT_TIMEOUT
        if self.state_type == "COMPLETED":
            return EXIT_COMPLETED
        if self.state_type in ("CANCELLED", "CANCELLING", "CRASHED"):
            return EXIT_CANCELLED
        return EXIT_FAILED

    def json(self) -> dict[str, Any]:
        return {"flow_run_id": self.flow_run_id, "deployment": self.deployment, "state": self.state,
                "state_type": self.state_type, "url": self.url, "timed_out": self.timed_out,
                "exit_code": self.exit_code}
