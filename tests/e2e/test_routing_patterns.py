"""The three ways CUDA projects really publish, each released end to end by wheelflow.

The public index cannot be written to from a test: a pypiserver stands in for it, with the public
index's own rules set on the target (`manylinux-only = true`, `allow-local-versions = false`). The
static index is written to S3 (moto's standalone server: no S3-compatible server binary installs
here) and read by installers through nginx in front of it, as a CDN would serve a bucket.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from conftest import INDEX_PASSWORD, INDEX_USER, REPO, run_cli
from test_abi import needs_nvcc
from webservers import MotoS3, Nginx


def release_json(*args: str) -> tuple[int, dict, str]:
    result = run_cli("release", *args, "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def variant_project(root: Path, variants: list[str], targets: str) -> Path:
    """A package whose matrix builds one wheel per variant; the variant "" is the plain (JIT) wheel."""
    (root / "src" / "route_pkg").mkdir(parents=True)
    (root / "src" / "route_pkg" / "__init__.py").write_text("VALUE = 1\n")
    (root / "README.md").write_text("# route-pkg\n\nA package published the way CUDA projects publish.\n")
    (root / "setup.py").write_text(
        textwrap.dedent("""
        import os
        from setuptools import setup

        local = os.environ.get("WHEELFLOW_LOCAL_VERSION")
        setup(version="1.0.0" + (f"+{local}" if local else ""))
        """)
    )
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "route-pkg"
        dynamic = ["version"]
        readme = "README.md"
        description = "routing example"

        [tool.setuptools.packages.find]
        where = ["src"]

        [tool.wheelflow]
        artifacts = ["sdist", "wheel"]
        smoke = "python -c 'import route_pkg'"

        [tool.wheelflow.version]
        tag = "v{{version}}"

        [tool.wheelflow.matrix]
        axes = {{ python = ["3.11"], variant = {json.dumps(variants)} }}
        local-version = "{{variant}}"
        concurrency = 2
        """)
        + targets
    )
    return root


@pytest.fixture
def public_standin(index, monkeypatch: pytest.MonkeyPatch):
    """The pypiserver standing in for the public index (its credentials under the target's name)."""
    monkeypatch.setenv("WHEELFLOW_PUBLIC_USERNAME", INDEX_USER)
    monkeypatch.setenv("WHEELFLOW_PUBLIC_PASSWORD", INDEX_PASSWORD)
    return index


PUBLIC_RULES = "manylinux-only = true\nallow-local-versions = false\nverify-timeout = 10\n"


@pytest.fixture
def s3_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A bucket on S3 for the static index, its keys in the environment (fsspec reads them), nginx in front."""
    with MotoS3(tmp_path / "moto") as s3:
        s3.make_public_bucket("wheels")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
        with Nginx(tmp_path / "cdn", upstream=f"{s3.url}/wheels/whl") as cdn:
            spec = textwrap.dedent(f"""
                [tool.wheelflow.targets.wheels]
                kind = "static"
                store-url = "s3://wheels/whl"
                public-url = "{cdn.url}"
                storage-options = {{ client_kwargs = {{ endpoint_url = "{s3.url}", region_name = "eu-west-1" }} }}
                artifacts = ["variant-wheel"]
                """)
            yield spec, cdn, s3


def where(report: dict) -> dict[str, set[str]]:
    placed: dict[str, set[str]] = {}
    for f in report["files"]:
        assert (f["upload"], f["status"]) == ("uploaded", "verified"), f
        placed.setdefault(f["target"], set()).add(f["filename"])
    return placed


def user_rows(report: dict, target: str) -> list[dict]:
    return [c for c in report["checks"] if c["check"].startswith(f"install check on {target}: ")]


def test_jit_wheel_and_sdist_to_the_public_index_compiled_variants_to_a_static_index(
    tmp_path: Path, home: Path, prefect_api, public_standin, s3_wheels
) -> None:
    """ExLlamaV2's shape: the JIT wheel and the sdist on the public index, each CUDA variant on its own
    sub-index of a static index."""
    spec, cdn, s3 = s3_wheels
    project = variant_project(
        tmp_path / "p",
        ["", "cu128", "cu130"],
        textwrap.dedent(f"""
        [tool.wheelflow.targets.public]
        index = "{public_standin.simple_url}"
        artifacts = ["sdist", "plain-wheel"]
        """)
        + PUBLIC_RULES
        + spec,
    )
    code, report, stderr = release_json(str(project), "--builder", "local", "--version", "1.0.0")
    assert code == 0, stderr[-3000:]
    assert where(report) == {
        "public": {"route_pkg-1.0.0.tar.gz", "route_pkg-1.0.0-py3-none-any.whl"},
        "wheels": {"route_pkg-1.0.0+cu128-py3-none-any.whl", "route_pkg-1.0.0+cu130-py3-none-any.whl"},
    }
    assert sorted(p.name for p in public_standin.packages.iterdir()) == [
        "route_pkg-1.0.0-py3-none-any.whl",
        "route_pkg-1.0.0.tar.gz",
    ]
    # Users of the public index get the JIT wheel; users of a sub-index get its variant, with pip and uv.
    assert {c["detail"] for c in user_rows(report, "public")} == {
        "pip installed route_pkg-1.0.0-py3-none-any.whl (variant plain)",
        "uv installed route_pkg-1.0.0-py3-none-any.whl (variant plain)",
    }
    for variant in ("cu128", "cu130"):
        rows = [c for c in user_rows(report, "wheels") if f"/{variant}/" in c["check"]]
        assert {c["detail"] for c in rows} == {
            f"{installer} installed route_pkg-1.0.0+{variant}-py3-none-any.whl (variant {variant})"
            for installer in ("pip", "uv")
        }
    assert ("GET", "/cu130/route-pkg/", 200) in cdn.requests()  # installers read the bucket through the CDN


def test_sdist_on_the_public_index_wheels_only_on_a_static_index(
    tmp_path: Path, home: Path, prefect_api, public_standin, s3_wheels
) -> None:
    """flash-attention's shape (minus its guessed-URL fallback): the public index serves the sdist
    only; every compiled wheel is on the static index, one sub-index per variant."""
    spec, cdn, s3 = s3_wheels
    project = variant_project(
        tmp_path / "p",
        ["cu128", "cu130"],
        textwrap.dedent(f"""
        [tool.wheelflow.targets.public]
        index = "{public_standin.simple_url}"
        artifacts = ["sdist"]
        """)
        + PUBLIC_RULES
        + spec,
    )
    code, report, stderr = release_json(str(project), "--builder", "local", "--version", "1.0.0")
    assert code == 0, stderr[-3000:]
    assert where(report) == {
        "public": {"route_pkg-1.0.0.tar.gz"},
        "wheels": {"route_pkg-1.0.0+cu128-py3-none-any.whl", "route_pkg-1.0.0+cu130-py3-none-any.whl"},
    }
    # A target given no wheel has no install-command check: its sdist is the users' documented fallback.
    assert user_rows(report, "public") == []
    sub_rows = user_rows(report, "wheels")
    assert len(sub_rows) == 4 and all(c["status"] == "passed" for c in sub_rows)


@needs_nvcc
def test_manylinux_repaired_wheels_to_the_public_index(tmp_path: Path, home: Path, prefect_api, public_standin) -> None:
    """bitsandbytes' shape: one compiled wheel per platform, repaired to a manylinux tag (the CUDA
    runtime not vendored), on the public index beside the sdist; no local version label."""
    project = tmp_path / "hello-cuda"
    shutil.copytree(REPO / "examples" / "hello-cuda", project, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    text = (project / "pyproject.toml").read_text()
    text = (
        re.sub(r"\[tool\.wheelflow\.matrix\].*", "", text, flags=re.S)
        + textwrap.dedent(f"""
        [tool.wheelflow.matrix]
        axes = {{ python = ["3.11"] }}
        env = {{ HELLO_CUDA_ARCHS = "80;90" }}
        timeout = 900

        [tool.wheelflow.targets.public]
        index = "{public_standin.simple_url}"
        """)
        + PUBLIC_RULES
    )
    (project / "pyproject.toml").write_text(text)
    code, report, stderr = release_json(str(project), "--builder", "local")
    assert code == 0, stderr[-3000:]
    placed = where(report)["public"]
    [wheel] = [f for f in placed if f.endswith(".whl")]
    assert re.fullmatch(r"hello_cuda-0\.1\.0-cp311-cp311-manylinux_\d+_\d+_x86_64\.whl", wheel), wheel
    assert placed == {wheel, "hello_cuda-0.1.0.tar.gz"}
    assert {c["detail"] for c in user_rows(report, "public")} == {
        f"{installer} installed {wheel} (variant plain)" for installer in ("pip", "uv")
    }
