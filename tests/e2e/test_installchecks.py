"""Install checks as users type them, with pip and uv against a real pypiserver; smoke environments made by uv."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from wheelcraft import make_sdist, make_wheel

from wheelflow.builds.builders import PASSED
from wheelflow.builds.builders.local import LocalBuilder
from wheelflow.config.matrix import Cell
from wheelflow.config.spec import parse_spec
from wheelflow.core import pyenvs
from wheelflow.core.errors import SpecError
from wheelflow.index.simple_api import read_served
from wheelflow.proof.installchecks import InstallCheck, install_commands, plan, run_install_check, runtimes

SMOKE = "python -c 'import tiny_pkg; assert tiny_pkg.answer() == 42'"


def served(index) -> list:
    with httpx.Client(timeout=30) as client:
        return read_served(client, index.simple_url, "tiny-pkg", "1.0.0")


def check(index, installer: str) -> InstallCheck:
    return InstallCheck(("tiny-pkg==1.0.0", "--index-url", index.simple_url), installer, None)


@pytest.mark.case(
    "fault",
    "no wheel on the index matches the installer's Python",
    'the install check fails, naming the source build: "pip built from the sdist" (and uv)',
)
@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_a_source_build_fails_the_install_check_by_name(index, tmp_path: Path, installer: str) -> None:
    index.packages.mkdir(parents=True, exist_ok=True)
    make_sdist(index.packages)
    make_wheel(index.packages, tag="py2-none-any")  # a wheel, but for no Python that runs here
    result = run_install_check(
        check(index, installer),
        "tiny-pkg",
        "1.0.0",
        served(index),
        sys.executable,
        workdir=tmp_path,
        log=lambda line: None,
    )
    assert not result.ok
    assert result.message.startswith(f"{installer} built from the sdist tiny_pkg-1.0.0.tar.gz and "), result.message
    assert "no wheel on the index matches this-python on this platform; fix: publish a wheel" in result.message
    assert result.installed == "tiny_pkg-1.0.0.tar.gz"


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_the_install_check_installs_a_wheel_and_names_its_variant(index, tmp_path: Path, installer: str) -> None:
    index.packages.mkdir(parents=True, exist_ok=True)
    make_sdist(index.packages)
    make_wheel(index.packages, version="1.0.0+c7")
    lines: list[str] = []
    result = run_install_check(
        check(index, installer), "tiny-pkg", "1.0.0", served(index), sys.executable, workdir=tmp_path, log=lines.append
    )
    assert result.ok, result.message
    assert result.message == f"{installer} installed tiny_pkg-1.0.0+c7-py3-none-any.whl (variant c7)"
    prefix = "uv pip install" if installer == "uv" else "pip install"
    assert lines[0] == f"$ {prefix} tiny-pkg==1.0.0 --index-url {index.simple_url}"


def test_commands_default_to_the_pinned_release_and_run_per_installer_and_python(tmp_path: Path) -> None:
    spec = parse_spec(
        {
            "name": "tiny-pkg",
            "targets": {
                "plain": {"index": "local"},
                "custom": {
                    "index": "local",
                    "install-commands": ["pip install '{name}=={version}' --extra-index-url {index}"],
                },
            },
        },
        tmp_path,
    )
    url = "http://127.0.0.1:1/simple/"
    plain = next(t for t in spec.targets if t.name == "plain")
    custom = next(t for t in spec.targets if t.name == "custom")
    assert install_commands(plain.install_commands, "tiny-pkg", "1.0.0", url, ["http://h/whl/sm90/"]) == [
        ("tiny-pkg==1.0.0", "--index-url", url),
        ("tiny-pkg==1.0.0", "--index-url", "http://h/whl/sm90/"),
    ]
    commands = install_commands(custom.install_commands, "tiny-pkg", "1.0.0", url)
    assert commands == [("tiny-pkg==1.0.0", "--extra-index-url", url)]
    # Once per runtime and installer, not per cell (six cells, two Pythons).
    checks = plan(commands, runtimes(["3.12", "3.11", "3.12", "3.11", "3.12", "3.11"]))
    assert [(c.installer, c.python) for c in checks] == [
        ("pip", "3.11"),
        ("uv", "3.11"),
        ("pip", "3.12"),
        ("uv", "3.12"),
    ]
    assert runtimes([]) == (None,)
    secret = InstallCheck(("x", "--index-url", "https://user:token@example.invalid/simple/"), "uv", None)
    assert "token" not in secret.title("t") and secret.title("t").startswith("install check on t: uv pip install x ")


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("uv pip install {name}", "does not start with `pip install`"),
        ("pip install {name}=={release}", "uses {release}"),
        ("pip install {name} --index-url https://u:p@host/simple/", "credentials never go in the spec"),
    ],
)
def test_a_bad_install_command_is_one_line_naming_the_key(tmp_path: Path, command: str, says: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"name": "tiny-pkg", "targets": {"t": {"index": "local", "install-commands": [command]}}}, tmp_path)
    assert "install-commands" in str(caught.value) and says in str(caught.value)
    assert "\n" not in str(caught.value)


def _cell(timeout: float = 120) -> Cell:
    return Cell("py-here", {}, timeout=timeout)


def test_smoke_environments_are_made_by_uv(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path)
    # uv writes its own name into the environment's pyvenv.cfg: the smoke command checks it from inside.
    result = LocalBuilder().smoke(
        _cell(), wheel, f"grep -q '^uv = ' \"$VIRTUAL_ENV/pyvenv.cfg\" && {SMOKE}", lambda line: None, {}
    )
    assert (result.state, result.message) == (PASSED, f"installed {wheel.name} with uv; smoke ok")


def test_smoke_falls_back_to_pip_without_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyenvs, "find_uv", lambda: None)
    wheel = make_wheel(tmp_path)
    result = LocalBuilder().smoke(
        _cell(), wheel, f"! grep -q '^uv = ' \"$VIRTUAL_ENV/pyvenv.cfg\" && {SMOKE}", lambda line: None, {}
    )
    assert (result.state, result.message) == (PASSED, f"installed {wheel.name} with pip; smoke ok")


@pytest.mark.case(
    "fault",
    "the release's wheel installs on no Python the users run (a wrong tag): pip falls back to the sdist",
    "the install check fails naming the sdist users would build from; the uploads roll back",
)
def test_a_release_whose_users_would_build_from_the_sdist_fails(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    import json

    from conftest import make_project, run_cli

    project = make_project(tmp_path / "proj", index_url=index.simple_url)
    (project / "setup.cfg").write_text("[bdist_wheel]\npython_tag = py2\n")  # a wheel no Python 3 installs
    result = run_cli("release", str(project), "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1, result.stderr[-3000:]
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["install + smoke on staging"]["status"] == "failed"
    assert report["error"].startswith("staging: no wheel of tiny-pkg 1.0.0 on this index installs on Python 3.")
    assert "would build from the sdist tiny_pkg-1.0.0.tar.gz; fix: publish a wheel for it" in report["error"]
    assert sorted(p.name for p in index.packages.iterdir()) == []  # this run's uploads rolled back
