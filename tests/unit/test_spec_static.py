"""The spec keys of a static target and of the repair step: read as written, refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_project

from wheelflow.config.repairoptions import RepairOptions
from wheelflow.config.spec import STATIC_DEMO, load_spec
from wheelflow.core.errors import SpecError


def spec_with(tmp_path: Path, extra: str):
    return load_spec(make_project(tmp_path / "p", extra=extra))


def test_a_static_target_and_the_repair_table_read_as_written(tmp_path: Path) -> None:
    spec = spec_with(
        tmp_path,
        """
[tool.wheelflow.targets.wheels]
kind = "static"
store-url = "s3://bucket/whl"
public-url = "https://wheels.example.invalid/whl"
layout = "whl/{local_version}"
shared-files = "root"
storage-options = { client_kwargs = { region_name = "eu-west-1" } }
artifacts = ["variant-wheel"]

[tool.wheelflow.repair]
exclude = ["libfoo.so.*"]
plat = "manylinux_2_28_x86_64"
""",
    )
    (target,) = spec.targets
    assert (target.kind, target.store_url, target.layout, target.shared_files) == (
        "static",
        "s3://bucket/whl",
        "whl/{local_version}",
        "root",
    )
    assert not hasattr(target, "index") and target.credentials == "env"  # a static target has its kind's keys only
    assert target.storage_options == {"client_kwargs": {"region_name": "eu-west-1"}}
    assert spec.repair == RepairOptions(exclude=("libfoo.so.*",), plat="manylinux_2_28_x86_64")


def test_defaults_index_targets_repair_on_linux_and_the_built_in_static_demo(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, '[tool.wheelflow.targets.staging]\nindex = "http://127.0.0.1:1/simple/"\n')
    assert spec.targets[0].kind == "index" and not hasattr(spec.targets[0], "layout")
    assert spec.repair == RepairOptions()  # these machines are Linux
    demo = spec.target(STATIC_DEMO)
    assert (demo.kind, demo.store_url, demo.public_url, demo.credentials) == ("static", "local", None, "none")
    off = spec_with(tmp_path / "off", "[tool.wheelflow.repair]\nenabled = false\n")
    assert off.repair is None


@pytest.mark.case(
    "bad input",
    "a static target's keys wrong or a secret in its storage options",
    "one line naming the key and the fix; the secret is not echoed",
)
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[tool.wheelflow.targets.w]\nkind = "static"\npublic-url = "https://h.invalid/"\n',
            "spec error: tool.wheelflow.targets.w.store-url: missing; fix: set store-url",
        ),
        (
            '[tool.wheelflow.targets.w]\nkind = "static"\nstore-url = "s3://b/w"\n',
            "spec error: tool.wheelflow.targets.w.public-url: missing; fix: set public-url",
        ),
        (
            '[tool.wheelflow.targets.w]\nkind = "static"\nstore-url = "s3://b/w"\npublic-url = "https://h.invalid/"\n'
            'index = "pypi"\n',
            'spec error: tool.wheelflow.targets.w.index: is for kind = "index"',
        ),
        (
            '[tool.wheelflow.targets.w]\nindex = "pypi"\nstore-url = "s3://b/w"\n',
            'spec error: tool.wheelflow.targets.w.store-url: is for kind = "static"; fix: add kind = "static"',
        ),
        (
            '[tool.wheelflow.targets.w]\nkind = "bucket"\nstore-url = "s3://b/w"\n',
            'spec error: tool.wheelflow.targets.w.kind: unknown target kind \'bucket\'; fix: use "index", "static"',
        ),
        (
            '[tool.wheelflow.targets.w]\nkind = "static"\nstore-url = "s3://b/w"\npublic-url = "s3://b/w"\n',
            "spec error: tool.wheelflow.targets.w.public-url: 's3://b/w' is not an http(s) URL",
        ),
        (
            '[tool.wheelflow.targets.w]\nkind = "static"\nstore-url = "s3://AKIAEXAMPLE:hunter2@b/w"\npublic-url = "https://h.invalid/"\n',
            "spec error: tool.wheelflow.targets.w.store-url: store-url 's3://***@b/w' embeds credentials",
        ),
        (
            '[tool.wheelflow.targets.w]\nkind = "static"\nstore-url = "s3://b/w"\npublic-url = "https://h.invalid/"\n'
            'layout = "{cuda}/x"\n',
            "spec error: tool.wheelflow.targets.w.layout: layout '{cuda}/x' must name {local_version}",
        ),
        (
            '[tool.wheelflow.targets.w]\nkind = "static"\nstore-url = "s3://b/w"\npublic-url = "https://h.invalid/"\n'
            'shared-files = "all"\n',
            "spec error: tool.wheelflow.targets.w.shared-files: unknown shared-files 'all'",
        ),
        (
            '[tool.wheelflow.targets.w]\nkind = "static"\nstore-url = "s3://b/w"\npublic-url = "https://h.invalid/"\n'
            'storage-options = { client_kwargs = { aws_secret_access_key = "hunter2" } }\n',
            "spec error: tool.wheelflow.targets.w.storage-options.client_kwargs.aws_secret_access_key: a secret never goes "
            "in the spec; fix: remove it: s3fs reads AWS_ACCESS_KEY_ID",
        ),
        (
            '[tool.wheelflow.targets.w]\nkind = "static"\nstore-url = "s3://b/w"\npublic-url = "https://h.invalid/"\n'
            'storage-options = { token = "hunter2" }\n',
            "storage-options.token: a secret never goes in the spec",
        ),
        (
            '[tool.wheelflow.targets.w]\nkind = "static"\nstore-url = "local"\npublic-url = "https://h.invalid/"\n',
            'public-url: is set by wheelflow for store-url = "local"',
        ),
        (
            '[tool.wheelflow.repair]\ncommand = "auditwheel repair {wheel}"\n',
            "spec error: tool.wheelflow.repair.command: repair.command 'auditwheel repair {wheel}' must use {dest_dir}",
        ),
        (
            '[tool.wheelflow.repair]\nenabled = "yes"\n',
            "spec error: tool.wheelflow.repair.enabled: 'yes' is not true or false",
        ),
        (
            "[tool.wheelflow.repair]\nexcludes = []\n",
            "spec error: tool.wheelflow.repair.excludes: unknown key; fix: did you mean 'exclude'?",
        ),
    ],
)
def test_bad_static_and_repair_keys_are_one_line_errors(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_with(tmp_path, extra)
    assert str(info.value).startswith(message) or message in str(info.value), str(info.value)
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)
