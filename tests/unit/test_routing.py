"""Routing: sdist and plain wheel to the public index, each CUDA variant to its own index."""

from __future__ import annotations

from pathlib import Path

import pytest
from wheelcraft import make_sdist, make_wheel

from wheelflow.config.routing import routed
from wheelflow.config.spec import parse_spec
from wheelflow.core.distributions import describe
from wheelflow.core.errors import SpecError


def test_each_file_goes_where_the_targets_route_it(tmp_path: Path) -> None:
    spec = parse_spec(
        {
            "name": "tiny-pkg",
            "targets": {
                "pypi": {"index": "pypi", "artifacts": ["sdist", "plain-wheel"]},
                "cu130": {
                    "index": "https://wheels.example.invalid/cu130/",
                    "artifacts": ["variant-wheel"],
                    "local-versions": ["cu130*"],
                },
                "cu128": {
                    "index": "https://wheels.example.invalid/cu128/",
                    "artifacts": ["variant-wheel"],
                    "local-versions": ["cu128*"],
                },
            },
        },
        tmp_path,
    )
    files = [
        describe(p)
        for p in (
            make_sdist(tmp_path),
            make_wheel(tmp_path),  # the pure "JIT" wheel
            make_wheel(tmp_path, version="1.0.0+cu130.torch2.9", tag="cp311-cp311-manylinux_2_28_x86_64"),
            make_wheel(tmp_path, version="1.0.0+cu128.torch2.9", tag="cp311-cp311-manylinux_2_28_x86_64"),
        )
    ]
    where = {t.name: [d.filename for d in routed(files, t)] for t in spec.targets}
    assert where == {
        "pypi": ["tiny_pkg-1.0.0.tar.gz", "tiny_pkg-1.0.0-py3-none-any.whl"],
        "cu130": ["tiny_pkg-1.0.0+cu130.torch2.9-cp311-cp311-manylinux_2_28_x86_64.whl"],
        "cu128": ["tiny_pkg-1.0.0+cu128.torch2.9-cp311-cp311-manylinux_2_28_x86_64.whl"],
    }


@pytest.mark.case("bad input", "an unknown artifact kind in a target's routing", "one line naming the known kinds")
def test_an_unknown_routing_kind_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "x", "targets": {"t": {"index": "pypi", "artifacts": ["pure-wheel"]}}}, tmp_path)
    assert str(err.value) == (
        "spec error: tool.wheelflow.targets.t.artifacts: unknown artifact kind 'pure-wheel'; "
        'fix: use "sdist", "wheel", "plain-wheel", "variant-wheel"'
    )
