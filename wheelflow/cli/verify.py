"""``wheelflow verify NAME==VERSION --index INDEX``: check that an index serves a release (read-only)."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from rich.table import Table

from wheelflow.cli.common import (
    add_json,
    add_spec,
    command_argument,
    err_console,
    load_spec_arg,
    location_argument,
    out_console,
    path_argument,
    say,
    seconds,
    show_table,
)
from wheelflow.config.bounds import MAX_PIN, quoted
from wheelflow.config.spec import INDEX_ALIASES, ReleaseSpec
from wheelflow.core.deadline import Deadline
from wheelflow.core.errors import DeadlineExceeded, SpecError
from wheelflow.core.home import wheelflow_home
from wheelflow.index.readers import TargetReader, read_index
from wheelflow.index.simple_api import READ_TIMEOUT, ServedFile
from wheelflow.ops.monitor import UploadTimes
from wheelflow.proof.verification import (
    MISSING,
    SERVED,
    VERIFIED,
    expected_from_paths,
    install_and_smoke,
    poll_until_served,
    settled_reason,
)
from wheelflow.source.versioning import parse_version


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("verify", help="check that an index serves a release (read-only)")
    parser.add_argument("requirement", metavar="NAME==VERSION")
    parser.add_argument(
        "--index",
        required=True,
        type=location_argument("--index"),
        help="local, pypi, testpypi, a target from the spec, or a Simple API URL",
    )
    parser.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="FILE",
        type=path_argument("--expect"),
        help="path of a built file (its bytes are proven) or a bare wheel/sdist name (only that it is "
        "served, its bytes downloaded and hashed); a path that does not exist is an error (repeatable)",
    )
    parser.add_argument("--no-install", action="store_true", help="skip the install into a fresh virtualenv")
    parser.add_argument(
        "--smoke", type=command_argument("--smoke"), help="command run in the virtualenv after installing"
    )
    parser.add_argument(
        "--timeout",
        type=seconds("--timeout"),
        help="seconds for the whole verify: listing, polling, downloads and "
        "install (default: per index, for the files to appear)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait the whole timeout for missing files even when the release is older than it "
        "(default: a release whose files are all older fails at once: no upload is in flight)",
    )
    add_spec(parser)
    add_json(parser)
    return parser


def parse_pin(text: str) -> tuple[str, str]:
    if len(text) > MAX_PIN:  # the name goes into the index's URL: 100 KB of it made httpx's InvalidURL traceback
        raise SpecError(
            "NAME==VERSION", f"{quoted(text)} is over the limit of {MAX_PIN} characters", "write it as name==1.2.3"
        )
    try:
        req = Requirement(text)
    except InvalidRequirement:
        req = None
    specs = list(req.specifier) if req else []
    if req is None or len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
        raise SpecError("NAME==VERSION", f"{text!r} does not pin one version", "write it as name==1.2.3")
    return req.name, specs[0].version


def target_reader(
    args: argparse.Namespace, spec: ReleaseSpec | None, name: str
) -> contextlib.AbstractContextManager[TargetReader]:
    """The target to read, read-only: an index alias, a URL, or a target of the spec of any kind, through
    its publisher's reader (the embedded index or store runs while open)."""
    if args.index in INDEX_ALIASES or "://" in args.index:
        return read_index(args.index)
    from wheelflow.adapters.prefect_api import read_secret  # Prefect is imported only where it is used
    from wheelflow.flows.targets import publisher_for

    target = (spec or load_spec_arg(None, None)).target(args.index)
    return publisher_for(target).reader(target, wheelflow_home(), read_secret, project=name)


def _settled(
    client: httpx.Client, simple_url: str, window: float, reasons: list[str]
) -> Callable[[list[ServedFile]], str | None]:
    """Why waiting for a missing file is pointless (every served file is older than the index's
    deadline: PEP 700 upload-time, else Last-Modified), kept in ``reasons``."""
    times = UploadTimes(wheelflow_home() / "monitor" / "upload-times.json")

    def settled(served: list[ServedFile]) -> str | None:
        reason = settled_reason(
            [times.lookup(client, simple_url, f) for f in served], datetime.now(timezone.utc), window
        )
        times.save()
        if reason:
            reasons.append(reason)
        return reason

    return settled


def ok_to_install(statuses: list, args: argparse.Namespace) -> bool:
    return bool(statuses) and all(s.status in (VERIFIED, SERVED) for s in statuses) and not args.no_install


def run(args: argparse.Namespace) -> int:
    name, raw_version = parse_pin(args.requirement)
    version = str(parse_version(raw_version, "NAME==VERSION"))
    expected = expected_from_paths(args.expect)
    # A spec given is read at once, whatever the index: a missing file or a folder is refused (exit 2),
    # never ignored because this --index happens not to need it.
    spec = load_spec_arg(args.spec, args.project) if args.spec or args.project else None

    with target_reader(args, spec, name) as reader:
        deadline = Deadline.after(args.timeout if args.timeout is not None else reader.verify_timeout)
        progress = (lambda message: None) if args.json else (lambda message: err_console.print(message, markup=False))
        reasons: list[str] = []
        with httpx.Client(timeout=READ_TIMEOUT) as client:
            settled = None if args.wait else _settled(client, reader.simple_urls[0], reader.verify_timeout, reasons)
            statuses, served = poll_until_served(
                lambda: reader.read(client, name, version, deadline=deadline),
                expected,
                deadline,
                on_wait=progress,
                max_delay=reader.poll_cap,
                settled=settled,
            )
            install_url = reader.install_url(client, name, version) if ok_to_install(statuses, args) else None
        ok = bool(statuses) and all(s.status in (VERIFIED, SERVED) for s in statuses)
        install: dict[str, Any] | None = None
        if ok and not args.no_install:
            # With --timeout, one deadline bounds the whole verify, the install included.
            budget = deadline.remaining() if args.timeout is not None else 900
            if budget <= 0:
                raise DeadlineExceeded(
                    f"verify of {name} {version} on {reader.name}: no time left for the install "
                    f"within --timeout {args.timeout:g} s; fix: give a longer --timeout"
                )
            dependencies = spec.dependencies if spec is not None else "pypi"
            assert install_url is not None
            result = install_and_smoke(
                name,
                version,
                install_url,
                served,
                smoke=args.smoke,
                log=progress,
                timeout=budget,
                dependencies=dependencies,
            )
            install = {"ok": result.ok, "installed": result.installed, "message": result.message}
            ok = result.ok

    result_json = {
        "ok": ok,
        "name": canonicalize_name(name),
        "version": version,
        "index": reader.name,
        "files": [
            {"filename": s.filename, "sha256": s.served_sha256 or s.sha256, "status": s.status} for s in statuses
        ],
        "install": install,
    }
    if args.json:
        print(json.dumps(result_json, indent=2))
    else:
        table = Table(title=f"{name} {version} on {reader.name}")
        for column in ("file", "sha256", "status"):
            table.add_column(column)
        for f in result_json["files"]:
            table.add_row(f["filename"], f["sha256"] or "", f["status"])
        show_table(table)
        if install:
            out_console.print(install["message"], markup=False)
    if not statuses:
        say(f"wheelflow: verify failed: {name} {version}: no file is served on {reader.name}")
    for s in statuses:
        if s.status not in (VERIFIED, SERVED):
            why = f"; {reasons[0]}; fix: upload it, or pass --wait" if reasons and s.status == MISSING else ""
            say(f"wheelflow: verify failed: {s.describe()}{why}")
    if install and not install["ok"]:
        say(f"wheelflow: verify failed: {install['message']}")
    return 0 if ok else 1
