"""The release spec: validated up front, one-line errors naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, make_project, run_cli

from wheelflow.config.spec import load_spec
from wheelflow.core.errors import SpecError


def test_hello_cuda_spec_reads_from_pyproject() -> None:
    spec = load_spec(REPO / "examples" / "hello-cuda")
    assert spec.name == "hello-cuda"
    assert spec.artifacts == ("sdist", "wheel")
    assert spec.version.tag == "hello-cuda-v{version}"
    assert spec.version.file == "src/hello_cuda/_version.py"
    assert "selftest" in spec.smoke
    assert spec.target("local").index == "local"


def test_standalone_spec_file_for_a_project_you_do_not_control(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    standalone = tmp_path / "release.toml"
    standalone.write_text(
        'name = "tiny-pkg"\nartifacts = ["wheel"]\n[targets.staging]\nindex = "http://127.0.0.1:1/simple/"\n'
    )
    spec = load_spec(project, standalone)
    assert spec.artifacts == ("wheel",)
    assert spec.targets[0].name == "staging"
    assert spec.targets[0].upload_url is None and spec.targets[0].credentials == "env"


@pytest.mark.case("bad input", "a malformed spec", "one line naming the key and the fix")
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'artefacts = ["wheel"]\n',
            "spec error: tool.wheelflow.artefacts: unknown key; fix: did you mean 'artifacts'?",
        ),
        (
            'artifacts = ["egg"]\n',
            'spec error: tool.wheelflow.artifacts: unknown artifact kind \'egg\'; fix: use "sdist", "wheel"',
        ),
        ("name = 3\n", "spec error: tool.wheelflow.name: 3 is not a string; fix: write it as a string"),
        (
            '[tool.wheelflow.targets.prod]\nindex = "ftp://host/simple"\n',
            "spec error: tool.wheelflow.targets.prod.index: 'ftp://host/simple' is neither an index alias nor an http(s) URL; "
            "fix: use one of local, pypi, testpypi or a Simple API URL",
        ),
        (
            '[tool.wheelflow.targets.prod]\nindex = "pypi"\ncredentials = "hunter2"\n',
            "spec error: tool.wheelflow.targets.prod.credentials: 'hunter2' is not a credentials source; "
            'fix: use "env" (WHEELFLOW_PROD_USERNAME/WHEELFLOW_PROD_PASSWORD), "prefect-secret:BLOCK" or "none"',
        ),
    ],
)
def test_malformed_spec_is_one_line_naming_key_and_fix(tmp_path: Path, extra: str, message: str) -> None:
    project = make_project(tmp_path / "p", extra="\n" + extra if extra.startswith("[") else "")
    if not extra.startswith("["):
        text = (project / "pyproject.toml").read_text().replace("[tool.wheelflow]\n", "[tool.wheelflow]\n" + extra)
        (project / "pyproject.toml").write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(project)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_tag_pattern_must_hold_the_version(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    text = (project / "pyproject.toml").read_text().replace('tag = "v{version}"', 'tag = "release"')
    (project / "pyproject.toml").write_text(text)
    with pytest.raises(
        SpecError, match=r"^spec error: tool\.wheelflow\.version\.tag: 'release' must contain \{version\}"
    ):
        load_spec(project)


@pytest.mark.case("bad input", "a password written in the spec", "refused without echoing it")
def test_credentials_in_the_spec_are_refused_without_echoing_them(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p", extra='\n[tool.wheelflow.targets.prod]\nindex = "pypi"\npassword = "pypi-AgEtopsecret"\n'
    )
    with pytest.raises(SpecError) as err:
        load_spec(project)
    assert str(err.value).startswith(
        "spec error: tool.wheelflow.targets.prod.password: credentials never go in the spec"
    )
    assert "WHEELFLOW_PROD_PASSWORD" in str(err.value)
    assert "topsecret" not in str(err.value)


@pytest.mark.case("bad input", "an index URL with embedded credentials", "refused, the credentials redacted")
def test_index_url_with_embedded_credentials_is_refused_and_redacted(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p", extra='\n[tool.wheelflow.targets.prod]\nindex = "https://bob:tok3n@idx.example/simple/"\n'
    )
    with pytest.raises(SpecError) as err:
        load_spec(project)
    assert "embeds credentials" in str(err.value)
    assert "tok3n" not in str(err.value) and "bob" not in str(err.value)


def test_cli_reports_a_malformed_spec_in_one_line_and_builds_nothing(tmp_path: Path, home: Path) -> None:
    project = make_project(tmp_path / "p")
    text = (project / "pyproject.toml").read_text().replace("[tool.wheelflow]\n", '[tool.wheelflow]\nsmok = "true"\n')
    (project / "pyproject.toml").write_text(text)
    result = run_cli("release", str(project), "--json")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "wheelflow: error: spec error: tool.wheelflow.smok: unknown key; fix: did you mean 'smoke'?"
    )
    assert not (home / "builds").exists()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"targets": {"prod": {"index": "pypi", "max-file-size": "lots"}}},
            'spec error: tool.wheelflow.targets.prod.max-file-size: \'lots\' is not a size; fix: write bytes or e.g. "100MB", "10GiB"',
        ),
        (
            {"approval-timeout": True},
            "spec error: tool.wheelflow.approval-timeout: True is not a positive number of seconds, at most a year; "
            "fix: write e.g. approval-timeout = 3600",
        ),
        (
            {"targets": {"prod": {"index": "pypi", "name": "other"}}},
            "spec error: tool.wheelflow.targets.prod.name: unknown key; fix: the target's name is its table's key",
        ),
        (
            {"targets": {"prod": {"index": "pypi", "verify-timout": 5}}},
            "spec error: tool.wheelflow.targets.prod.verify-timout: unknown key; fix: did you mean 'verify-timeout'?",
        ),
        (
            {"docker": {"mounts": ["/data"]}},
            "spec error: tool.wheelflow.docker.mounts: ['/data'] is not a list of HOST:CONTAINER[:ro] strings; "
            'fix: write mounts = ["/data:/data:ro"]',
        ),
        (
            {"build": {"env": {"CUDA_ARCHS": 90}}},
            'spec error: tool.wheelflow.build.env.CUDA_ARCHS: 90 is not a string; fix: quote it: CUDA_ARCHS = "90"',
        ),
        (
            {"matrix": {"axes": {"python": ["3.11"]}, "env": {"N": 1}}},
            'spec error: tool.wheelflow.matrix.env.N: 1 is not a string; fix: quote it: N = "1"',
        ),
    ],
)
def test_typed_values_are_refused_in_one_line_naming_the_nested_key(tmp_path: Path, table: dict, message: str) -> None:
    from wheelflow.config.spec import parse_spec

    with pytest.raises(SpecError) as err:
        parse_spec({"name": "x", **table}, tmp_path)
    assert str(err.value) == message


@pytest.mark.case(
    "bad input", "build.network that is not a boolean", "one line naming the key and the fix; default: no network"
)
def test_build_network_is_a_boolean_off_by_default(tmp_path: Path) -> None:
    assert load_spec(make_project(tmp_path / "default")).build_network is False
    allowed = make_project(tmp_path / "allowed", extra="\n[tool.wheelflow.build]\nnetwork = true\n")
    assert load_spec(allowed).build_network is True
    wrong = make_project(tmp_path / "wrong", extra='\n[tool.wheelflow.build]\nnetwork = "yes"\n')
    with pytest.raises(SpecError) as err:
        load_spec(wrong)
    assert str(err.value) == (
        "spec error: tool.wheelflow.build.network: 'yes' is not true or false; fix: write network = true or false"
    )
