"""The upstream check: axis values the index serves that the matrix lacks (a new torch), as a table
artifact and an alert, on a schedule."""

from __future__ import annotations

import httpx
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from wheelflow.adapters.prefect_api import ui_url
from wheelflow.config.spec import load_spec
from wheelflow.core.errors import NothingToCheck, SpecError
from wheelflow.core.home import wheelflow_home
from wheelflow.core.redaction import redact_url
from wheelflow.index.localindex import open_index
from wheelflow.index.simple_api import READ_TIMEOUT
from wheelflow.ops.alerts import Alert
from wheelflow.ops.upstream import axis_gaps
from wheelflow.source.checkout import checkout
from wheelflow.tasks.monitor import deliver_alert


@flow(name="upstream-check", log_prints=False)
def upstream_check(
    project: str, spec_file: str | None = None, packages: dict[str, str] | None = None, index: str = "pypi"
) -> list[dict]:
    """List the versions ``index`` serves of each axis' package that no cell covers, newer than the matrix.

    Args:
        project: path of the project (its spec has the matrix), or a git URL.
        spec_file: a standalone spec TOML (default: the project's).
        packages: matrix axis -> the distribution whose versions it lists, e.g. {"torch": "torch"}; none: the
            run fails saying what to set (a check that checks nothing is not green).
        index: the index to read: pypi, local, or a Simple API URL (e.g. a per-CUDA wheel index).
    """
    logger = get_run_logger()
    if not packages:
        raise NothingToCheck(
            "upstream-check has no axis to watch; fix: set the `packages` parameter, axis -> "
            'package, e.g. {"torch": "torch"}'
        )
    spec = load_spec(checkout(project, None, wheelflow_home()), spec_file)
    if spec.matrix is None:
        raise SpecError("matrix", "the spec has no matrix, so no axis can lack a value", "add [tool.wheelflow.matrix]")
    with open_index(index, wheelflow_home()) as endpoints, httpx.Client(timeout=READ_TIMEOUT) as client:
        gaps = axis_gaps(spec.matrix, packages, client, endpoints.simple_url)
    rows = [gap.row() for gap in gaps]
    where = redact_url(index)
    create_table_artifact(
        key="upstream-check",
        table=rows,
        description=f"{spec.name}: upstream versions on {where} that no matrix cell covers",
    )
    lacking = [g for g in gaps if g.lacking]
    for gap in gaps:
        logger.info(
            "%s (%s on %s): newest in the matrix %s; lacking: %s",
            gap.axis,
            gap.package,
            where,
            gap.newest_in_matrix,
            ", ".join(gap.lacking) or "none",
        )
    if lacking:
        run_id = str(flow_run.get_id())
        summary = f"{spec.name}: the matrix lacks " + "; ".join(f"{g.package} {', '.join(g.lacking)}" for g in lacking)
        deliver_alert(
            Alert(
                event="upstream-new-values",
                project=spec.name,
                version=None,
                summary=summary,
                flow_run_id=run_id,
                flow_run_url=ui_url(run_id),
                lines=tuple(
                    f"{g.axis}: {g.package} {', '.join(g.lacking)} served on {where}; the matrix's "
                    f"newest is {g.newest_in_matrix}"
                    for g in lacking
                )
                + ("fix: add the values to the matrix's axes, then `wheelflow backfill` the released versions",),
                details={"gaps": rows},
            )
        )
    return rows
