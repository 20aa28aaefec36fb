"""``wheelflow``: release a package and prove it is served; verify any index, read-only."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from rich.console import Console
from rich.table import Table

from .distributions import sha256_of
from .errors import SpecError, WheelflowError

err_console = Console(stderr=True)
out_console = Console()


def say(line: str) -> None:
    """One line on stderr, never wrapped: errors must be greppable and copyable."""
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wheelflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    rel = commands.add_parser("release", help="build, check, upload and verify a release (a Prefect flow run)")
    rel.add_argument("path", help="the project to release")
    rel.add_argument("--spec", help="standalone spec TOML (default: [tool.wheelflow] in PATH/pyproject.toml)")
    rel.add_argument("--version", help="the version to release (must agree with the tag and version file)")
    rel.add_argument("--to", action="append", metavar="TARGET", help="target name or index alias (repeatable)")
    rel.add_argument("--builder", choices=["docker", "local"],
                     help="how the wheel matrix is built (default: the spec's, else docker when a daemon answers)")
    rel.add_argument("--dev", action="store_true",
                     help="a development build: next micro version + .devYYYYMMDDHHMM (for nightlies; no tag needed)")
    rel.add_argument("--approval", choices=["manual", "auto", "auto-if-staging-verified"],
                     help="who decides before each target after the first (default: the spec's, else auto)")
    rel.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")

    ver = commands.add_parser("verify", help="check that an index serves a release (read-only)")
    ver.add_argument("requirement", metavar="NAME==VERSION")
    ver.add_argument("--index", required=True, help="local, pypi, testpypi, a target from the spec, or a Simple API URL")
    ver.add_argument("--expect", action="append", default=[], metavar="FILENAME",
                     help="a file that must be served; a path to a local file also checks its sha256 (repeatable)")
    ver.add_argument("--no-install", action="store_true", help="skip the install into a fresh virtualenv")
    ver.add_argument("--smoke", help="command run in the virtualenv after installing")
    ver.add_argument("--timeout", type=float, help="seconds to wait for files to appear (default: per index)")
    ver.add_argument("--spec", help="spec TOML naming targets (default: ./pyproject.toml when it has one)")
    ver.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")

    chk = commands.add_parser("check", help="audit built files without uploading (the release flow's own checks)")
    chk.add_argument("files", nargs="+", metavar="FILE")
    chk.add_argument("--spec", help="spec TOML (a pyproject.toml with [tool.wheelflow] or a standalone file)")
    chk.add_argument("--target", help="also apply this target's rules (size limit, budget, local versions, platform tags)")
    chk.add_argument("--cell", action="append", default=[], metavar="AXIS=VALUE",
                     help="the matrix cell that built the files, e.g. python=3.11 torch=2.5.1 (repeatable)")
    chk.add_argument("--json", action="store_true", help="print the findings as one JSON object on stdout")

    img = commands.add_parser("images", help="build the builder and runtime images offline (debootstrap + docker import)")
    img.add_argument("--mirror", help="Debian archive URL (default: the one this machine's apt uses)")

    mon = commands.add_parser("monitor", help="compare a repository's release tags with what an index serves")
    mon.add_argument("--repo", required=True, help="git URL or local path whose tags are the releases")
    mon.add_argument("--project", required=True, help="distribution name on the index")
    mon.add_argument("--index", action="append", required=True,
                     help="pypi, testpypi, local, or a Simple API URL (repeatable)")
    mon.add_argument("--expect", action="append", default=[], metavar="PATTERN",
                     help="an expected file, e.g. {name}-{version}-py3-none-any.whl (repeatable; default: "
                          "the spec's artifacts with --spec, else at least one file)")
    mon.add_argument("--spec", help="a release spec (project directory or TOML) for the expected files and tag pattern")
    mon.add_argument("--tag-pattern", action="append", default=[], metavar="PATTERN",
                     help="release tag pattern (repeatable; default: v{version} and {version})")
    mon.add_argument("--grace", type=float, default=24.0, metavar="HOURS",
                     help="how long after its tag a version may still be missing (default: 24)")
    mon.add_argument("--as-of", metavar="ISO8601", help="replay: count only tags and uploads at or before this instant")
    mon.add_argument("--json", action="store_true", help="print a JSON list, one record per version and index")

    trg = commands.add_parser("trigger", help="start a deployment's flow run through the Prefect API (for CI)")
    trg.add_argument("deployment", help="DEPLOYMENT or FLOW/DEPLOYMENT, e.g. release")
    trg.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="a flow parameter; JSON values (numbers, lists, true) are read as JSON (repeatable)")
    trg.add_argument("--wait", action="store_true",
                     help="follow the run; exit 0 on Completed, 1 Failed, 3 Cancelled/Crashed, 4 timeout")
    trg.add_argument("--timeout", type=float, metavar="SECONDS", help="with --wait: give up after this long")
    trg.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")

    sts = commands.add_parser("status", help="every task run of a flow run with its full state history")
    sts.add_argument("run_id", metavar="RUN_ID")
    sts.add_argument("--json", action="store_true", help="print a JSON list, one object per task run")

    apr = commands.add_parser("approve", help="answer a release waiting for approval (resumes its flow run)")
    apr.add_argument("run_id", metavar="RUN_ID")
    apr.add_argument("--reject", action="store_true", help="refuse: the release fails and the next target gets nothing")
    apr.add_argument("--reason", default="", help="why; recorded in the report and alert")

    srv = commands.add_parser("serve", help="serve every deployment of prefect.yaml from this process, schedules included")
    srv.add_argument("--prefect-yaml", default="prefect.yaml", help="the project file (default: ./prefect.yaml)")

    args = parser.parse_args(argv)
    try:
        if args.command == "trigger":
            return cmd_trigger(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "approve":
            return cmd_approve(args)
        if args.command == "monitor":
            return cmd_monitor(args)
        if args.command == "images":
            return cmd_images(args)
        if args.command == "release":
            return cmd_release(args)
        if args.command == "check":
            return cmd_check(args)
        return cmd_verify(args)
    except WheelflowError as exc:
        say(f"wheelflow: error: {exc}")
        return 2 if isinstance(exc, SpecError) else 1


def parse_instant(text: str, option: str) -> "datetime":
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SpecError(option, f"{text!r} is not an ISO 8601 time", "write e.g. 2024-05-01T12:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def cmd_monitor(args: argparse.Namespace) -> int:
    from datetime import datetime, timedelta, timezone

    from .gittags import DEFAULT_TAG_PATTERNS
    from .localindex import wheelflow_home
    from .monitor import DEFAULT_EXPECT, expectations_from_spec, table_rows
    from .tasks.monitor import check_one_index, read_tags

    as_of = parse_instant(args.as_of, "--as-of") if args.as_of else datetime.now(timezone.utc)
    if args.grace < 0:
        raise SpecError("--grace", f"{args.grace} is negative", "give the grace period in hours, 0 or more")
    patterns, expect = tuple(args.tag_pattern), tuple(args.expect)
    if args.spec:
        spec = _load_spec_arg(args.spec)
        patterns = patterns or ((spec.version.tag,) if spec.version.tag else ())
        local = [c.local_version for c in spec.matrix.cells] if spec.matrix else []
        expect = expect or expectations_from_spec(spec.artifacts, [v for v in local if v])
    for pattern in patterns:
        if pattern.count("{version}") != 1:
            raise SpecError("--tag-pattern", f"{pattern!r} must contain {{version}} once", "write e.g. v{version}")
    from .indexes import resolve_endpoints

    for index in args.index:
        if index != "local":
            resolve_endpoints(index)  # a bad --index is refused before anything is read
    home = wheelflow_home()
    tags = read_tags(args.repo, patterns or DEFAULT_TAG_PATTERNS, home)
    results = []
    for index in args.index:
        results += check_one_index(args.project, index, tags, expect or DEFAULT_EXPECT, as_of,
                                   timedelta(hours=args.grace), home)
    if args.json:
        keys = ("version", "tag", "tag_time", "first_upload_time", "lag_hours", "status", "missing")
        print(json.dumps([{**{k: r.json()[k] for k in keys}, "index": r.index, "overdue": r.overdue,
                           "mismatched": r.mismatched} for r in results], indent=2))
    else:
        rows = table_rows(results)
        table = Table(title=f"{args.project}: {len(tags)} release tag(s) as of {as_of.isoformat(timespec='seconds')}")
        for column in ("version", "index", "status", "lag (h)", "missing"):
            table.add_column(column)
        for row in rows:
            style = "red" if "overdue" in row["status"] or "mismatch" in row["status"] else (
                "yellow" if row["status"] != "ok" else None)
            table.add_row(*(row[c] for c in ("version", "index", "status", "lag (h)", "missing")), style=style)
        out_console.print(table)
    problems = [r for r in results if r.problem]
    if problems:
        say(f"wheelflow: {len(problems)} version(s) missing, incomplete or changed beyond the grace period: "
            + ", ".join(f"{r.version}@{r.index}" for r in problems[:10]) + (" ..." if len(problems) > 10 else ""))
        return 1
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client

    from .orchestration import RunOutcome, follow_run, parse_params, start_run, ui_url

    parameters = parse_params(args.param)
    with get_client(sync_client=True) as client:
        deployment, run = start_run(client, args.deployment, parameters)
        url = ui_url(str(run.id))
        say(f"wheelflow: started {run.name} ({run.id}) of {args.deployment}" + (f": {url}" if url else ""))
        state, timed_out = run.state, False
        if args.wait:
            def on_state(name: str, message: str | None) -> None:
                say(f"wheelflow: {run.name}: {name}" + (f": {' '.join(message.split())}" if message else ""))

            state, timed_out = follow_run(client, run.id, timeout=args.timeout, on_state=on_state)
    outcome = RunOutcome(str(run.id), args.deployment, state.name if state else "Unknown",
                         state.type.value if state else "UNKNOWN", url, timed_out)
    if args.json:
        print(json.dumps(outcome.json(), indent=2))
    if not args.wait:
        return 0
    if timed_out:
        say(f"wheelflow: gave up after {args.timeout:g} s; the run goes on: {run.id}")
    return outcome.exit_code


def cmd_status(args: argparse.Namespace) -> int:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from .runhistory import task_histories

    try:
        run_id = UUID(args.run_id)
    except ValueError:
        raise SpecError("RUN_ID", f"{args.run_id!r} is not a flow run id", "pass the id that trigger printed") from None
    with get_client(sync_client=True) as client:
        try:
            flow_run = client.read_flow_run(run_id)
        except ObjectNotFound:
            raise SpecError("RUN_ID", f"no flow run {run_id} on this Prefect server", "check PREFECT_API_URL") from None
        # A finished flow run's last task states reach the API a moment after it ends: let them settle.
        finished = flow_run.state is not None and flow_run.state.is_final()
        histories = task_histories(client, run_id, settle=10.0 if finished else 0.0)
    if args.json:
        print(json.dumps([h.json() for h in histories], indent=2))
        return 0
    # Plain lines, not a table: CI logs are narrow and error messages must stay whole.
    print(f"flow run {flow_run.name} ({run_id}): {flow_run.state.name if flow_run.state else 'Unknown'}")
    for h in histories:
        duration = "" if h.duration_s is None else f", {h.duration_s:.1f} s"
        print(f"{h.name} [{h.flow_run}]: {h.state}, {h.attempts} attempt(s){duration}")
        for e in h.history:
            print(f"    {e.time[:19].replace('T', ' ')} {e.name}" + (f": {' '.join(e.message.split())}" if e.message else ""))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    try:
        run_id = UUID(args.run_id)
    except ValueError:
        raise SpecError("RUN_ID", f"{args.run_id!r} is not a flow run id", "pass the id the release logged") from None
    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(run_id).state
        except ObjectNotFound:
            raise SpecError("RUN_ID", f"no flow run {run_id} on this Prefect server", "check PREFECT_API_URL") from None
    try:
        resume_flow_run(run_id, run_input={"approve": not args.reject, "reason": args.reason})
    except NotPausedError:
        raise SpecError("RUN_ID", f"flow run {run_id} is not waiting for approval (it is {state.name if state else 'unknown'})",
                        "approve a run while the Prefect UI shows it Paused") from None
    except FlowPauseTimeout:
        raise SpecError("RUN_ID", f"flow run {run_id} waited too long and can no longer be approved",
                        "re-run the release") from None
    say(f"wheelflow: {'rejected' if args.reject else 'approved'} flow run {run_id}"
        + (f": {args.reason}" if args.reason else ""))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from prefect import serve

    from .orchestration import load_project_deployments

    deployments = load_project_deployments(Path(args.prefect_yaml))
    say(f"wheelflow: serving {', '.join(d.name for d in deployments)} (Ctrl-C to stop)")
    serve(*deployments)
    return 0


def _load_spec_arg(path_text: str):
    from .spec import load_spec

    path = Path(path_text)
    return load_spec(path) if path.is_dir() else load_spec(path.parent, path)


def cmd_release(args: argparse.Namespace) -> int:
    from .localindex import wheelflow_home
    from .spec import load_spec

    spec = load_spec(args.path, args.spec)  # validated up front: a bad spec never starts a flow run
    for name in args.to or []:
        spec.target(name)

    from wheelflow.flows.release import release

    state = release(project=str(Path(args.path).absolute()), spec_file=args.spec, version=args.version,
                    to=args.to, builder=args.builder, approval=args.approval, dev=args.dev, return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    report_path = wheelflow_home() / "reports" / f"{flow_run_id}.json"
    if report_path.exists():
        report: dict[str, Any] = json.loads(report_path.read_text())
    else:  # the flow crashed before it could write its report
        report = {"ok": False, "name": spec.name, "version": args.version, "files": [], "flow_run_id": flow_run_id,
                  "checks": [], "error": state.message}
    report["ok"] = bool(report.get("ok")) and state.is_completed()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_release(report)
    if not report["ok"]:
        say(f"wheelflow: release failed: {report.get('error') or state.message}")
        return 1
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    from .builders.docker import docker_client
    from .images import ensure_images
    from .localindex import wheelflow_home

    client = docker_client()
    with err_console.status("making images (debootstrap takes about a minute per base image)…"):
        outcome = ensure_images(client, mirror=args.mirror, cache=wheelflow_home() / "debootstrap-cache",
                                log=lambda line: err_console.print(line, markup=False, highlight=False))
    table = Table(title="wheelflow images")
    table.add_column("image")
    table.add_column("")
    for tag, what in outcome.items():
        table.add_row(tag, what)
    out_console.print(table)
    return 0


def _print_release(report: dict[str, Any]) -> None:
    table = Table(title=f"{report.get('name')} {report.get('version')} (flow run {report.get('flow_run_id')})")
    for column in ("file", "target", "sha256", "upload", "served"):
        table.add_column(column)
    for f in report["files"]:
        table.add_row(f["filename"], f["target"], f["sha256"][:16] + "…", f["upload"], f["status"])
    out_console.print(table)
    checks = Table(title="checks")
    for column in ("check", "status", "detail"):
        checks.add_column(column)
    for c in report["checks"]:
        checks.add_row(c["check"], c["status"], c["detail"])
    out_console.print(checks)
    if report.get("cells"):
        cells = Table(title=f"wheel matrix ({report.get('builder')} builder)")
        for column in ("cell", "wheel", "state", "smoke"):
            cells.add_column(column)
        for c in report["cells"]:
            cells.add_row(c["cell"], c["wheel"] or "", c["state"] + (" (cached)" if c["cached"] else ""), c["smoke"])
        out_console.print(cells)
    verdict = "[green]released and verified[/green]" if report["ok"] else "[red]FAILED[/red]"
    out_console.print(verdict)


def cmd_check(args: argparse.Namespace) -> int:
    from .audits import audit_files, audit_target, preflight
    from .distributions import describe, kind_of
    from .indexes import limits_for
    from .spec import INDEX_ALIASES, Target, load_spec

    cell: dict[str, str] = {}
    for item in args.cell:
        axis, sep, value = item.partition("=")
        if not sep or not axis or not value:
            raise SpecError("--cell", f"{item!r} is not AXIS=VALUE", "write e.g. --cell torch=2.5.1")
        cell[axis] = value
    paths = [Path(f) for f in args.files]
    for path in paths:
        if not path.is_file():
            raise SpecError("FILE", f"{str(path)!r} does not exist", "pass the paths of built wheels and sdists")
    spec = load_spec(Path(args.spec).absolute().parent, args.spec) if args.spec else None
    dists = [describe(p) for p in paths if kind_of(p.name)]
    findings = preflight(dists, name=spec.name if spec else None, cell=cell)
    findings += audit_files([p for p in paths if not kind_of(p.name)])  # names the files that are no distribution
    if args.target:
        if spec is not None:
            target = spec.target(args.target)
        elif args.target in INDEX_ALIASES:
            target = Target(name=args.target, index=args.target)
        else:
            raise SpecError("--target", f"unknown target {args.target!r} without --spec",
                            f"pass --spec, or use one of {', '.join(INDEX_ALIASES)}")
        findings += audit_target(dists, limits_for(target), target.name)
    if args.json:
        print(json.dumps({
            "ok": not findings,
            "files": [{"filename": d.filename, "sha256": d.sha256, "size": d.path.stat().st_size} for d in dists],
            "findings": [{"filename": f.filename, "rule": f.rule, "message": f.message} for f in findings],
        }, indent=2))
    for finding in findings:
        say(f"wheelflow: check: {finding}")
    if not args.json and not findings:
        out_console.print(f"[green]{len(dists)} file(s) pass every check[/green]")
    return 1 if findings else 0


def parse_pin(text: str) -> tuple[str, str]:
    try:
        req = Requirement(text)
    except InvalidRequirement:
        req = None
    specs = list(req.specifier) if req else []
    if req is None or len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
        raise SpecError("NAME==VERSION", f"{text!r} does not pin one version", "write it as name==1.2.3")
    return req.name, specs[0].version


def cmd_verify(args: argparse.Namespace) -> int:
    from .indexes import PRIVATE_POLL_CAP, PUBLIC_POLL_CAP

    import httpx

    from .indexes import resolve_endpoints
    from .localindex import LocalIndex
    from .spec import INDEX_ALIASES, load_spec
    from .verification import MISSING, SERVED, VERIFIED, install_and_smoke, poll_until_served, read_served
    from .versioning import parse_version

    name, raw_version = parse_pin(args.requirement)
    version = str(parse_version(raw_version, "NAME==VERSION"))
    expected: dict[str, str | None] = {}
    for item in args.expect:
        path = Path(item)
        expected[path.name] = sha256_of(path) if path.is_file() else None

    if args.index == "local":
        endpoints_cm: Any = LocalIndex()
    elif args.index in INDEX_ALIASES or "://" in args.index:
        endpoints_cm = contextlib.nullcontext(resolve_endpoints(args.index))
    else:  # a target named in the spec
        from .indexes import endpoints_for_target

        spec_path = Path(args.spec) if args.spec else None
        spec = load_spec(Path.cwd() if spec_path is None else spec_path.parent, spec_path)
        target = spec.target(args.index)
        endpoints_cm = LocalIndex() if target.index == "local" else contextlib.nullcontext(endpoints_for_target(target))

    with endpoints_cm as endpoints:
        timeout = args.timeout if args.timeout is not None else endpoints.verify_timeout
        progress = (lambda message: None) if args.json else (lambda message: err_console.print(message, markup=False))
        with httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0)) as client:
            statuses, served = poll_until_served(lambda: read_served(client, endpoints.simple_url, name, version),
                                                 expected, timeout, on_wait=progress,
                                                 max_delay=PUBLIC_POLL_CAP if endpoints.public else PRIVATE_POLL_CAP)
        if not expected:
            from .verification import FileStatus

            statuses = [FileStatus(s.filename, s.sha256, SERVED, s.sha256) for s in served]
        ok = bool(statuses) and all(s.status in (VERIFIED, SERVED) for s in statuses)
        install: dict[str, Any] | None = None
        if ok and not args.no_install:
            result = install_and_smoke(name, version, endpoints.simple_url, served, smoke=args.smoke,
                                       log=progress)
            install = {"ok": result.ok, "installed": result.installed, "message": result.message}
            ok = result.ok

    result_json = {
        "ok": ok,
        "name": canonicalize_name(name),
        "version": version,
        "index": endpoints.name,
        "files": [{"filename": s.filename, "sha256": s.served_sha256 or s.sha256, "status": s.status} for s in statuses],
        "install": install,
    }
    if args.json:
        print(json.dumps(result_json, indent=2))
    else:
        table = Table(title=f"{name} {version} on {endpoints.name}")
        for column in ("file", "sha256", "status"):
            table.add_column(column)
        for f in result_json["files"]:
            table.add_row(f["filename"], f["sha256"] or "", f["status"])
        out_console.print(table)
        if install:
            out_console.print(install["message"], markup=False)
    if not statuses:
        say(f"wheelflow: verify failed: {name} {version}: no file is served on {endpoints.name}")
    for s in statuses:
        if s.status not in (VERIFIED, SERVED):
            say(f"wheelflow: verify failed: {s.describe()}")
    if install and not install["ok"]:
        say(f"wheelflow: verify failed: {install['message']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
