"""Bounded input (issue 32, item 5): one static store is one lock whatever its spelling; templates
name plain fields; reasons, commands, environment values, paths, URLs and nesting have limits; each
refusal is one line naming the field and the fix, exit 2, before anything starts (also under --json)."""

from __future__ import annotations

import json
import re
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
    urls = [
        "s3://bucket/whl",
        "s3://other/whl",
        "s3://bucket/whl2",
        "http://example.org:8080/x",
        "http://example.org/x",
    ]
    assert len({site(url).lock_name for url in urls}) == len(urls)


# -- templates are plain names ------------------------------------------------------------------

MATRIX = '\n[tool.wheelflow.matrix]\naxes = { python = ["3.11"], cuda = ["13.0"] }\n'


def spec_with(tmp_path: Path, extra: str, smoke: str | None = None) -> Path:
    return make_project(tmp_path / "p", extra=extra, smoke=smoke)


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str, json_too: bool = True) -> str:
    """``argv`` (plain and with --json) exits 2 with one line holding each needle, and no long line."""
    for as_json in (False, True) if json_too else (False,):
        assert main([*argv, "--json"] if as_json else argv) == ExitCode.BAD_INPUT
        line, out = one_line(capsys)
        for needle in needles:
            assert needle in line, line
        assert len(line) < 1000, line[:300]
        if as_json:
            shown = json.loads(out)
            assert shown["ok"] is False and shown["exit_code"] == ExitCode.BAD_INPUT
            assert len(out) < 2000
    return line


TEMPLATES = {
    "env value with a width": (MATRIX + 'env = { A = "{python:>50000000}" }\n', "matrix.env.A"),
    "local-version with a width": (MATRIX + 'local-version = "cu{cuda_nodot:>100000000}"\n', "matrix.local-version"),
    "local-version, a MemoryError's width": (MATRIX + 'local-version = "{cuda:>4000000000}"\n', "local-version"),
    "a conversion": (MATRIX + 'image = "img:{python!r}"\n', "matrix.image"),
    "an attribute": (MATRIX + 'env = { A = "{python.__class__}" }\n', "matrix.env.A"),
    "build.requires": (MATRIX + '\n[tool.wheelflow.build]\nrequires = ["torch=={python:099999999}"]\n', "requires"),
    "install-commands": (
        '\n[tool.wheelflow.targets.staging]\nindex = "http://127.0.0.1:9/simple/"\n'
        'install-commands = ["pip install {name}=={version:>99999999} --index-url {index}"]\n',
        "install-commands",
    ),
    "version.tag": (None, "version.tag"),
    "a static layout": (
        '\n[tool.wheelflow.targets.wheels]\nkind = "static"\nstore-url = "file:///tmp/x"\n'
        'public-url = "http://127.0.0.1:9/"\nlayout = "{local_version:>99999999}"\n',
        "layout",
    ),
    "repair.command": (
        '\n[tool.wheelflow.repair]\ncommand = "auditwheel repair -w {dest_dir:>99999999} {wheel}"\n',
        "repair",
    ),
}


@pytest.mark.case(
    "bad input",
    "a template field with a format spec or conversion ({arch:>50000000}, {arch!r}) in matrix env, "
    "local-version, build.requires, install-commands, version.tag, a static layout or repair.command",
    "refused when the spec is read: exit 2, one short line naming the key and the fix (plain {name} fields), "
    "also under --json; nothing rendered, no MemoryError",
)
@pytest.mark.parametrize("where", TEMPLATES)
def test_template_fields_are_plain_names(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    extra, key = TEMPLATES[where]
    project = spec_with(tmp_path, extra or "")
    if extra is None:
        text = (project / "pyproject.toml").read_text()
        (project / "pyproject.toml").write_text(
            text.replace('tag = "v{version}"', 'tag = "v{version}{version:>99999999}"')
        )
    line = refused(["matrix", str(project)], capsys, key, "fix:")
    assert "plain" in line  # says what a field may be


def test_plain_fields_still_render(tmp_path: Path, capsys: pytest.CaptureFixture[str], home: Path) -> None:
    project = spec_with(tmp_path, MATRIX + 'local-version = "cu{cuda_nodot}"\nenv = { A = "{python}-{{literal}}" }\n')
    assert main(["matrix", str(project), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    cell = shown["cells"][0] if "cells" in shown else shown[0]
    assert "cu130" in json.dumps(cell) and "3.11-{literal}" in json.dumps(cell)


# -- commands and environment values have size limits ------------------------------------------


@pytest.mark.case(
    "bad input",
    "a 200 KB smoke command, a 100 KB environment value (build.env, matrix env, docker.env) or install command",
    "refused when the spec is read, before anything is built or uploaded: exit 2, one short line naming the key "
    "and the limit, also under --json (never `Argument list too long` after the upload)",
)
@pytest.mark.parametrize(
    ("extra", "smoke", "key"),
    [
        ("", "python -c 'pass' " + "#" * 200_000, "tool.wheelflow.smoke"),
        ('\n[tool.wheelflow.build]\nenv = { BIG = "' + "x" * 100_000 + '" }\n', None, "build.env.BIG"),
        (MATRIX + 'env = { BIG = "' + "x" * 100_000 + '" }\n', None, "matrix.env.BIG"),
        ('\n[tool.wheelflow.docker]\nenv = { BIG = "' + "x" * 100_000 + '" }\n', None, "docker.env.BIG"),
        (
            '\n[tool.wheelflow.targets.staging]\nindex = "http://127.0.0.1:9/simple/"\n'
            'install-commands = ["pip install {name}=={version} --index-url {index} ' + "x" * 100_000 + '"]\n',
            None,
            "install-commands",
        ),
    ],
    ids=["smoke", "build.env", "matrix.env", "docker.env", "install-commands"],
)
def test_commands_and_environment_values_are_bounded(
    extra: str,
    smoke: str | None,
    key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    home: Path,
    no_flow_run: None,
) -> None:
    project = spec_with(tmp_path, extra, smoke=smoke)
    refused(["matrix", str(project)], capsys, key, "over the limit of 32,768")
    refused(["release", str(project)], capsys, key, "over the limit of 32,768")


def test_a_rendered_environment_value_is_bounded_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    long_axis = "1" + "0" * 20_000
    project = spec_with(
        tmp_path, f'\n[tool.wheelflow.matrix]\naxes = {{ n = ["{long_axis}"] }}\nenv = {{ BIG = "{{n}}{{n}}" }}\n'
    )
    refused(["matrix", str(project)], capsys, "matrix.env.BIG", "renders for")


# -- an approval reason is capped ---------------------------------------------------------------


@pytest.mark.case(
    "bad input",
    "a 10 MiB approval reason (`wheelflow approve --reason`)",
    "refused before the server is asked: exit 2, one short line naming --reason and the 4,096-character limit, "
    "also under --json",
)
def test_an_over_long_reason_is_refused_on_the_command_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    import wheelflow.cli.approve

    def no_server() -> None:
        raise AssertionError("the server was asked about an over-long reason")

    monkeypatch.setattr(wheelflow.cli.approve, "connect_prefect", no_server)
    run_id = "0b7d4c36-4d5a-4c2e-9a57-7c2d1c3e1f00"
    reason = "r" * (10 * 1024 * 1024)
    refused(["approve", run_id, "--reject", "--reason", reason], capsys, "--reason", "4,096", "fix:", json_too=False)


@pytest.mark.case(
    "bad input",
    "a 10 MiB approval reason given through the Prefect UI's form or the API",
    "cut to 4,096 characters with a marker saying how much was cut, before the report, logs and alert see it",
)
def test_an_over_long_reason_from_the_form_is_cut_with_a_marker() -> None:
    from wheelflow.adapters.prefect_api import Decision

    reason = "because " + "r" * (10 * 1024 * 1024)
    decision = Decision(approve=False, reason=reason)
    assert len(decision.reason) == 4096
    assert decision.reason.startswith("because rrr")
    kept, cut = re.fullmatch(r"(because r+) \[cut: ([\d,]+) more characters\]", decision.reason).groups()
    assert len(kept) + int(cut.replace(",", "")) == len(reason)
    assert Decision(approve=True, reason="looks good").reason == "looks good"
    assert Decision(approve=True, reason="x" * 4096).reason == "x" * 4096
