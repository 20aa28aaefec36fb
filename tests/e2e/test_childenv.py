"""Least privilege for child processes: every child environment comes from an allow-list.

The end-to-end test releases a project whose setup.py and smoke command print their whole
environment, through the real build (pypa/build), a real twine upload to a real pypiserver and
a real pip install, with credentials of several kinds in wheelflow's own environment."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import INDEX_PASSWORD, INDEX_USER, make_project

from wheelflow.core.childenv import check_pass_env, child_env, container_env
from wheelflow.core.errors import SpecError
from wheelflow.core.redaction import redact

HOST = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/home/releaser",
    "LC_ALL": "C.UTF-8",
    "HTTPS_PROXY": "http://127.0.0.1:3128",
    "CUDA_HOME": "/usr/local/cuda",
    "SOURCE_DATE_EPOCH": "1700000000",
}
SECRETS = {
    "TWINE_PASSWORD": "twine-pw-from-the-shell",
    "WHEELFLOW_STAGING_PASSWORD": "staging-pw-never-in-a-build",
    "WHEELFLOW_STAGING_USERNAME": "staging-user",
    "PREFECT_API_KEY": "pnu_prefect-key-never-in-a-build",
    "WHEELFLOW_SMTP_PASSWORD": "smtp-pw-never-in-a-build",
    "AWS_SECRET_ACCESS_KEY": "aws-key-nobody-listed",
}
NOISE = {"PYTHONPATH": "/elsewhere", "VIRTUAL_ENV": "/venv", "PIP_INDEX_URL": "http://127.0.0.1:1/simple/"}


def test_child_env_keeps_the_allow_list_and_drops_everything_else() -> None:
    env = child_env(environ={**HOST, **SECRETS, **NOISE})
    assert env == HOST


def test_extra_and_passed_variables_are_added_on_top() -> None:
    environ = {**HOST, **SECRETS, "HF_TOKEN": "hf_passed-to-the-build"}
    env = child_env(
        extra={"TORCH_CUDA_ARCH_LIST": "9.0", "PATH": "/venv/bin"}, pass_env=["HF_TOKEN", "ABSENT"], environ=environ
    )
    assert env == {**HOST, "PATH": "/venv/bin", "TORCH_CUDA_ARCH_LIST": "9.0", "HF_TOKEN": "hf_passed-to-the-build"}
    assert redact("HF_TOKEN=hf_passed-to-the-build") == "HF_TOKEN=***"  # a passed token is masked in logs


def test_container_env_carries_nothing_that_names_a_place_on_this_host() -> None:
    env = container_env(extra={"WHEELFLOW_SMOKE": "python -c pass"}, environ={**HOST, **SECRETS, **NOISE})
    assert env == {
        "LC_ALL": "C.UTF-8",
        "HTTPS_PROXY": "http://127.0.0.1:3128",
        "SOURCE_DATE_EPOCH": "1700000000",
        "WHEELFLOW_SMOKE": "python -c pass",
    }


def test_a_proxy_password_is_masked() -> None:
    child_env(environ={"HTTPS_PROXY": "http://user:proxy-pw-for-the-runner@127.0.0.1:3128"})
    assert "proxy-pw-for-the-runner" not in redact("via http://user:proxy-pw-for-the-runner@127.0.0.1:3128")


@pytest.mark.parametrize(
    "name",
    [
        "WHEELFLOW_STAGING_PASSWORD",
        "WHEELFLOW_PROD_USERNAME",
        "WHEELFLOW_PYPI_TOKEN",
        "WHEELFLOW_ALERT_WEBHOOK",
        "WHEELFLOW_SMTP_PASSWORD",
        "PREFECT_API_KEY",
        "TWINE_PASSWORD",
        "MAIL_SMTP_PASSWORD",
    ],
)
@pytest.mark.case("secret", "build.pass-env names one of wheelflow's own secrets", "spec error naming it, exit 2")
def test_pass_env_refuses_wheelflows_own_secrets(tmp_path: Path, name: str) -> None:
    from wheelflow.config.spec import parse_spec

    with pytest.raises(SpecError) as raised:
        parse_spec({"name": "p", "build": {"pass-env": ["HF_TOKEN", name]}}, tmp_path)
    assert raised.value.key == "tool.wheelflow.build.pass-env" and name in str(raised.value)
    with pytest.raises(SpecError):
        child_env(pass_env=[name], environ={name: "x"})  # the same rule where the environment is built


def test_pass_env_is_read_into_the_spec(tmp_path: Path) -> None:
    from wheelflow.config.spec import parse_spec

    assert parse_spec({"name": "p", "build": {"pass-env": ["HF_TOKEN", "CC"]}}, tmp_path).pass_env == ("HF_TOKEN", "CC")
    assert parse_spec({"name": "p"}, tmp_path).pass_env == ()
    for bad in ("HF_TOKEN", ["HF TOKEN"], [1]):
        with pytest.raises(SpecError):
            check_pass_env(bad)


DUMP = "import os, sys\nfor k, v in sorted(os.environ.items()):\n    print(f'BUILD-ENV {k}={v}', file=sys.stderr)\n"


@pytest.mark.case(
    "secret",
    "credentials in wheelflow's environment; setup.py and the smoke command print their environment",
    "no credential in the build's or the smoke test's environment, log or result",
)
def test_build_and_smoke_see_no_credentials(tmp_path: Path, home: Path, index, monkeypatch: pytest.MonkeyPatch) -> None:
    from wheelflow.builds.building import build_distributions
    from wheelflow.core.credentials import Credentials
    from wheelflow.index.simple_api import read_served
    from wheelflow.index.uploading import run_twine_upload
    from wheelflow.proof.verification import install_and_smoke

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
        # Not registered for redaction: only the allow-list can keep these out of the output below.
        assert redact(value) == value
    monkeypatch.setenv("HF_TOKEN", "hf_model-download-token")
    project = make_project(tmp_path / "p")
    (project / "setup.py").write_text(DUMP + "from setuptools import setup\nsetup()\n")
    log: list[str] = []
    result = build_distributions(
        project,
        name="tiny-pkg",
        version="1.0.0",
        artifacts=("sdist", "wheel"),
        env={"DECLARED": "by-the-spec"},
        home=home,
        log=log.append,
        pass_env=["HF_TOKEN"],
    )
    assert any(line.startswith("BUILD-ENV PATH=") for line in log)  # setup.py did print its environment
    assert [name for name, value in SECRETS.items() if any(value in line for line in log)] == []
    assert "BUILD-ENV DECLARED=by-the-spec" in log
    assert "BUILD-ENV HF_TOKEN=***" in log  # passed as asked, and masked in the log

    for dist in result.dists:
        assert run_twine_upload(dist.path, index.url, Credentials(INDEX_USER, INDEX_PASSWORD)) is None
    with httpx.Client() as client:
        served = read_served(client, index.simple_url, "tiny-pkg", "1.0.0")
    smoke = "env | sed 's/^/SMOKE-ENV /'; python -c 'import tiny_pkg'"
    installed = install_and_smoke("tiny-pkg", "1.0.0", index.simple_url, served, smoke=smoke, log=log.append)
    assert installed.ok, installed.message
    output = "\n".join([*log, installed.message, installed.output_tail])
    assert "SMOKE-ENV PATH=" in output and "SMOKE-ENV HOME=" in output  # the smoke command printed its environment
    leaked = [name for name, value in {**SECRETS, "INDEX_PASSWORD": INDEX_PASSWORD}.items() if value in output]
    assert leaked == []
    assert [line for line in output.splitlines() if "TWINE_" in line or "PREFECT_API_KEY" in line] == []


def _cell_prints_its_environment(builder, cell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Build and smoke-test a cell whose setup.py and smoke command print their environment, with
    credentials in wheelflow's environment and HF_TOKEN passed; returns the log after the checks
    every builder must pass."""
    from wheelflow.builds.builders import PASSED

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_TOKEN", "hf_cell-model-download-token")
    project = make_project(tmp_path / "p")
    (project / "setup.py").write_text(DUMP + "from setuptools import setup\nsetup()\n")
    log: list[str] = []
    out = tmp_path / "out"
    out.mkdir()
    builder.build(cell, project, out, {"DECLARED": "by-the-spec"}, log.append, {})
    [wheel] = out.glob("*.whl")
    smoke = builder.smoke(cell, wheel, "env | sed 's/^/SMOKE-ENV /'", log.append, {})
    assert smoke.state == PASSED, smoke.message
    log = [line for record in log for line in record.splitlines()]  # output is logged in batches of lines
    assert any(line.startswith("SMOKE-ENV PATH=") for line in log)
    assert [name for name, value in SECRETS.items() if any(value in line for line in log)] == []
    assert "BUILD-ENV DECLARED=by-the-spec" in log and "BUILD-ENV HF_TOKEN=***" in log
    assert not any(line.startswith("SMOKE-ENV HF_TOKEN") for line in log)  # passed to the build only
    return log


def test_local_builder_cells_see_no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from wheelflow.builds.builders.local import LocalBuilder
    from wheelflow.config.matrix import Cell

    cell = Cell(name="py", values={"python": f"{sys.version_info.major}.{sys.version_info.minor}"}, timeout=600)
    _cell_prints_its_environment(LocalBuilder(pass_env=["HF_TOKEN"]), cell, tmp_path, monkeypatch)


@pytest.mark.case(
    "secret",
    "credentials in wheelflow's environment; a Docker build and smoke container print their environment",
    "containers get the declared env, pass-env and proxies/locale only: no credential, no host PATH",
)
def test_docker_build_and_smoke_containers_see_no_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_images
) -> None:
    import os

    from wheelflow.builds.builders.docker import DockerBuilder, DockerOptions
    from wheelflow.config.matrix import Cell

    monkeypatch.setenv("PATH", "/host-only/bin:" + os.environ["PATH"])
    cell = Cell(
        name="py3.11",
        values={"python": "3.11"},
        image="wheelflow/builder:py3.11",
        runtime_image="wheelflow/runtime:py3.11",
        timeout=900,
    )
    builder = DockerBuilder(DockerOptions.model_validate({"cuda-home": False}), pass_env=["HF_TOKEN"])
    log = _cell_prints_its_environment(builder, cell, tmp_path, monkeypatch)
    assert not any("/host-only/bin" in line for line in log)  # the image's own PATH, not the host's
