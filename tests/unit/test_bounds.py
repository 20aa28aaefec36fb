"""Bounded input (issue 32, item 5): one static store is one lock whatever its spelling; templates
name plain fields; reasons, commands, environment values, paths, URLs and nesting have limits; each
refusal is one line naming the field and the fix, exit 2, before anything starts (also under --json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import make_project
from test_inputs import no_flow_run, one_line, read_only_home  # noqa: F401 - the fixture (used by name) and helper test_inputs has

from wheelflow.cli import main
from wheelflow.core.errors import ExitCode
from wheelflow.index.staticindex import store_location
from wheelflow.index.staticsite import StaticSite


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
@pytest.mark.usefixtures("no_flow_run")
def test_commands_and_environment_values_are_bounded(
    extra: str,
    smoke: str | None,
    key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    home: Path,
) -> None:
    project = spec_with(tmp_path, extra, smoke=smoke)
    refused(["matrix", str(project)], capsys, key, "over the limit of 32,768")
    refused(["release", str(project)], capsys, key, "over the limit of 32,768")


def test_a_smoke_command_on_the_command_line_is_bounded(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    argv = ["verify", "x==1", "--index", "http://127.0.0.1:9/simple/", "--smoke", "python -c pass " + "#" * 200_000]
    refused(argv, capsys, "--smoke", "over the limit of 32,768")


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


# -- over-long paths and URLs, deep nesting -----------------------------------------------------

LONG_NAME = "a" * 300  # one path component over NAME_MAX (255 bytes)


@pytest.mark.case(
    "bad input",
    "a path component over 255 characters (release PATH, release --spec, check FILE, matrix --spec, "
    "monitor --repo, backfill PATH, verify --expect)",
    "exit 2, one short line naming the option and the 255-byte limit, also under --json; no `File name too long`",
)
@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["release", "/tmp/" + LONG_NAME], "PATH"),
        (["release", "{project}", "--spec", "/tmp/" + LONG_NAME + "/spec.toml"], "--spec"),
        (["check", "/tmp/" + LONG_NAME + ".whl"], "FILE"),
        (["matrix", "--spec", "/tmp/" + LONG_NAME], "--spec"),
        (["matrix", "/tmp/" + LONG_NAME], "PATH"),
        (["monitor", "--repo", "/tmp/" + LONG_NAME, "--project", "p", "--index", "local"], "--repo"),
        (["backfill", "/tmp/" + LONG_NAME], "PATH"),
        (["verify", "x==1", "--index", "http://127.0.0.1:9/simple/", "--expect", "/tmp/" + LONG_NAME], "--expect"),
        (["release", "/tmp/" + "b/" * 2100], "PATH"),  # over PATH_MAX (4,096 bytes) in all
    ],
    ids=[
        "release",
        "release --spec",
        "check",
        "matrix --spec",
        "matrix",
        "monitor --repo",
        "backfill",
        "verify --expect",
        "release PATH_MAX",
    ],
)
@pytest.mark.usefixtures("no_flow_run")
def test_an_over_long_path_is_one_line(
    argv: list[str], option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    project = str(make_project(tmp_path / "p"))
    refused([a.replace("{project}", project) for a in argv], capsys, f": {option}: ", "over the limit", "fix:")


@pytest.mark.case(
    "bad input",
    "a 100 KB `verify NAME==VERSION`, or a 100 KB --index URL (verify, monitor)",
    "exit 2, one short line naming the argument and the limit, also under --json; no httpx.InvalidURL traceback",
)
@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["verify", "a" * 100_000 + "==1", "--index", "http://127.0.0.1:9/simple/"], "NAME==VERSION"),
        (["verify", "x==1", "--index", "http://127.0.0.1:9/" + "a" * 100_000], "--index"),
        (["monitor", "--repo", "r", "--project", "p", "--index", "http://127.0.0.1:9/" + "a/" * 50_000], "--index"),
        (["monitor", "--repo", "https://example.org/" + "a" * 100_000, "--project", "p", "--index", "local"], "--repo"),
    ],
    ids=["verify pin", "verify --index", "monitor --index", "monitor --repo URL"],
)
def test_an_over_long_url_is_one_line(
    argv: list[str], key: str, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    refused(argv, capsys, f": {key}: ", "over the limit", "fix:")


def test_an_over_long_index_url_in_the_spec_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    extra = f'\n[tool.wheelflow.targets.staging]\nindex = "http://127.0.0.1:9/{"a" * 10_000}"\n'
    refused(["matrix", str(spec_with(tmp_path, extra))], capsys, "targets.staging.index", "8,192")


@pytest.mark.case(
    "bad input",
    "a spec nested 50,000 deep (arrays or inline tables), or 100 deep",
    "exit 2, one line naming the spec file and the nesting limit, also under --json; no RecursionError",
)
@pytest.mark.parametrize(
    "value",
    ["[" * 50_000 + "]" * 50_000, "{a=" * 50_000 + "1" + "}" * 50_000, "[" * 100 + "]" * 100],
    ids=["50,000 arrays", "50,000 inline tables", "100 arrays"],
)
@pytest.mark.parametrize("where", ["--spec", "pyproject.toml"])
def test_a_deeply_nested_spec_is_one_line(
    value: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    project = make_project(tmp_path / "p")
    if where == "--spec":
        spec = tmp_path / "spec.toml"
        spec.write_text(f"[tool.wheelflow]\nname = {value}\n")
        argv = ["matrix", str(project), "--spec", str(spec)]
    else:
        spec = project / "pyproject.toml"
        spec.write_text(spec.read_text() + f"\n[tool.deep]\nx = {value}\n")
        argv = ["matrix", str(project)]
    refused(argv, capsys, str(spec), "nest more than 32 deep", "fix:")


# -- validated before anything starts -----------------------------------------------------------


@pytest.mark.case(
    "bad input",
    "`backfill --cells nope=1` (an axis the matrix lacks) or `--cells python=2.7` (a value no cell has)",
    "exit 2, one line naming --cells and the axes or values to use, before a flow run exists (also under --json)",
)
@pytest.mark.parametrize(
    ("cells", "needle"), [("nope=1", "unknown axis 'nope'"), ("python=2.7", "no cell has python=2.7")]
)
@pytest.mark.usefixtures("no_flow_run")
def test_backfill_cells_are_validated_before_a_flow_run(
    cells: str,
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import wheelflow.cli.backfill

    def no_server() -> None:
        raise AssertionError("a server was asked about bad --cells")

    monkeypatch.setattr(wheelflow.cli.backfill, "connect_prefect", no_server)
    project = spec_with(tmp_path, MATRIX)
    refused(["backfill", str(project), "--cells", cells], capsys, "--cells", needle, "fix:")


@pytest.mark.case(
    "bad input",
    "`verify --spec DIR` or a --spec that does not exist, with an --index URL that needs no spec",
    "exit 2, one line naming --spec (or the file) and the fix, also under --json; never silently ignored",
)
@pytest.mark.parametrize("spec", ["a folder", "a missing file"])
def test_verify_refuses_a_spec_it_cannot_read(
    spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    path = tmp_path if spec == "a folder" else tmp_path / "nope.toml"
    line = refused(
        ["verify", "x==1.0", "--index", "http://127.0.0.1:9/simple/", "--spec", str(path)], capsys, str(path)
    )
    assert "is a directory" in line or "file not found" in line


@pytest.mark.case(
    "bad input",
    "`monitor --grace 31536000` (hours: 3,600 years) or 8,761 hours",
    "exit 2, one line naming --grace and the limit of 8,760 hours (a year), also under --json",
)
@pytest.mark.parametrize("grace", ["31536000", "8761"])
def test_grace_is_at_most_a_year_of_hours(grace: str, capsys: pytest.CaptureFixture[str], home: Path) -> None:
    refused(
        ["monitor", "--repo", "r", "--project", "p", "--index", "local", "--grace", grace],
        capsys,
        "--grace",
        "at most 8760",
    )


def test_a_year_of_grace_is_accepted() -> None:
    from wheelflow.cli.common import seconds

    assert seconds("--grace", allow_zero=True, unit="hours")("8760") == 8760.0
    assert seconds("--timeout")("31536000") == 31536000.0  # seconds keep their own limit


@pytest.mark.case(
    "bad input",
    "WHEELFLOW_HOME read-only for a command that talks to the home's Prefect server "
    "(server start, status, approve, trigger, automations)",
    "exit 2 like every other command (was 6 for server start): one line naming the folder and the fix, "
    "before any server is started",
)
@pytest.mark.parametrize(
    "argv",
    [
        ["server", "start"],
        ["status", "0b7d4c36-4d5a-4c2e-9a57-7c2d1c3e1f00"],
        ["approve", "0b7d4c36-4d5a-4c2e-9a57-7c2d1c3e1f00"],
        ["trigger", "release"],
        ["automations", "install"],
    ],
    ids=lambda argv: " ".join(argv[:1] if argv[0] != "server" else argv),
)
def test_every_command_exits_2_on_a_read_only_home(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from wheelflow.adapters import localserver

    home = read_only_home(tmp_path, monkeypatch)

    def no_server(*args: object, **kwargs: object) -> None:
        raise AssertionError("a server was started on a read-only home")

    monkeypatch.setattr(localserver, "ensure_server", no_server)
    for name in ("PREFECT_API_URL", "WHEELFLOW_EPHEMERAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("WHEELFLOW_HOME", str(home))
    json_too = argv[0] in ("server", "status", "trigger")
    line = refused(argv, capsys, f"cannot write wheelflow's home {home}", "WHEELFLOW_HOME", json_too=json_too)
    assert line.startswith("wheelflow: error: ")


def test_an_over_long_version_file_in_the_spec_names_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    project = spec_with(tmp_path, "")
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace('file = "pyproject.toml"', f'file = "{LONG_NAME}/v.py"'))
    refused(["matrix", str(project)], capsys, "version.file", "over the limit of 255")


@pytest.mark.case(
    "bad input",
    "a path too long for a file name that no option or spec check caught (OSError ENAMETOOLONG inside a command)",
    "exit 2, one short line naming the path, also under --json; no traceback",
)
def test_a_file_name_too_long_anywhere_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    import errno

    import wheelflow.cli.matrix

    def deep_inside(args: object) -> int:
        raise OSError(errno.ENAMETOOLONG, "File name too long", "/tmp/" + LONG_NAME)

    monkeypatch.setattr(wheelflow.cli.matrix, "run", deep_inside)
    refused(["matrix", "."], capsys, "is too long for a file name", "fix:")


def test_a_static_store_is_one_index_in_the_upload_record_whatever_its_spelling(tmp_path: Path) -> None:
    from wheelflow.config.spec import load_spec
    from wheelflow.flows.targets import index_key

    store = tmp_path / "x" / "store"
    store.mkdir(parents=True)
    (tmp_path / "link").symlink_to(store)
    keys = set()
    for i, url in enumerate([store.as_uri(), f"{tmp_path}/./link", f"/{tmp_path}/x/store/"]):
        extra = f'\n[tool.wheelflow.targets.wheels]\nkind = "static"\nstore-url = "{url}"\npublic-url = "http://127.0.0.1:9/"\n'
        keys.add(index_key(load_spec(make_project(tmp_path / f"p{i}", extra=extra)).target("wheels")))
    assert keys == {str(store.resolve())}


def test_monitor_expect_patterns_name_plain_fields() -> None:
    from wheelflow.core.errors import SpecError
    from wheelflow.ops.monitor import expectation_regex

    for pattern in ("{name:>99999999}-{version}.tar.gz", "{name}-{version!r}.tar.gz"):
        with pytest.raises(SpecError, match="--expect: .* has a format spec or conversion"):
            expectation_regex(pattern, "tiny-pkg", "1.0")
    assert expectation_regex("{name}-{version}.tar.gz", "tiny-pkg", "1.0").match("tiny_pkg-1.0.tar.gz")
