"""Routing a wide release stays linear: each built file is routed once per target (a 500-file release
used to route every file against the whole list for each file: 250,000 filename parses, 20 s)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import flows.publishing as publishing
from wheelflow.config import routing
from wheelflow.core.distributions import Distribution


def test_refusing_unrouted_files_routes_each_file_once_per_target(monkeypatch) -> None:
    dists = [Distribution(Path(f"pkg-1.0+c{n}-py3-none-any.whl"), "wheel", "0" * 64) for n in range(50)]
    targets = [SimpleNamespace(name="staging", artifacts=["wheel"], local_versions=[])]
    asked: list[str] = []
    real = routing.routes

    def counting(dist, target):
        asked.append(dist.filename)
        return real(dist, target)

    monkeypatch.setattr(routing, "routes", counting)
    monkeypatch.setattr(publishing, "routes", counting, raising=False)
    publishing.refuse_unrouted(SimpleNamespace(targets=targets), dists)
    assert sorted(asked) == sorted(d.filename for d in dists)
