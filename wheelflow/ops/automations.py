"""Server-side alerting, described plainly: the Prefect Automations wheelflow registers, and the
notification destinations they send to. ``wheelflow.adapters.prefect_api.install_automations`` turns these
descriptions into Prefect objects; nothing here imports Prefect.

Why server-side: the release flow's own hooks (flows/hooks.py) send the rich alert, but they run in
the flow's process and are gone when that process is killed, and nothing in a flow notices a
schedule that stopped firing. The Prefect server evaluates these automations whatever happened to
the workers:

- ``wheelflow-zombie-runs``: a run whose heartbeats stop (its worker was killed) is marked Crashed;
- ``wheelflow-release-problem``: a ``release`` run ended Failed, Crashed or TimedOut, or went
  Cancelling (its cancellation hook runs then, before Cancelled), and no ``wheelflow.alert.sent``
  event (the hook's "I delivered the rich alert") followed within the dedup window: notify. So each
  problem gives exactly one alert, from whichever path survived;
- ``wheelflow-running-too-long`` / ``wheelflow-paused-too-long``: a run stays Running or Paused
  longer than its limit;
- ``wheelflow-silent-<deployment>``: ``sync-monitor`` or ``nightly`` finished no run (in any final
  state) within two of its intervals (the monitor of the monitor); it fires again every two intervals while it stays silent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from wheelflow.ops.alerts import Channel

PREFIX = "wheelflow-"
ALERT_SENT_EVENT = "wheelflow.alert.sent"
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
PREFECT_HEARTBEAT_DEFAULT = 180  # Prefect 3.9's default heartbeat period (seconds)
FLOWS = ("release", "sync-monitor", "build-cell")  # wheelflow's flow names
PROBLEM_STATES = ("Failed", "Crashed", "TimedOut", "Cancelled")
FINAL_STATES = ("Completed", *PROBLEM_STATES)
#: The states from which the release hook's alert is awaited. A cancellation's hook runs at
#: Cancelling, before the runner proposes Cancelled, so its ``wheelflow.alert.sent`` precedes the
#: Cancelled event: a window opened at Cancelled would never see it and page a second time.
#: A run cancelled before it ever ran goes straight to Cancelled: it did nothing, and pages nobody.
ALERT_AWAITED_AFTER = ("Failed", "Crashed", "TimedOut", "Cancelling")
MINIMUM_WINDOW = 10.0  # Prefect refuses proactive triggers with a shorter window
#: Sent by ``install`` about each run a changed automation was waiting on: the server gives an updated
#: automation new trigger ids, which drops the windows the old ones had open; this event opens them again.
REARM_EVENT_PREFIX = "wheelflow.automation.rearmed."


def rearm_event(automation: str) -> str:
    """The event that opens ``automation``'s window again for one run (see ``AutomationSpec.rearm``)."""
    return REARM_EVENT_PREFIX + automation.removeprefix(PREFIX)


def flow_run_events(*states: str) -> list[str]:
    return [f"prefect.flow-run.{state}" for state in states]


@dataclass(frozen=True)
class Windows:
    """How long each automation waits before it acts (seconds)."""

    dedup: float = 120.0  # how long the release hook has to deliver its rich alert first
    running_limit: float = 6 * 3600.0
    paused_limit: float = 24 * 3600.0
    zombie: float | None = None  # no heartbeat for this long → Crashed; default 3 heartbeat periods
    silent: Mapping[str, float] = field(default_factory=lambda: {"sync-monitor": 900.0, "nightly": 86400.0})

    def zombie_window(self, env: Mapping[str, str] | None = None) -> float:
        """Three heartbeat periods, as Prefect's zombie-run recipe advises: one late heartbeat is no crash."""
        if self.zombie is not None:
            return self.zombie
        env = os.environ if env is None else env
        return 3.0 * float(env.get(HEARTBEAT_ENV) or PREFECT_HEARTBEAT_DEFAULT)


@dataclass(frozen=True)
class AutomationSpec:
    """One automation: a trigger on flow-run events and one action (``notify`` or ``crash``)."""

    name: str
    description: str
    posture: str  # Reactive or Proactive
    expect: tuple[str, ...]
    within: float
    action: str  # notify (through every destination) or crash (mark the run Crashed)
    after: tuple[str, ...] = ()
    match: Mapping[str, str | list[str]] = field(default_factory=dict)
    match_related: Mapping[str, str | list[str]] = field(default_factory=dict)
    for_each: tuple[str, ...] = ()
    subject: str = ""
    body: str = ""
    #: Which runs an updated automation was waiting on, to open their windows again: "heartbeating"
    #: (unfinished runs that sent a heartbeat: a dead one is then still marked Crashed), "awaiting-alert"
    #: (release runs that ended badly within the window with no alert sent yet: one alert still comes),
    #: or "" (a lost window only delays the alert by up to one window).
    rearm: str = ""

    @property
    def opened_by(self) -> tuple[str, ...]:
        """The events that open a window: ``after``, plus the re-arm event of an automation that has one."""
        return (*self.after, rearm_event(self.name)) if self.rearm else self.after


_RUN = {"prefect.resource.id": "prefect.flow-run.*"}
_OUR_FLOWS = {"prefect.resource.role": "flow", "prefect.resource.name": list(FLOWS)}
_RUN_LINES = (
    "flow run: {{ flow_run.name }} ({{ flow_run.id }})\n"
    "deployment: {{ deployment.name if deployment else '(none)' }}\n"
    "project: {{ flow_run.parameters.get('project', '') }}\n"
    "state: {{ flow_run.state.name }}: {{ flow_run.state.message or '' }}\n"
)
#: The server's own ui_url filter knows the UI only when PREFECT_UI_URL is set on the server (rarely):
#: the fallback when ``install`` knows no UI address either.
_SERVER_UI_LINK = "{% set page = flow_run|ui_url %}{% if page %}flow run page: {{ page }}{% endif %}"


def run_lines(ui_base: str | None) -> str:
    """The alert's body: the run, its deployment, project and state, and a link to its page in the UI
    at ``ui_base`` (the address ``install`` reaches the UI at), else wherever the server thinks it is."""
    if ui_base:
        return _RUN_LINES + f"flow run page: {ui_base.rstrip('/')}/runs/flow-run/{{{{ flow_run.id }}}}"
    return _RUN_LINES + _SERVER_UI_LINK


def wheelflow_automations(
    windows: Windows, *, notify: bool = True, env: Mapping[str, str] | None = None, ui_base: str | None = None
) -> list[AutomationSpec]:
    """Every automation wheelflow registers. With ``notify=False`` (no destination configured) only
    the zombie detector, which acts on runs and needs none."""
    specs = [
        AutomationSpec(
            name=f"{PREFIX}zombie-runs",
            description="A wheelflow run whose heartbeats stopped (its worker died) is marked Crashed.",
            posture="Proactive",
            after=(HEARTBEAT_EVENT,),
            # Cancelling: the runner is ending the run itself (its heartbeats stop when it kills the process)
            expect=(HEARTBEAT_EVENT, *flow_run_events(*FINAL_STATES, "Cancelling")),
            within=windows.zombie_window(env),
            action="crash",
            match=_RUN,
            match_related=_OUR_FLOWS,
            for_each=("prefect.resource.id",),
            rearm="heartbeating",
        )
    ]
    if not notify:
        return specs
    specs.append(
        AutomationSpec(
            name=f"{PREFIX}release-problem",
            description=(
                "A release run ended Failed/Crashed/TimedOut or was cancelled, and its own hook did not report "
                f"delivering the rich alert ({ALERT_SENT_EVENT}) in time."
            ),
            posture="Proactive",
            after=tuple(flow_run_events(*ALERT_AWAITED_AFTER)),
            expect=(ALERT_SENT_EVENT,),
            within=windows.dedup,
            action="notify",
            match=_RUN,
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": "release"},
            for_each=("prefect.resource.id",),
            subject="release run {{ flow_run.name }} {{ flow_run.state.name | lower }} (no alert from the run itself)",
            body=run_lines(ui_base),
            rearm="awaiting-alert",
        )
    )
    for state, limit in (("Running", windows.running_limit), ("Paused", windows.paused_limit)):
        ends = [s for s in ("Running", "Paused", *FINAL_STATES) if s != state]
        specs.append(
            AutomationSpec(
                name=f"{PREFIX}{state.lower()}-too-long",
                description=f"A wheelflow run stayed {state} longer than {limit:.0f} s.",
                posture="Proactive",
                after=(f"prefect.flow-run.{state}",),
                expect=tuple(flow_run_events(*ends)),
                within=limit,
                action="notify",
                match=_RUN,
                match_related=_OUR_FLOWS,
                for_each=("prefect.resource.id",),
                subject=f"{{{{ flow.name }}}} run {{{{ flow_run.name }}}} {state} for more than {limit:.0f} s",
                body=run_lines(ui_base),
            )
        )
    for deployment, interval in windows.silent.items():
        specs.append(
            AutomationSpec(
                name=f"{PREFIX}silent-{deployment}",
                description=f"Deployment {deployment} finished no run within two of its intervals ({2 * interval:.0f} s).",
                posture="Proactive",
                # Any finished run is a sign of life: a monitor with an open incident ends Failed, and
                # alerts through its incident alerts, not as a silent schedule.
                expect=tuple(flow_run_events(*FINAL_STATES)),
                within=max(2 * interval, MINIMUM_WINDOW),
                action="notify",
                match=_RUN,
                match_related={"prefect.resource.role": "deployment", "prefect.resource.name": deployment},
                subject=f"deployment {deployment} finished no run in {2 * interval:.0f} s (two intervals)",
                body=(
                    f"The schedule of {deployment} may have stopped firing: a paused or stopped `wheelflow serve`, "
                    "a dead worker, a paused work pool, or runs that never end. Check its runs in the Prefect UI."
                ),
            )
        )
    return specs


@dataclass(frozen=True)
class Destination:
    """A notification block's content: where to POST and the JSON to send (``{{subject}}`` and
    ``{{body}}`` are filled in by Prefect). ``url`` is a secret, stored as the block's secret value."""

    kind: str
    url: str = field(repr=False)
    json_data: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.kind


def automation_destinations(channels: list[Channel]) -> tuple[list[Destination], list[str]]:
    """The destinations a Prefect notification block can reach, and the channel kinds it cannot (email:
    Prefect's email blocks live in a separate integration; the release hook still emails)."""
    text = "[wheelflow] {{subject}}\n{{body}}"
    shapes = {
        "webhook": {"event": "automation", "source": "prefect-automation", "summary": "{{subject}}", "text": text},
        "slack": {"text": text},
        "discord": {"content": text},
    }
    reachable = [Destination(c.kind, c.target, shapes[c.kind]) for c in channels if c.kind in shapes]
    return reachable, [c.kind for c in channels if c.kind not in shapes]
