"""``wheelflow monitor``: compare a repository's release tags with what an index serves."""

from __future__ import annotations

import argparse
import contextlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rich.table import Table

from wheelflow.cli.common import add_json, load_spec_arg, location_argument, path_argument, say, seconds, show_table
from wheelflow.config.spec import Target
from wheelflow.core.errors import SpecError
from wheelflow.core.home import wheelflow_home
from wheelflow.index.indexes import resolve_endpoints
from wheelflow.index.readers import TargetReader
from wheelflow.ops.monitor import (
    DEFAULT_EXPECT,
    check_one_index,
    check_one_reader,
    expectations_from_spec,
    name_missing_cells,
    read_tags,
    table_rows,
)
from wheelflow.source.gittags import DEFAULT_TAG_PATTERNS


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("monitor", help="compare a repository's release tags with what an index serves")
    parser.add_argument(
        "--repo",
        required=True,
        type=location_argument("--repo"),
        help="git URL or local path whose tags are the releases",
    )
    parser.add_argument("--project", required=True, help="distribution name on the index")
    parser.add_argument(
        "--index",
        action="append",
        required=True,
        type=location_argument("--index"),
        help="pypi, testpypi, local, a Simple API URL, or with --spec a target of the spec, of any kind (e.g. "
        "a github-release target: its release assets) (repeatable)",
    )
    parser.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="PATTERN",
        help="an expected file, e.g. {name}-{version}-py3-none-any.whl (repeatable; default: "
        "the spec's artifacts with --spec, else at least one file)",
    )
    parser.add_argument(
        "--spec",
        metavar="FILE",
        type=path_argument("--spec"),
        help="a spec TOML (standalone, as `release --spec` takes, or a project's pyproject.toml) for the "
        "expected files and tag pattern; the project's files need not be here",
    )
    parser.add_argument(
        "--tag-pattern",
        action="append",
        default=[],
        metavar="PATTERN",
        help="release tag pattern (repeatable; default: v{version} and {version})",
    )
    parser.add_argument(
        "--grace",
        type=seconds("--grace", allow_zero=True, unit="hours"),
        default=24.0,
        metavar="HOURS",
        help="how long after its tag a version may still be missing (default: 24)",
    )
    parser.add_argument(
        "--as-of", metavar="ISO8601", help="replay: count only tags and uploads at or before this instant"
    )
    add_json(parser, "a list, one record per version and index,")
    return parser


def parse_instant(text: str, option: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SpecError(option, f"{text!r} is not an ISO 8601 time", "write e.g. 2024-05-01T12:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def spec_target_reader(target: Target, home: Path, project: str) -> contextlib.AbstractContextManager[TargetReader]:
    from wheelflow.adapters.prefect_api import read_secret  # Prefect is imported only where it is used
    from wheelflow.flows.targets import publisher_for

    return publisher_for(target).reader(target, home, read_secret, project=project)


def run(args: argparse.Namespace) -> int:
    as_of = parse_instant(args.as_of, "--as-of") if args.as_of else datetime.now(timezone.utc)
    if args.grace < 0:
        raise SpecError("--grace", f"{args.grace} is negative", "give the grace period in hours, 0 or more")
    patterns, expect = tuple(args.tag_pattern), tuple(args.expect)
    cells: tuple = ()
    targets: dict[str, Target] = {}
    if args.spec:
        spec = load_spec_arg(args.spec, None, project_files=False)  # the monitor never reads the version
        patterns = patterns or ((spec.version.tag,) if spec.version.tag else ())
        cells = spec.matrix.cells if spec.matrix else ()
        local = [c.local_version for c in cells]
        expect = expect or expectations_from_spec(spec.artifacts, local)
        targets = {t.name: t for t in spec.targets}
    for pattern in patterns:
        if pattern.count("{version}") != 1:
            raise SpecError("--tag-pattern", f"{pattern!r} must contain {{version}} once", "write e.g. v{version}")
    for index in args.index:
        if index != "local" and index not in targets:
            resolve_endpoints(index)  # a bad --index is refused before anything is read
    home = wheelflow_home()
    tags = read_tags(args.repo, patterns or DEFAULT_TAG_PATTERNS, home)
    results = []
    grace = timedelta(hours=args.grace)
    for index in args.index:
        if index in targets:  # a target of the spec, read through its kind's reader, as the sync monitor does
            with spec_target_reader(targets[index], home, args.project) as reader:
                results += check_one_reader(args.project, reader, tags, expect or DEFAULT_EXPECT, as_of, grace, home)
        else:
            results += check_one_index(args.project, index, tags, expect or DEFAULT_EXPECT, as_of, grace, home)
    results = name_missing_cells(results, cells)
    if args.json:
        keys = ("version", "tag", "tag_time", "first_upload_time", "lag_hours", "status", "missing", "missing_cells")
        print(
            json.dumps(
                [
                    {
                        **{k: r.json()[k] for k in keys},
                        "index": r.index,
                        "overdue": r.overdue,
                        "mismatched": r.mismatched,
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    else:
        table = Table(title=f"{args.project}: {len(tags)} release tag(s) as of {as_of.isoformat(timespec='seconds')}")
        columns = ("version", "index", "status", "lag (h)", "missing") + (("missing cells",) if cells else ())
        for column in columns:
            table.add_column(column)
        for row in table_rows(results):
            style = (
                "red"
                if "overdue" in row["status"] or "mismatch" in row["status"]
                else ("yellow" if row["status"] != "ok" else None)
            )
            table.add_row(*(row.get(c, "") for c in columns), style=style)
        show_table(table)
    problems = [r for r in results if r.problem]
    if problems:
        say(
            f"wheelflow: {len(problems)} version(s) missing, incomplete or changed beyond the grace period: "
            + ", ".join(f"{r.version}@{r.index}" for r in problems[:10])
            + (" ..." if len(problems) > 10 else "")
        )
        return 1
    return 0
