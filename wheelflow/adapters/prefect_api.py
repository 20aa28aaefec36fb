"""Everything wheelflow asks of Prefect outside flows and tasks: Secret blocks, Variables, run
history, the approval form, starting and following deployment runs, and locks (global concurrency limits).

This is the one module of the ``wheelflow`` package that imports Prefect; the domain modules take
what they need from here as plain callables (e.g. ``read_secret``), so they stay testable without a
Prefect server. ``PREFECT_API_URL`` and ``PREFECT_API_KEY`` name the server, as for Prefect's own CLI.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.input import RunInput
from pydantic import AfterValidator, Field

from wheelflow.core.errors import CredentialsError, ReleaseBusy, SpecError
from wheelflow.ops.approval import cap_reason
from wheelflow.ops.incidents import VARIABLE_PREFIX, Incident, variable_name
from wheelflow.ops.orchestration import deployment_not_found, strict_schema
from wheelflow.ops.runhistory import TaskHistory, entry_from_state, retry_errors
from wheelflow.ops.verdict import verdict_run_name

# -- Secret blocks ---------------------------------------------------------------------------------


def read_secret(block: str) -> Any:
    """The value of the Prefect Secret block ``block`` (a string or a JSON object)."""
    from prefect.blocks.system import Secret

    try:
        return Secret.load(block).get()
    except ValueError:
        raise CredentialsError(
            f"Prefect Secret block {block!r} not found; fix: create it "
            "(prefect block create secret) or use the environment instead"
        ) from None


# -- Variables -------------------------------------------------------------------------------------


def read_variable(name: str) -> Any:
    """A Prefect Variable's value (JSON), or None when it is not set."""
    from prefect.variables import Variable

    return Variable.get(name, default=None)


def read_record(key: str) -> Any:
    """The JSON kept in the latest version of the artifact ``key`` (None when there is none). Artifacts,
    unlike Variables (5000 characters), hold a 96-cell release's upload record."""
    import json

    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key]))
        )
    if not found or not isinstance(found[0].data, str) or "```json\n" not in found[0].data:
        return None
    return json.loads(found[0].data.split("```json\n", 1)[1].rsplit("\n```", 1)[0])


def write_record(key: str, value: Any, description: str) -> None:
    """A new version of the artifact ``key`` holding ``value`` as JSON (readable in the UI too)."""
    import json

    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        key=key, markdown=f"```json\n{json.dumps(value, indent=1, sort_keys=True)}\n```", description=description
    )


def write_variable(name: str, value: Any, tags: tuple[str, ...] = ()) -> None:
    from prefect.variables import Variable

    without_waiting(lambda: Variable.set(name, value, tags=list(tags), overwrite=True))


#: Answers a write gets at once when it meets another writer (SQLite answers "database is locked" as 503).
TRANSIENT_STATUSES = frozenset({503})


#: Set while :func:`without_waiting` makes its own quick attempts: Prefect's client skips its pause then.
_NO_CLIENT_PAUSE: contextvars.ContextVar[bool] = contextvars.ContextVar("wheelflow_no_client_pause", default=False)


class _ClientClock:
    """``prefect.client.base``'s ``time`` module, except that ``sleep`` returns at once while
    ``_NO_CLIENT_PAUSE`` is set. Prefect's sync client sleeps its back-off after a 503 even when no retry
    is left (PREFECT_CLIENT_MAX_RETRIES=0 still slept 2 s, or the answer's Retry-After, before handing the
    503 back), so "retried at once" waited 2 s all the same. Everywhere else it sleeps as before."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if not _NO_CLIENT_PAUSE.get():
            time.sleep(seconds)


def _skip_client_pauses_where_asked() -> None:
    import prefect.client.base

    if not isinstance(prefect.client.base.time, _ClientClock):
        prefect.client.base.time = _ClientClock()  # type: ignore[assignment]


def without_waiting(call: Callable[[], Any], *, within: float = 1.0) -> Any:
    """``call`` (one API request or a few), first with Prefect's client retries off and retried at once
    on a transient refusal for up to ``within`` seconds, then as usual. A write that meets another one
    on a SQLite server is refused with 503 in milliseconds and goes through moments later; Prefect's
    client waits 2 s before its first retry, which made a one-minute release wait for its own lock
    record. The usual retries (minutes, see ``localserver.CLIENT_MAX_RETRIES``) still outlive a
    server restart."""
    import httpx
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    _skip_client_pauses_where_asked()
    deadline, pause = time.monotonic() + within, 0.01
    while time.monotonic() < deadline:
        try:
            with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}):
                asked = _NO_CLIENT_PAUSE.set(True)
                try:
                    return call()
                finally:
                    _NO_CLIENT_PAUSE.reset(asked)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in TRANSIENT_STATUSES:
                raise
        except httpx.TransportError:
            break  # the server is away: the client's own backoff is the right pace
        time.sleep(pause)  # backoff between attempts: the other writer holds SQLite's lock for milliseconds
        pause = min(0.1, 2 * pause)
    return call()


# -- the approval form -----------------------------------------------------------------------------


class Decision(RunInput):
    """What a person answers when a release pauses before a gated target."""

    approve: bool = Field(description="Publish this release to the next target?")
    # Cut, not refused: the form has already been answered when the run reads it (the CLI refuses instead).
    reason: Annotated[str, AfterValidator(cap_reason)] = Field(
        default="", description="Why: recorded in the release report and alert (at most 4,096 characters)"
    )


# -- incidents as Prefect Variables ----------------------------------------------------------------


class PrefectVariableStore:
    """Each open incident is a Prefect Variable ``wheelflow-incident-<hash>`` holding its JSON."""

    def __init__(self) -> None:
        self._loaded: set[str] = set()

    def load(self) -> dict[str, Incident]:
        incidents: dict[str, Incident] = {}
        with get_client(sync_client=True) as client:
            offset = 0
            while True:
                page = client.request(
                    "POST",
                    "/variables/filter",
                    json={
                        "variables": {"name": {"like_": VARIABLE_PREFIX}},
                        "offset": offset,
                        "limit": 200,
                    },
                ).json()
                for variable in page:
                    if variable["name"].startswith(VARIABLE_PREFIX) and isinstance(variable["value"], dict):
                        incident = Incident.from_json(variable["value"])
                        incidents[incident.key] = incident
                if len(page) < 200:
                    break
                offset += 200
        self._loaded = set(incidents)
        return incidents

    def save(self, incidents: dict[str, Incident]) -> None:
        from prefect.variables import Variable

        for key, incident in incidents.items():
            Variable.set(variable_name(key), incident.json(), tags=["wheelflow-incident"], overwrite=True)
        for key in self._loaded - set(incidents):
            Variable.unset(variable_name(key))
        self._loaded = set(incidents)


# -- run history -----------------------------------------------------------------------------------


def _retry_logs(client: Any, task_run_ids: list[UUID]) -> dict[UUID, list[str]]:
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
    from prefect.client.schemas.sorting import LogSort

    if not task_run_ids:
        return {}
    found: dict[UUID, list[str]] = {}
    for log in client.read_logs(
        log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=task_run_ids)), sort=LogSort.TIMESTAMP_ASC
    ):
        found.setdefault(log.task_run_id, []).append(log.message)
    return found


def crash_before_start(flow_run_id: UUID | str, message: str) -> None:
    """Mark a flow run Crashed with ``message``, and log it, from the process that runs it, before its
    flow is loaded (a pull step). Written synchronously: the process exits right after, before
    Prefect's log queue would ship anything, and the worker's own "process exited" crash then meets a
    final state and leaves the message alone."""
    from prefect.states import Crashed

    run_id = UUID(str(flow_run_id))
    log_to_flow_run(run_id, message, level=40)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Crashed(message=message), force=True)


def log_to_flow_run(flow_run_id: UUID | str, message: str, *, level: int = 20) -> None:
    """One log line in the flow run's log, written at once: a pull step runs before Prefect's run
    logger exists, and its process may exit before a queued line would be shipped."""
    from datetime import datetime, timezone

    from prefect.client.schemas.actions import LogCreate

    with get_client(sync_client=True) as client:
        client.create_logs(
            [
                LogCreate(
                    name="wheelflow.pull",
                    level=level,
                    message=message,
                    timestamp=datetime.now(timezone.utc),
                    flow_run_id=UUID(str(flow_run_id)),
                )
            ]
        )


def error_logs(client: Any, flow_run_id: UUID | str) -> list[str]:
    """The flow run's ERROR log lines, oldest first, each its first line: for a run that crashed before
    its first task (a pull step that could not clone, a missing block), they say why, while the state
    message the worker writes says only that the process exited."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel
    from prefect.client.schemas.sorting import LogSort

    logs = client.read_logs(
        log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[UUID(str(flow_run_id))]), level=LogFilterLevel(ge_=40)
        ),
        sort=LogSort.TIMESTAMP_ASC,
    )
    return [log.message.strip().splitlines()[0] for log in logs if log.message and log.message.strip()]


def flow_run_tree(client: Any, flow_run_id: UUID) -> list[Any]:
    """The flow run and its subflow runs, depth first."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    runs = [client.read_flow_run(flow_run_id)]
    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
    )
    for child in children:
        runs += flow_run_tree(client, child.id)
    return runs


def task_histories(client: Any, flow_run_id: UUID | str, *, settle: float = 0.0) -> list[TaskHistory]:
    """Every task run of the flow run and its subflows, oldest first.

    With ``settle`` > 0, re-read (up to that many seconds) until no task run is left in a
    non-final state: the server records states from events a moment after they happen.
    """
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + settle
    while True:
        runs = flow_run_tree(client, UUID(str(flow_run_id)))
        names = {run.id: run.name for run in runs}
        task_runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=list(names))),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )
        unsettled = [t for t in task_runs if t.state is None or not t.state.is_final()]
        if not unsettled or time.monotonic() >= deadline:
            break
        time.sleep(0.2)  # polling the API for a recorded state, bounded by ``settle``
    states_of = {t.id: sorted(client.read_task_run_states(t.id), key=lambda s: s.timestamp) for t in task_runs}
    retried = [t.id for t in task_runs if any(s.name == "AwaitingRetry" for s in states_of[t.id])]
    logs = _retry_logs(client, retried)
    histories = []
    for task_run in task_runs:
        states = states_of[task_run.id]
        errors = iter(retry_errors(logs.get(task_run.id, [])))
        entries = [entry_from_state(s, next(errors, None) if s.name == "AwaitingRetry" else None) for s in states]
        duration = task_run.total_run_time.total_seconds() if task_run.total_run_time else None
        histories.append(
            TaskHistory(
                name=task_run.name,
                flow_run=names.get(task_run.flow_run_id, str(task_run.flow_run_id)),
                state=task_run.state.name if task_run.state else "Unknown",
                duration_s=duration,
                attempts=max(1, sum(1 for s in states if s.type.value == "RUNNING")),
                history=entries,
            )
        )
    return histories


def run_histories(flow_run_id: UUID | str, *, settle: float = 0.0) -> list[TaskHistory]:
    """``task_histories`` with a client of its own."""
    with get_client(sync_client=True) as client:
        return task_histories(client, flow_run_id, settle=settle)


def read_flow_run(run_id: UUID) -> Any:
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_flow_run(run_id)
        except ObjectNotFound:
            raise SpecError("RUN_ID", f"no flow run {run_id} on this Prefect server", "check PREFECT_API_URL") from None


# -- starting and following deployment runs --------------------------------------------------------


def ui_base_url() -> str | None:
    """The Prefect UI's address as this process reaches it: PREFECT_UI_URL, else derived from
    PREFECT_API_URL."""
    from prefect.settings import PREFECT_UI_URL

    return PREFECT_UI_URL.value() or None


def ui_url(flow_run_id: str) -> str | None:
    base = ui_base_url()
    return f"{base}/runs/flow-run/{flow_run_id}" if base else None


def find_deployment(client: Any, name: str) -> Any:
    """``FLOW/DEPLOYMENT``, or a deployment name alone when exactly one flow has it; an unknown name is
    bad input (exit 2) with a did-you-mean."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.exceptions import ObjectNotFound

    if "/" in name:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise deployment_not_found(name, deployment_names(client)) from None
    found = client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])))
    if len(found) == 1:
        return found[0]
    if not found:
        raise deployment_not_found(name, deployment_names(client))
    raise SpecError("DEPLOYMENT", f"{len(found)} deployments are named {name!r}", f"name one as FLOW/{name}")


def deployment_names(client: Any) -> list[str]:
    """Every deployment on the server as ``FLOW/DEPLOYMENT``."""
    flows = {f.id: f.name for f in client.read_flows()}
    return [f"{flows.get(d.flow_id, '?')}/{d.name}" for d in client.read_deployments()]


def schedules_switched_on() -> dict[str, bool]:
    """Each deployment on the server that has schedules (by deployment name): whether any of them is
    switched on. Off: registered inactive until configured, or turned off in the UI."""
    with get_client(sync_client=True) as client:
        return {
            deployment.name: any(schedule.active for schedule in schedules)
            for deployment in client.read_deployments()
            if (schedules := client.read_deployment_schedules(deployment.id))
        }


def start_run(client: Any, deployment: Any, parameters: dict[str, Any], deployment_name: str) -> Any:
    """A flow run of ``deployment`` (as :func:`find_deployment` read it); the server refuses bad parameters."""
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
    except PrefectHTTPStatusError as exc:
        detail = exc.response.json().get("detail", "") if exc.response.content else ""
        raise SpecError(
            "--param",
            f"deployment {deployment_name!r} refused the parameters: {' '.join(str(detail).split())}",
            "pass the deployment's parameters by name (see its form in the Prefect UI)",
        ) from None
    return run


def cancel_run(client: Any, flow_run_id: UUID, reason: str) -> None:
    """Ask the run to stop with ``reason`` (what `status` and the alert then give). Forced, as before;
    the server still ends a run that has no process yet (Scheduled) Cancelled at once."""
    from prefect.states import Cancelling

    client.set_flow_run_state(flow_run_id, Cancelling(message=reason), force=True)


def run_cancel_reason(client: Any, flow_run_id: Any) -> str:
    """Why the run was cancelled, read from its states (see :func:`wheelflow.ops.orchestration.cancel_reason`)."""
    from wheelflow.ops.orchestration import cancel_reason

    return cancel_reason([(s.type.value, s.message) for s in client.read_flow_run_states(flow_run_id)])


def read_cancel_reason(flow_run_id: Any) -> str:
    """:func:`run_cancel_reason` for a hook: never raises, as the alert must go out whatever the API does."""
    from wheelflow.ops.orchestration import NO_CANCEL_REASON

    try:
        with get_client(sync_client=True) as client:
            return run_cancel_reason(client, flow_run_id)
    except Exception:
        return NO_CANCEL_REASON


def final_message(client: Any, flow_run_id: UUID, state: Any) -> str | None:
    """A run's final message as people should read it: a cancelled run's is the reason its canceller
    gave, else the state's own message."""
    if state is None or not state.is_cancelled():
        return state.message if state is not None else None
    return run_cancel_reason(client, flow_run_id)


def strict_parameters(client: Any, deployment: Any) -> None:
    """Make the server refuse unknown parameter names for this deployment (HTTP 409 on creation)."""
    from prefect.client.schemas.actions import DeploymentUpdate

    schema = deployment.parameter_openapi_schema or {}
    if schema.get("additionalProperties") is False:
        return
    client.update_deployment(
        deployment.id, DeploymentUpdate(parameter_openapi_schema=strict_schema(schema), enforce_parameter_schema=True)
    )


def release_verdict(client: Any, flow_run_id: UUID) -> dict[str, Any]:
    """What a release run did, from its artifacts: each file on each target with its proof, and the
    failed checks. Empty lists when the run wrote no report (it crashed before)."""
    import json as _json

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    files: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for artifact in artifacts:
        if artifact.type != "table" or not artifact.key or not artifact.key.startswith("release-"):
            continue
        rows = _json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        if artifact.key.endswith("-files"):
            files = rows
        elif "check" in (rows[0] if rows else {}):
            failed = [r for r in rows if "failed" in r.get("result", "")]
    return {"files": files, "failed_checks": [{"check": r["check"], "detail": r["detail"]} for r in failed]}


def flow_run_table_rows(client: Any, flow_run_id: Any, key: str) -> list[dict[str, Any]]:
    """The rows of the flow run's table artifact ``key`` (empty when it has none)."""
    import json as _json

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[key])
        )
    )
    for artifact in artifacts:
        return _json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    return []


def follow_run(
    client: Any,
    flow_run_id: UUID,
    *,
    timeout: float | None,
    on_state: Callable[[str, str | None], None],
    poll: float = 0.25,
    later: float = 2.0,
) -> tuple[Any, bool]:
    """Report each new state until the run is final (paused runs are waited for); (state, timed_out).

    The API is read every ``poll`` seconds for the first minute, then every ``later`` seconds: a short
    run is seen ending within a fraction of a second, an hour-long one costs the server little."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    last = None
    while True:
        run = client.read_flow_run(flow_run_id)
        state = run.state
        if state is not None and (state.name, state.message) != last:
            last = (state.name, state.message)
            on_state(state.name, state.message)
        if state is not None and state.is_final():
            return state, False
        if deadline is not None and time.monotonic() >= deadline:
            return state, True
        # the API has no push channel for a CLI; poll it
        time.sleep(poll if time.monotonic() - started < 60 else later)


def resume_with_decision(run_id: UUID, approve: bool, reason: str) -> None:
    """Answer a release paused for approval, as the Prefect UI's form does."""
    from prefect.exceptions import FlowPauseTimeout, NotPausedError
    from prefect.flow_runs import resume_flow_run

    state = read_flow_run(run_id).state
    try:
        resume_flow_run(run_id, run_input={"approve": approve, "reason": reason})
    except NotPausedError:
        raise SpecError(
            "RUN_ID",
            f"flow run {run_id} is not waiting for approval (it is {state.name if state else 'unknown'})",
            "approve a run while the Prefect UI shows it Paused",
        ) from None
    except FlowPauseTimeout:
        raise SpecError(
            "RUN_ID", f"flow run {run_id} waited too long and can no longer be approved", "re-run the release"
        ) from None


# -- serving deployments from this process ---------------------------------------------------------


def serve_deployments(deployments: list[Any]) -> None:
    """Prefect's ``serve``, plus: each deployment refuses unknown parameter names on the server, so a
    misspelt parameter from any client (trigger, curl, the UI) never starts a run."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    runner = Runner()
    ids = []
    for deployment in deployments:
        deployment.work_pool_name = None  # served here: work pools are for workers
        ids.append(runner.add_deployment(deployment))
    with get_client(sync_client=True) as client:
        for deployment_id in ids:
            strict_parameters(client, client.read_deployment(deployment_id))
    try:
        asyncio.run(_run_served(runner))
    except (KeyboardInterrupt, TerminationSignal):
        pass


async def _run_served(runner: Any) -> None:
    """``runner.start()``, and each flow run created for the runner's deployments (``trigger``, the
    UI, a schedule) submitted as soon as the server announces it, not at the runner's next poll
    (``PREFECT_RUNNER_POLL_FREQUENCY``: 10 s by default, a median 5 s wait per triggered release).
    The submission is the runner's own (Pending, then its process; the run's states and retries as
    before); the poll goes on as the fallback when the event stream is away."""
    import asyncio

    wake = asyncio.create_task(_submit_when_scheduled(runner))
    try:
        await runner.start()
    finally:
        wake.cancel()


async def _submit_when_scheduled(runner: Any, *, reconnect_after: float = 5.0) -> None:
    """Ask ``runner`` for its scheduled runs on each ``prefect.flow-run.Scheduled`` event."""
    import asyncio
    import logging

    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
    from prefect.settings import PREFECT_API_URL
    from prefect.types._datetime import now

    if not PREFECT_API_URL.value():  # no server of its own to listen to: a second temporary one would start
        return
    while True:
        try:
            # only events from now on: the server would otherwise replay the last ones first
            wanted = EventFilter(
                occurred=EventOccurredFilter(since=now("UTC")),
                event=EventNameFilter(name=["prefect.flow-run.Scheduled"]),
            )
            async with get_events_subscriber(filter=wanted) as events:
                async for _ in events:
                    if runner.started and not runner.stopping:
                        # the runner's own query and submission: runs it already submits are skipped there
                        await runner._get_and_submit_flow_runs()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream is a shortcut; the runner's poll still starts every run
            logging.getLogger("wheelflow").debug("flow run events unavailable (%s); polling only", exc)
        await asyncio.sleep(reconnect_after)  # the server restarting: try the stream again later


# -- one release at a time --------------------------------------------------------------------------


#: Seconds a held slot outlives a holder that died without letting go (a killed runner): the holder
#: renews its lease while it lives, so this bounds only how long a dead one blocks the next run.
LEASE = 60.0
#: strict: an unknown limit raises instead of not limiting. A lease that cannot be renewed (the server
#: restarted and forgot it, or was away longer than the lease) is logged, not fatal: with Prefect's
#: default, the lease thread cancelled the running task, and a release whose build outlived a server
#: restart ended with a bare CancelledError. Losing the slot then is the same as a run that started
#: during the outage: uploads still read what is served first, and other bytes under our names stop them.
HOLD: dict[str, Any] = {"strict": True, "lease_duration": LEASE, "raise_on_lease_renewal_failure": False}


@contextlib.contextmanager
def held_alone(key: str, *, timeout: float = 1800.0, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the Prefect global concurrency limit ``key`` (one slot; created when missing, taken with
    strict=True: an unknown limit would otherwise not limit at all) for the block: across workers and
    machines, one holder at a time. A second caller waits up to ``timeout`` seconds, saying which
    flow run holds it (the holder writes a record of itself to a Variable named after the key, and
    clears it when it lets go).

    A holder that never let go is dead: killed, its lease lapsed without renewal (no heartbeat). The
    next holder says so, and marks that flow run Crashed when the server still shows it running,
    so no automation is needed for that. On the same host a holder whose process is gone is named
    dead at once, while its lease (:data:`LEASE`) runs out."""
    import logging
    import re

    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.runtime import flow_run

    from wheelflow.ops.lockholder import RELEASED, dead_reason, parse_holder, this_holder

    log = log or logging.getLogger("wheelflow").warning
    holder_variable = re.sub(r"[^a-z0-9_-]+", "-", f"{key}-holder".lower())

    with get_client(sync_client=True) as client:
        try:  # read first: creating one that exists makes the server log an IntegrityError traceback
            held = slot_taken(client.read_global_concurrency_limit_by_name(key))
        except ObjectNotFound:
            held = False
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=key, limit=1))
            except ObjectAlreadyExists:  # another run created it in between
                pass
    with contextlib.ExitStack() as stack:
        # Whether to wait is read from the limit, not probed with a short acquisition: a probe that
        # times out makes Prefect's slot service log "failed to process item" at ERROR on every wait.
        if held:
            holder = parse_holder(read_variable(holder_variable))
            dead = dead_reason(holder) if holder else None
            if holder and dead:
                log(
                    f"{holder.describe()}, which holds {key}, is dead: {dead}; taking over when its lease "
                    f"lapses (within {LEASE:g} s)"
                )
            else:
                log(
                    f"waiting up to {timeout:g} s for {holder.describe() if holder else 'flow run (unknown)'}, "
                    f"which holds {key}"
                )
        try:
            if held or not stack.enter_context(_free_slot(key)):
                stack.enter_context(concurrency(key, occupy=1, timeout_seconds=timeout, **HOLD))
        except TimeoutError:
            still = parse_holder(read_variable(holder_variable))
            raise ReleaseBusy(
                f"{key} is still held by {still.describe() if still else 'flow run (unknown)'} "
                f"after {timeout:g} s; fix: wait for that run to end (or cancel it), then re-run"
            ) from None
        me = str(flow_run.get_id())
        left_behind = parse_holder(read_variable(holder_variable))
        if left_behind is not None and left_behind.flow_run != me:
            _crash_dead_holder(left_behind, key, me, log)
        write_variable(holder_variable, this_holder(me).json())
        try:
            yield
        finally:
            try:
                write_variable(holder_variable, RELEASED)
            except Exception as exc:  # the server is away: the next holder takes this for a dead one
                log(f"could not record that {key} was let go ({type(exc).__name__})")


@contextlib.contextmanager
def _free_slot(key: str) -> Iterator[bool]:
    """Take ``key``'s free slot with one request of our own, holding it (lease renewed, released on
    exit) for the block; yields False, holding nothing, when another holder has it (Prefect's
    ``concurrency`` then waits for it). Prefect's slot service sends the same request, but a 503 from
    a SQLite server that is writing the run's task states ("database is locked", milliseconds) made
    its client sleep 2 s before the retry, in most releases; here it is retried at once."""
    import httpx
    from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
    from prefect.concurrency._events import emit_concurrency_acquisition_events, emit_concurrency_release_events
    from prefect.concurrency._leases import maintain_concurrency_lease

    with get_client(sync_client=True) as client:
        try:
            response = without_waiting(
                lambda: client.increment_concurrency_slots_with_lease(
                    names=[key], slots=1, mode="concurrency", lease_duration=LEASE
                )
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:  # 423 Locked: the slot is taken
                raise
            response = None
    taken = ConcurrencyLimitWithLeaseResponse.model_validate(response.json()) if response is not None else None
    if taken is None or not taken.limits:  # taken, or deleted since we read it (Prefect's strict path says so)
        yield False
        return
    events = emit_concurrency_acquisition_events(taken.limits, 1)
    try:
        with maintain_concurrency_lease(
            taken.lease_id, LEASE, raise_on_lease_renewal_failure=HOLD["raise_on_lease_renewal_failure"]
        ):
            yield True
    finally:
        with get_client(sync_client=True) as client:
            without_waiting(lambda: client.release_concurrency_slots_with_lease(taken.lease_id))
        emit_concurrency_release_events(taken.limits, 1, events)


def _crash_dead_holder(holder: Any, key: str, me: str, log: Callable[[str], None]) -> None:
    """The previous holder of ``key`` never let go (its record is still there, its lease lapsed):
    mark its flow run Crashed when the server still shows it unfinished, and say so."""
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    message = (
        f"wheelflow: this run held {key} and stopped renewing its lease (killed, or its runner died); "
        f"flow run {me} took over and marked it Crashed"
    )
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(holder.flow_run))
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(run.id, state=Crashed(message=message), force=True)
                log(f"{holder.describe()}, which held {key}, is dead (its lease lapsed): marked it Crashed")
                return
    except (ValueError, ObjectNotFound):
        pass
    log(f"{holder.describe()} held {key} and never let go; its lease lapsed: taking over")


def slot_taken(limit: Any) -> bool:
    """A global concurrency limit (Prefect's response) has no free slot: the next holder would wait."""
    return bool(limit.active) and limit.active_slots >= limit.limit


# -- server-side alerting: Prefect Automations ---------------------------------------------------

ALERT_BLOCK_PREFIX = "wheelflow-alert-"


def _save_destination(destination: Any, name: str) -> UUID:
    """A Custom Webhook notification block; the URL is kept as the block's secret value, so the UI
    and the API show it obfuscated."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name=name, url="{{url}}", json_data=dict(destination.json_data), secrets={"url": destination.url}
    )
    return block.save(name, overwrite=True)


def _trigger_of(spec: Any) -> Any:
    from datetime import timedelta

    from prefect.events.schemas.automations import EventTrigger, Posture

    return EventTrigger(
        posture=Posture(spec.posture),
        after=set(spec.opened_by),
        expect=set(spec.expect),
        match=dict(spec.match),
        match_related=dict(spec.match_related),
        for_each=set(spec.for_each),
        threshold=1,
        within=timedelta(seconds=spec.within),
    )


def _actions_of(spec: Any, blocks: list[UUID]) -> list[Any]:
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState, SendNotification

    if spec.action == "crash":
        return [
            ChangeFlowRunState(
                state=StateType.CRASHED,
                name="Crashed",
                message=f"no heartbeat for {spec.within:.0f} s: the process running it died "
                f"(Prefect automation {spec.name})",
            )
        ]
    return [SendNotification(block_document_id=block, subject=spec.subject, body=spec.body) for block in blocks]


def _canonical(value: Any) -> Any:
    """A JSON value with its lists in one order: the server keeps a trigger's sets (``after``,
    ``expect``, ``for_each``) as lists in no particular order."""
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return sorted((_canonical(item) for item in value), key=lambda item: json.dumps(item, sort_keys=True))
    return value


def automation_definition(automation: Any) -> Any:
    """What an automation does (name, trigger, actions...), comparable between the one the server
    stores and the one wheelflow wants: the ids the server assigns are left out."""
    from prefect.automations import AutomationCore

    data = automation.model_dump(mode="json", include=set(AutomationCore.model_fields))
    data.get("trigger", {}).pop("id", None)
    return _canonical(data)


def _stored_automations(client: Any) -> list[dict[str, Any]]:
    """The server's automations as it answers them: the client's models drop each trigger's id."""
    response = client.request("POST", "/automations/filter", json={"sort": None, "limit": None, "offset": 0})
    response.raise_for_status()
    return response.json()


def sync_automation(client: Any, core: Any, stored: list[dict[str, Any]]) -> str:
    """Make the server's automation named ``core.name`` (among ``stored``, as the server answers them)
    do what ``core`` describes, and say what that took: ``created``, ``unchanged`` or ``updated``.

    Why it leaves an unchanged one alone: the server keeps a proactive trigger's pending windows (a run
    whose heartbeats stopped, a failure awaiting its alert) per trigger id, and an update that brings a
    new trigger id drops them, so a re-run of ``setup`` right after a crash silenced that crash's alert.
    For the same reason a changed automation is sent with its stored trigger's id: its pending windows
    still fire."""
    from prefect.events.schemas.automations import Automation

    same_name = [automation for automation in stored if automation["name"] == core.name]
    if not same_name:
        client.create_automation(core)
        return "created"
    current, *duplicates = same_name
    for duplicate in duplicates:
        client.delete_automation(UUID(duplicate["id"]))
    if automation_definition(Automation.model_validate(current)) == automation_definition(core):
        return "unchanged"
    body = core.model_dump(mode="json", exclude_unset=True)  # as the client's update_automation sends it
    body["trigger"]["id"] = current["trigger"]["id"]
    response = client.request("PUT", "/automations/{id}", path_params={"id": current["id"]}, json=body)
    response.raise_for_status()
    return "updated"


def _has_event(client: Any, name: str, flow_run_id: Any) -> bool:
    response = client.request(
        "POST",
        "/events/filter",
        json={
            "filter": {"event": {"name": [name]}, "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}},
            "limit": 1,
        },
    )
    response.raise_for_status()
    return bool(response.json()["events"])


def _runs_awaiting(client: Any, spec: Any) -> list[tuple[Any, str]]:
    """The runs (and their flow's name) whose window ``spec``'s automation had open before its update:
    see ``AutomationSpec.rearm``."""
    from datetime import datetime, timedelta, timezone

    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )

    from wheelflow.ops.automations import ALERT_AWAITED_AFTER, ALERT_SENT_EVENT, FLOWS, HEARTBEAT_EVENT

    if spec.rearm == "heartbeating":
        flows, states, clue, wanted = FLOWS, ("Running",), HEARTBEAT_EVENT, True
    else:
        flows, states, clue, wanted = ("release",), ALERT_AWAITED_AFTER, ALERT_SENT_EVENT, False
    names = {
        flow.id: flow.name for flow in client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=list(flows))))
    }
    if not names:
        return []
    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=list(flows))),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=list(states)))),
    )
    since = datetime.now(timezone.utc) - timedelta(seconds=spec.within)
    awaiting = []
    for run in runs:
        if spec.rearm == "awaiting-alert" and (run.state is None or run.state.timestamp < since):
            continue  # its window had closed already: the old automation alerted, or the hook did
        if _has_event(client, clue, run.id) == wanted:
            awaiting.append((run, names.get(run.flow_id, "")))
    return awaiting


def rearm_windows(client: Any, spec: Any) -> int:
    """Open the updated automation's window again for each run the old one was waiting on (the server
    gives an updated automation new trigger ids, which drops the open windows): a worker that died
    before ``setup`` was re-run still has its run marked Crashed, a crash still alerts once. Returns
    how many runs."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from wheelflow.ops.automations import rearm_event

    awaiting = _runs_awaiting(client, spec)
    for run, flow_name in awaiting:
        emit_event(
            event=rearm_event(spec.name),
            resource={"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.name": run.name},
            related=[
                {
                    "prefect.resource.id": f"prefect.flow.{run.flow_id}",
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": flow_name,
                },
                *(
                    [
                        {
                            "prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
                            "prefect.resource.role": "deployment",
                        }
                    ]
                    if run.deployment_id
                    else []
                ),
            ],
        )
    if awaiting:
        EventsWorker.drain_all(timeout=10)
    return len(awaiting)


def install_automations(specs: list[Any], destinations: list[Any]) -> dict[str, str]:
    """Make the server's ``wheelflow-*`` automations exactly ``specs`` (see wheelflow/ops/automations.py),
    notifying through one block per destination (saved by name, so its id stays): each is created,
    left unchanged or updated (see ``sync_automation``); wheelflow automations and alert blocks no
    longer described are deleted. Returns each automation's name and what was done to it."""
    from prefect.automations import AutomationCore

    from wheelflow.ops.automations import PREFIX

    blocks = [_save_destination(d, f"{ALERT_BLOCK_PREFIX}{i}-{d.kind}") for i, d in enumerate(destinations)]
    done: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        wanted = {spec.name for spec in specs}
        stored = _stored_automations(client)
        for automation in stored:
            if automation["name"].startswith(PREFIX) and automation["name"] not in wanted:
                client.delete_automation(UUID(automation["id"]))
        for spec in specs:
            core = AutomationCore(
                name=spec.name,
                description=spec.description,
                enabled=True,
                trigger=_trigger_of(spec),
                actions=_actions_of(spec, blocks),
            )
            done[spec.name] = sync_automation(client, core, stored)
            if done[spec.name] == "updated" and spec.rearm:
                rearmed = rearm_windows(client, spec)
                if rearmed:
                    done[spec.name] += f", re-armed for {rearmed} run(s)"
        kept = set(blocks)
        for document in client.read_block_documents(include_secrets=False):
            if document.name and document.name.startswith(ALERT_BLOCK_PREFIX) and document.id not in kept:
                client.delete_block_document(document.id)  # an old destination's secret URL goes with it
    return done


def emit_alert_sent(flow_run: Any, flow_name: str, delivered: int) -> None:
    """Tell the server this run's own hook delivered its alert, so the release-problem automation
    stays quiet; sent before returning, as the process may exit right after the hook."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from wheelflow.ops.automations import ALERT_SENT_EVENT

    emit_event(
        event=ALERT_SENT_EVENT,
        resource={"prefect.resource.id": f"prefect.flow-run.{flow_run.id}", "prefect.resource.name": flow_run.name},
        related=[
            {
                "prefect.resource.id": f"prefect.flow.{flow_run.flow_id}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow_name,
            }
        ],
        payload={"channels": delivered},
    )
    EventsWorker.drain_all(timeout=10)


# -- the team path: wheelflow setup and wheelflow doctor -------------------------------------------


def server_problem() -> str | None:
    """None when the Prefect server PREFECT_API_URL names answers, else why not (one line)."""
    with get_client(sync_client=True) as client:
        try:
            failure = client.api_healthcheck()
        except Exception as exc:  # any failure to reach it is the answer
            return f"the Prefect server does not answer: {type(exc).__name__}"
    return None if failure is None else f"the Prefect server does not answer: {type(failure).__name__}"


def pool_exists(name: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            return False
    return True


def ensure_process_pool(name: str) -> bool:
    """Create the process work pool ``name`` unless it exists; True when created."""
    from prefect.client.schemas.actions import WorkPoolCreate

    if pool_exists(name):
        return False
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    return True


def secret_block_exists(name: str) -> bool:
    from prefect.blocks.system import Secret

    try:
        Secret.load(name)
    except ValueError:
        return False
    return True


def ensure_secret(name: str, value: str | None) -> str:
    """The Secret block ``name``: set to ``value`` when given, else created empty when missing (a public
    repository needs no token), else left as it is. Returns what was done."""
    from prefect.blocks.system import Secret

    if value is not None:
        Secret(value=value).save(name, overwrite=True)
        return "set"
    if secret_block_exists(name):
        return "kept"
    Secret(value="").save(name, overwrite=True)
    return "created empty"


class PullSteps:
    """A deployment's pull steps where Prefect's RunnerDeployment expects its code storage: what a
    worker runs before the flow. ``wheelflow setup`` registers the deployments itself with these,
    as ``prefect deploy`` would from prefect.yaml, without needing a checkout or its current folder."""

    def __init__(self, steps: list[dict[str, Any]]) -> None:
        self.steps = steps

    def to_pull_step(self) -> list[dict[str, Any]]:
        return self.steps

    def set_base_path(self, path: Any) -> None:
        pass  # nothing is pulled where the deployment is registered

    @property
    def pull_interval(self) -> int | None:
        return None

    @property
    def destination(self) -> Any:
        from pathlib import Path

        return Path(".")

    async def pull_code(self) -> None:
        pass

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PullSteps) and other.steps == self.steps


#: The state name a rolled-back upload's task run ends in: not Completed (drawn green in the run
#: graph as if the file were published) but Cancelled, named for what happened.
ROLLED_BACK = "Rolled back"


def mark_rolled_back(flow_run_id: Any, task_run_names: list[str], settle: float = 10.0) -> list[str]:
    """Move these Completed task runs of the flow run (uploads whose files the rollback removed) to a
    Cancelled state named "Rolled back", so that the run graph stops drawing them green; the names
    it marked. Task states reach the server through events: a run not recorded Completed yet is
    waited for up to ``settle`` seconds. Never raises: the release's own rollback must go on."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName
    from prefect.states import Cancelled

    wanted = set(task_run_names)
    if not wanted:
        return []
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + settle
            while True:
                runs = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                    task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=sorted(wanted))),
                )
                completed = [r for r in runs if r.state is not None and r.state.is_completed()]
                if {r.name for r in completed} >= wanted or time.monotonic() > deadline:
                    break
                time.sleep(0.5)  # the server records task states from events: eventually consistent
            for run in completed:
                client.set_task_run_state(
                    run.id,
                    Cancelled(name=ROLLED_BACK, message="uploaded, then removed by the release's rollback"),
                    force=True,
                )
            return sorted(r.name for r in completed)
    except Exception:
        return []


def name_run_after_verdict(flow_run_id: Any, verdict: str) -> str | None:
    """Rename the flow run after its verdict (what the UI's run header and run lists show without
    hovering; see wheelflow.ops.verdict); its new name, or None when the API could not be written.
    Never raises: the alert that follows must go out."""
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
            name = verdict_run_name(run.name, verdict)
            if name != run.name:
                client.update_flow_run(flow_run_id, name=name)
            return name
    except Exception:
        return None


def registered_deployments(full_names: list[str]) -> dict[str, tuple[dict[str, Any], bool | None]]:
    """The named deployments ("release/nightly") the server already has, by deployment name: their
    parameters as set there (the UI's edits included) and whether any of their schedules is on (None:
    they have none). What a re-registration must not undo."""
    from prefect.exceptions import ObjectNotFound

    found: dict[str, tuple[dict[str, Any], bool | None]] = {}
    with get_client(sync_client=True) as client:
        for full_name in full_names:
            try:
                deployment = client.read_deployment_by_name(full_name)
            except ObjectNotFound:
                continue
            schedules = client.read_deployment_schedules(deployment.id)
            on = any(s.active for s in schedules) if schedules else None
            found[deployment.name] = (dict(deployment.parameters or {}), on)
    return found


def parameter_names(deployment: Any) -> set[str]:
    """The parameter names a RunnerDeployment's flow takes."""
    return set(deployment._parameter_openapi_schema.properties)


def register_deployments(deployments: list[Any], pull_steps: list[dict[str, Any]]) -> list[str]:
    """Register (create or update) each RunnerDeployment on its work pool with ``pull_steps``; their
    full names. Schedules are replaced by the given ones (their active flags are set afterwards by
    ``finish_registration``)."""
    names = []
    for deployment in deployments:
        deployment.storage = PullSteps(pull_steps)
        deployment.apply()
        names.append(deployment.full_name)
    return names


def finish_registration(names: list[str], schedules_active: dict[str, bool]) -> None:
    """After registering (``setup``, ``prefect deploy``): each deployment refuses unknown parameter names (as served ones do),
    and the named deployments' schedules are switched on or off."""
    with get_client(sync_client=True) as client:
        for name in names:
            deployment = client.read_deployment_by_name(name)
            strict_parameters(client, deployment)
            active = schedules_active.get(name.split("/", 1)[1])
            if active is None:
                continue
            for schedule in client.read_deployment_schedules(deployment.id):
                if schedule.active != active:
                    client.update_deployment_schedule(deployment.id, schedule.id, active=active)
