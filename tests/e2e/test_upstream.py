"""The upstream check against a real pypiserver serving crafted "torch" wheels, a real Prefect
server and a real webhook receiver."""

from __future__ import annotations

from pathlib import Path

import httpx
from conftest import make_project
from packaging.version import Version
from wheelcraft import make_wheel

from wheelflow.ops.upstream import lacking_values, served_versions

MATRIX = """
[tool.wheelflow.matrix]
axes = { python = ["3.11"], torch = ["2.8.0", "2.9"] }
local-version = "torch{torch_nodot}"
"""


def test_only_newer_final_releases_no_value_covers_are_lacking() -> None:
    available = [
        Version(v) for v in ("2.7.0", "2.8.0", "2.8.1", "2.9.1", "2.10.0", "2.10.1", "2.11.0rc1", "2.11.0.dev1")
    ]
    # 2.8.1 is older than the newest value (a choice made), 2.9.1 is covered by "2.9", pre-releases are not announced.
    assert lacking_values(["2.8.0", "2.9"], available) == ["2.10.0", "2.10.1"]
    assert lacking_values(["2.8.0", "2.10"], available) == []


def test_the_scheduled_check_lists_what_the_index_serves_and_alerts(
    tmp_path: Path, home: Path, index, webhook, prefect_api
) -> None:
    from flows.upstream import upstream_check

    for version in ("2.8.0", "2.9.1", "2.10.0", "2.11.0rc1"):
        make_wheel(index.packages, "torch", version, "cp311-cp311-linux_x86_64")
    with httpx.Client() as client:
        assert served_versions(client, index.simple_url, "torch") == [
            Version(v) for v in ("2.8.0", "2.9.1", "2.10.0", "2.11.0rc1")
        ]
    project = make_project(tmp_path / "proj", extra=MATRIX)
    rows = upstream_check(project=str(project), packages={"torch": "torch"}, index=index.simple_url)
    assert rows == [{"axis": "torch", "package": "torch", "newest in matrix": "2.9", "lacking": "2.10.0"}]
    [alert] = webhook.received
    assert alert["event"] == "upstream-new-values" and alert["summary"] == "tiny-pkg: the matrix lacks torch 2.10.0"

    state = upstream_check(project=str(project), return_state=True)  # nothing to watch is not green
    assert (
        state.is_failed() and "upstream-check has no axis to watch; fix: set the `packages` parameter" in state.message
    )
