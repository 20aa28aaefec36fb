"""Quiet until configured: a scheduled deployment that would fail on every run is registered with
its schedule (the same cron) inactive, and says what to set."""

from __future__ import annotations

from pathlib import Path

import yaml

from wheelflow.deployments import PROJECTS_VARIABLE, project_deployments, waiting_for_configuration

REPO = Path(__file__).resolve().parents[2]


def test_unconfigured_deployments_are_named_with_what_to_set() -> None:
    waiting = waiting_for_configuration(None, None)
    assert set(waiting) == {"sync-monitor", "upstream-check", "nightly"}
    assert "`project`" in waiting["nightly"]
    assert PROJECTS_VARIABLE in waiting["sync-monitor"] and "--monitor-projects" in waiting["sync-monitor"]
    assert "packages" in waiting["upstream-check"]
    assert "sync-monitor" not in waiting_for_configuration([{"name": "p"}], None)
    assert "sync-monitor" not in waiting_for_configuration(None, [{"name": "p"}])
    assert "nightly" not in waiting_for_configuration(None, None, nightly_project="/srv/projects/ext")


def test_their_schedules_are_registered_inactive_with_the_same_cron() -> None:
    deployments = {d.name: d for d in project_deployments(inactive=waiting_for_configuration(None, None))}
    schedules = {name: [(s.schedule.cron, s.active) for s in d.schedules] for name, d in deployments.items()}
    assert schedules["sync-monitor"] == [("*/15 * * * *", False)]
    assert schedules["upstream-check"] == [("0 6 * * *", False)]
    # nightly's default project is wheelflow's own demo: on a schedule it would release it (issue 33)
    assert schedules["nightly"] == [("0 3 * * *", False)]
    configured = {d.name: d for d in project_deployments(monitored=[{"name": "p"}])}
    assert [s.active for s in configured["sync-monitor"].schedules] == [True]


def test_prefect_yaml_registers_them_inactive_too() -> None:
    from wheelflow.flows.monitor import PROJECTS_VARIABLE as read_by_the_flow

    assert read_by_the_flow == PROJECTS_VARIABLE
    declared = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    assert [s.get("active", True) for s in declared["sync-monitor"]["schedules"]] == [False]
    assert [s.get("active", True) for s in declared["upstream-check"]["schedules"]] == [False]
    assert [s.get("active", True) for s in declared["nightly"]["schedules"]] == [False]


def test_serve_help_makes_no_claim_of_a_demo_default_for_monitor_projects(capsys) -> None:
    from wheelflow.cli import build_parser

    parser = build_parser()
    try:
        parser.parse_args(["serve", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert "hello-cuda" not in text and "registered inactive" in text


def test_a_schedule_registered_inactive_gets_no_silent_schedule_alert(monkeypatch) -> None:
    """An inactive schedule finishes no run by design: a 'finished no run in 2 days' page for the
    nightly nobody configured would be noise."""
    import wheelflow.adapters.prefect_api as prefect_api
    from wheelflow.cli import build_parser
    from wheelflow.cli.automations import plan

    installed: list[str] = []
    monkeypatch.setattr(
        prefect_api, "install_automations", lambda specs, dests: installed.extend(s.name for s in specs) or {}
    )
    monkeypatch.setenv("WHEELFLOW_ALERT_WEBHOOK", "http://127.0.0.1:9/hook")
    args = build_parser().parse_args(["automations", "install"])
    plan(args, monitor_interval=None, inactive=waiting_for_configuration(None, None))()
    assert "wheelflow-release-problem" in installed
    assert not [name for name in installed if name.startswith("wheelflow-silent-")]
    installed.clear()
    plan(args, monitor_interval=None)()
    assert {"wheelflow-silent-sync-monitor", "wheelflow-silent-nightly"} <= set(installed)


def test_a_re_run_of_setup_keeps_what_users_configured_on_the_deployments() -> None:
    """Issue 33: `setup` run again registered the shipped deployments over the configured ones: nightly
    went back to the demo project with its schedule off. Now the server's values win, for parameters
    the flow still takes, and a schedule a person switched is kept (sync-monitor follows its Variable)."""
    from wheelflow.deployments.configured import Registered, changed_by_user, kept_parameters, schedules_off

    shipped = {"project": "examples/hello-cuda", "dev": True}
    nightly = Registered({"project": "/srv/projects/ext", "dev": True, "renamed_away": 1}, schedule_on=True)
    kept = kept_parameters(shipped, {"project", "dev", "version"}, nightly)
    assert kept == {"project": "/srv/projects/ext", "dev": True}
    assert changed_by_user(shipped, kept) == ["project"]
    assert kept_parameters(shipped, {"project", "dev"}, None) == shipped  # not on the server yet

    waiting, kept_off = schedules_off({"nightly": nightly}, None)
    assert "nightly" not in waiting and "nightly" not in kept_off  # configured and switched on: stays on
    assert set(waiting) == {"sync-monitor", "upstream-check"}

    switched_off = Registered({"project": "/srv/projects/ext"}, schedule_on=False)
    waiting, kept_off = schedules_off({"nightly": switched_off, "sync-monitor": Registered({}, False)}, [{"n": 1}])
    assert "kept off" in kept_off["nightly"] and "nightly" not in waiting
    assert "sync-monitor" not in kept_off  # its Variable is set: setup switches it on
    demo = Registered({"project": "examples/hello-cuda"}, schedule_on=True)
    assert "nightly" in schedules_off({"nightly": demo}, None)[0]  # the demo project stays waiting
