"""The published JSON Schema of [tool.wheelflow]: current, faithful to the parser, keys as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from conftest import REPO

from wheelflow.builds.builders.docker import DockerBuilder
from wheelflow.config.spec import SCHEMA_FILE, load_spec, parse_spec, spec_json_schema
from wheelflow.core.errors import SpecError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def test_the_committed_schema_is_what_the_models_generate(tmp_path: Path) -> None:
    out = tmp_path / SCHEMA_FILE
    subprocess.run([sys.executable, "-m", "wheelflow.config.spec", str(out)], cwd=REPO, check=True, capture_output=True)
    assert out.read_text() == (REPO / SCHEMA_FILE).read_text(), (
        f"{SCHEMA_FILE} is stale: run `python -m wheelflow.config.spec` and commit the result"
    )


def test_every_key_is_named_as_written_and_described() -> None:
    schema = spec_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "approval-timeout" in schema["properties"]
    assert {"upload-url", "verify-timeout", "max-file-size", "local-versions"} <= set(
        schema["$defs"]["IndexTarget"]["properties"]
    )
    tables = [schema, *schema["$defs"].values()]
    for table in tables:
        for key, prop in table["properties"].items():
            assert prop.get("description"), f"{table['title']}.{key} has no description"
            assert prop["title"] == key
            assert "_" not in key


def _table(toml: str) -> dict:
    return tomllib.loads(toml)["tool"]["wheelflow"]


def test_the_examples_spec_is_valid_under_the_schema() -> None:
    pyproject = tomllib.loads((REPO / "examples" / "hello-cuda" / "pyproject.toml").read_text())
    jsonschema.validate(pyproject["tool"]["wheelflow"], spec_json_schema())
    load_spec(REPO / "examples" / "hello-cuda")


@pytest.mark.parametrize(
    "toml",
    [
        '[tool.wheelflow]\nname = "x"\nsmok = "true"\n',
        '[tool.wheelflow]\nname = "x"\nartifacts = ["egg"]\n',
        '[tool.wheelflow]\nname = "x"\napproval-timeout = true\n',
        '[tool.wheelflow]\nname = "x"\napproval = "sometimes"\n',
        '[tool.wheelflow.targets.prod]\nindex = "pypi"\nmax-file-size = "lots"\n',
        '[tool.wheelflow.targets.prod]\nindex = "pypi"\ncredentials = "hunter2"\n',
        '[tool.wheelflow.targets.prod]\nupload-url = "http://127.0.0.1:1/"\n',
        '[tool.wheelflow.docker]\npip-cache = "no"\n',
        '[tool.wheelflow.matrix]\naxes = { python = ["3.11"] }\nconcurency = 2\n',
        '[tool.wheelflow.matrix]\naxes = { python = ["3.11"] }\ntimeout = 0\n',
    ],
)
def test_what_the_schema_refuses_the_parser_refuses(toml: str, tmp_path: Path) -> None:
    table = {"name": "x", **_table(toml)}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(table, spec_json_schema())
    with pytest.raises(SpecError):
        parse_spec(table, tmp_path)


def test_what_the_schema_accepts_the_parser_accepts(tmp_path: Path) -> None:
    table = _table(
        """
        [tool.wheelflow]
        name = "x"
        artifacts = "wheel"
        approval = "manual"
        approval-timeout = 60
        [tool.wheelflow.targets.cuda]
        index = "http://127.0.0.1:1/cu130/"
        artifacts = ["variant-wheel"]
        local-versions = ["cu130*"]
        max-file-size = "2GiB"
        project-budget = 10000000000
        verify-timeout = 2.5
        credentials = "prefect-secret:cuda-index"
        [tool.wheelflow.docker]
        cuda-home = false
        mounts = ["/data:/data:ro"]
        [tool.wheelflow.matrix]
        axes = { python = [3.11, "3.13"], cuda = ["13.0"] }
        local-version = "cu{cuda_nodot}"
        """.replace("\n        ", "\n")
    )
    jsonschema.validate(table, spec_json_schema())
    spec = parse_spec(table, tmp_path)
    target = spec.target("cuda")
    assert (target.max_file_size, target.project_budget, target.verify_timeout) == (2 * 2**30, 10**10, 2.5)
    assert target.artifacts == ("variant-wheel",) and spec.artifacts == ("wheel",)
    assert [c.name for c in spec.matrix.cells] == ["py3.11-cu13.0", "py3.13-cu13.0"]


def test_docker_table_reaches_the_builder_containers(tmp_path: Path) -> None:
    # No daemon needed: this is the mapping from the spec's [docker] table to container volumes.
    table = _table(
        '[tool.wheelflow]\nname = "x"\n[tool.wheelflow.docker]\ncuda-home = false\npip-cache = false\n'
        'mounts = ["/data/weights:/weights:ro"]\nenv = { HF_HOME = "/weights" }\n'
    )
    cuda = tmp_path / "cuda"
    cuda.mkdir()
    off = parse_spec(table, tmp_path).docker
    on = parse_spec({**table, "docker": {"cuda-home": str(cuda)}}, tmp_path).docker
    volumes, env = DockerBuilder(off)._volumes({}, cuda=True)
    binds = {spec["bind"]: source for source, spec in volumes.items()}
    assert "/usr/local/cuda" not in binds and "/root/.cache/pip" not in binds
    assert binds["/root/.ccache"] == "wheelflow-ccache"
    assert volumes["/data/weights"] == {"bind": "/weights", "mode": "ro"}
    assert env["HF_HOME"] == "/weights"
    volumes, _ = DockerBuilder(on)._volumes({}, cuda=True)
    binds = {spec["bind"]: source for source, spec in volumes.items()}
    assert binds["/usr/local/cuda"] == str(cuda.resolve()) and binds["/root/.cache/pip"] == "wheelflow-pip-cache"
