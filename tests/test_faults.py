"""Faults on real sockets: an index whose listing lags behind its uploads."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import make_project, run_cli
from faultproxy import FaultProxy

WHEEL = "tiny_pkg-1.0.0-py3-none-any.whl"


@pytest.mark.case("fault", "the listing hides a new file for 10 s (cache lag)",
                  "verification waits, re-reading at most 2 s apart, and passes")
def test_a_listing_that_lags_10_s_behind_the_upload_is_waited_for(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    project = make_project(tmp_path / "p")
    with FaultProxy(index.url) as proxy:
        proxy.lag[WHEEL] = 10.0
        (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text() + textwrap.dedent(f"""
            [tool.wheelflow.targets.staging]
            index = "{proxy.url}simple/"
            verify-timeout = 60
            """))
        result = run_cli("release", str(project), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {f["status"] for f in json.loads(result.stdout)["files"]} == {"verified"}
    first_upload = next(i for i, (method, _, _) in enumerate(proxy.seen) if method == "POST")
    listings_after = [p for m, p, _ in proxy.seen[first_upload:] if m == "GET" and p.startswith("/simple/")]
    assert len(listings_after) >= 5  # it kept reading while the file was hidden (about 10 s at ≤ 2 s apart)
