"""Bounded input (issue 32, item 5): one static store is one lock whatever its spelling; templates
name plain fields; reasons, commands, environment values, paths, URLs and nesting have limits; each
refusal is one line naming the field and the fix, exit 2, before anything starts (also under --json)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from conftest import make_project

from wheelflow.cli import main
from wheelflow.core.errors import ExitCode
from wheelflow.index.staticindex import store_location
from wheelflow.index.staticsite import StaticSite


@pytest.fixture
def no_flow_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any flow run started fails the test: bad input must be refused before one exists."""

    def refuse(**_: object) -> None:
        raise AssertionError("a flow run was started for bad input")

    for module, name in (("wheelflow.flows.release", "release"), ("wheelflow.flows.backfill", "backfill")):
        monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(**{name: refuse}))


def one_line(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[:2000]
    assert "Traceback" not in err + out
    return lines[0], out


def site(store_url: str) -> StaticSite:
    return StaticSite("wheels", store_url, "http://127.0.0.1:9/", "{local_version}", "every-subindex", 10.0)


# -- one store, one lock ------------------------------------------------------------------------


@pytest.mark.case(
    "fault",
    "one static store named four ways at once (file:///x/store, a symlink to it, /x/./store, //x/store)",
    "one lock: the releases publish one after another and no project's entry is lost from the root page",
)
def test_one_store_spelled_four_ways_is_one_lock(tmp_path: Path) -> None:
    store = tmp_path / "x" / "store"
    store.mkdir(parents=True)
    (tmp_path / "link").symlink_to(store)
    spellings = [
        store.as_uri(),
        str(tmp_path / "link"),
        f"{tmp_path}/x/./store",
        f"/{tmp_path}/x/store",
        f"file://{tmp_path}/link/",
        f"{tmp_path}//x/store/",
    ]
    assert {site(url).lock_name for url in spellings} == {site(str(store)).lock_name}
    assert {store_location(url) for url in spellings} == {str(store.resolve())}
    other = tmp_path / "x" / "other"
    assert site(str(other)).lock_name != site(str(store)).lock_name  # another folder: another lock


@pytest.mark.parametrize(
    ("spellings", "location"),
    [
        (
            ["https://example.org/whl", "HTTPS://Example.ORG:443/whl/", "https://example.org//a/../whl/./"],
            "https://example.org/whl",
        ),
        (["http://example.org:8080/x", "http://EXAMPLE.org:8080//x"], "http://example.org:8080/x"),
        (["s3://bucket/whl", "s3://bucket//whl/", "s3://bucket/whl/sub/.."], "s3://bucket/whl"),
    ],
)
def test_a_remote_store_is_keyed_by_its_normalised_url(spellings: list[str], location: str) -> None:
    assert {store_location(url) for url in spellings} == {location}
    assert len({site(url).lock_name for url in spellings}) == 1


def test_remote_stores_that_differ_stay_apart() -> None:
    urls = ["s3://bucket/whl", "s3://other/whl", "s3://bucket/whl2", "http://example.org:8080/x", "http://example.org/x"]
    assert len({site(url).lock_name for url in urls}) == len(urls)
