"""The automations wheelflow registers, as plain descriptions: one alert per problem, and a silent
schedule told apart from a failing one. Their behaviour on a real server: tests/e2e/test_automations.py."""

from __future__ import annotations

from wheelflow.ops.automations import ALERT_SENT_EVENT, Windows, wheelflow_automations


def _spec(name: str):
    (spec,) = [s for s in wheelflow_automations(Windows(), env={}) if s.name == name]
    return spec


def test_a_cancelled_release_s_alert_is_awaited_from_cancelling_where_its_hook_runs() -> None:
    """The cancellation hook emits wheelflow.alert.sent at Cancelling, before the Cancelled event: a
    window opened at Cancelled would never see it and page a second time."""
    spec = _spec("wheelflow-release-problem")
    assert spec.expect == (ALERT_SENT_EVENT,)
    assert "prefect.flow-run.Cancelling" in spec.after
    assert "prefect.flow-run.Cancelled" not in spec.after
    assert {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"} <= set(spec.after)


def test_the_silent_monitor_counts_any_finished_run_as_alive() -> None:
    spec = _spec("wheelflow-silent-sync-monitor")
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Crashed"} <= set(spec.expect)
    assert spec.subject == "deployment sync-monitor finished no run in 1800 s (two intervals)"


def test_the_zombie_detector_stops_watching_a_run_that_ends_or_is_being_cancelled() -> None:
    spec = _spec("wheelflow-zombie-runs")
    for state in ("Completed", "Failed", "Crashed", "TimedOut", "Cancelled", "Cancelling"):
        assert f"prefect.flow-run.{state}" in spec.expect


def test_server_side_alerts_link_the_run_s_page_at_the_address_install_reached_the_ui() -> None:
    """The server's own ui_url filter knows the UI only when PREFECT_UI_URL is set on the server."""
    (problem,) = [
        s
        for s in wheelflow_automations(Windows(), env={}, ui_base="http://ci-prefect:4201/")
        if s.name == "wheelflow-release-problem"
    ]
    assert problem.body.endswith("flow run page: http://ci-prefect:4201/runs/flow-run/{{ flow_run.id }}")
    (fallback,) = [s for s in wheelflow_automations(Windows(), env={}) if s.name == "wheelflow-release-problem"]
    assert "flow_run|ui_url" in fallback.body
