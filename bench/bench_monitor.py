"""Benchmark: the sync monitor over 200 tagged versions on 2 indexes (real pypiservers on loopback).

Prints, per index, the HTTP requests the monitor made and its wall time, for
  cold   first run: one listing, plus one HEAD per file for its Last-Modified (pypiserver has no PEP 700)
  warm   later runs: one listing (upload times come from the on-disk cache; files are immutable)
and, as the baseline measured in the same run, a per-version reader that asks the index once for each
version (what a loop over `verify NAME==VERSION` does). Ratio = monitor wall time / baseline wall time.

    python bench/bench_monitor.py [--versions 200]

The served files are written straight into each pypiserver's package directory (200 twine uploads
would measure twine, not the monitor); every read goes through real HTTP.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from wheelcraft import make_wheel  # noqa: E402

from wheelflow.index.localindex import PypiServer  # noqa: E402
from wheelflow.index.simple_api import files_for_version, list_project_files  # noqa: E402
from wheelflow.ops.monitor import UploadTimes, check_index  # noqa: E402
from wheelflow.source.gittags import release_tags  # noqa: E402


def tagged_repo(root: Path, versions: list[str]) -> Path:
    """One commit per version, tagged v<version>, via git fast-import (200 tags in well under a second)."""
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    stream = []
    for n, version in enumerate(versions):
        when = 1_700_000_000 + n * 86_400
        stream += [
            "commit refs/heads/main",
            f"mark :{n + 1}",
            f"committer b <b@example.invalid> {when} +0000",
            "data 8",
            f"v{n:06d}",
            *([f"from :{n}"] if n else []),
            "",
            f"reset refs/tags/v{version}",
            f"from :{n + 1}",
            "",
        ]
    subprocess.run(["git", "fast-import", "--quiet"], input="\n".join(stream) + "\n", text=True, cwd=root, check=True)
    return root


def counting_client(counter: Counter) -> httpx.Client:
    def count(request: httpx.Request) -> None:
        counter[request.method] += 1

    return httpx.Client(timeout=30, event_hooks={"request": [count]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=200)
    args = parser.parse_args()
    versions = [f"1.{n}.0" for n in range(args.versions)]

    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        tags = release_tags(tagged_repo(tmp / "repo", versions))
        wheels = tmp / "wheels"
        wheels.mkdir()
        for version in versions:
            make_wheel(wheels, version=version)
        servers = [PypiServer(tmp / f"index{i}", log_file=tmp / f"index{i}.log") for i in range(2)]
        for server in servers:
            server.packages.mkdir(parents=True)
            for wheel in wheels.iterdir():
                os.link(wheel, server.packages / wheel.name)
            server.start()
        try:
            print(f"{len(tags)} tagged versions x {len(servers)} indexes")
            print(f"{'run':<10}{'index':<8}{'GET':>6}{'HEAD':>6}{'seconds':>10}")
            timings: dict[str, list[float]] = {}
            for label in ("cold", "warm", "baseline"):
                cache = UploadTimes(tmp / "upload-times.json")
                for i, server in enumerate(servers):
                    counter: Counter = Counter()
                    started = time.perf_counter()
                    with counting_client(counter) as client:
                        if label == "baseline":
                            for tag in tags:  # one listing per version
                                files_for_version(
                                    list_project_files(client, server.simple_url, "tiny_pkg"), "tiny_pkg", tag.version
                                )
                        else:
                            results = check_index(
                                client,
                                project="tiny_pkg",
                                index_label=f"index{i}",
                                simple_url=server.simple_url,
                                tags=tags,
                                grace=timedelta(days=36500),
                                upload_times=cache,
                            )
                            assert all(r.status == "ok" for r in results), "every version is served"
                    elapsed = time.perf_counter() - started
                    timings.setdefault(label, []).append(elapsed)
                    print(f"{label:<10}{'index' + str(i):<8}{counter['GET']:>6}{counter['HEAD']:>6}{elapsed:>10.3f}")
            base = sum(timings["baseline"])
            for label in ("cold", "warm"):
                print(f"ratio {label} monitor / per-version baseline: {sum(timings[label]) / base:.3f}")
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    main()
