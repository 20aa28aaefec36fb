"""Where an install check takes each file from: the release from the target, dependencies elsewhere.

The released file is always the target's, pinned by its URL and sha256 (a direct reference), so no
other index is ever asked for our own name: no dependency confusion, even when the public index
serves a project of the same name. Dependencies resolve from ``[tool.wheelflow.install]
dependencies``: the public index (its URL from pip's own default at run time), a Simple API URL,
or none at all (``--no-deps``). uv's cache under $WHEELFLOW_HOME keeps the dependencies' files
between checks and runs: a second target or a second run downloads none of them again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import Tag, sys_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from wheelflow.core.errors import UsageError
from wheelflow.core.pyenvs import find_uv
from wheelflow.index.simple_api import ServedFile

#: The spec's key, named by every error about dependencies.
DEPENDENCIES_KEY = "[tool.wheelflow.install] dependencies"


@dataclass(frozen=True)
class DependencySource:
    setting: str  # "pypi", "none" or a Simple API URL, as the spec writes it
    index_url: str | None  # where pip resolves dependencies; None: it installs none

    def describe(self) -> str:
        return {"pypi": "the public index", "none": "nowhere (--no-deps)"}.get(self.setting, self.setting)


def dependency_source(setting: str = "pypi") -> DependencySource:
    """The dependency index for a spec's setting (the public index's URL from pip's default)."""
    if setting == "none":
        return DependencySource(setting, None)
    if setting == "pypi":
        from wheelflow.index.indexes import (
            public_index,  # indexes imports the spec, which imports this package's leaves
        )

        return DependencySource(setting, public_index()[0])
    return DependencySource(setting, setting)


def release_file(served: list[ServedFile], name: str, version: str) -> ServedFile:
    """The served file an installer on this interpreter would take: the best-ranked compatible wheel
    (this interpreter's tag order), else the sdist."""
    rank = {tag: position for position, tag in enumerate(sys_tags())}
    best: tuple[int, ServedFile] | None = None
    for served_file in served:
        if not served_file.filename.endswith(".whl"):
            continue
        try:
            tags: frozenset[Tag] = parse_wheel_filename(served_file.filename)[3]
        except InvalidWheelFilename:
            continue
        position = min((rank[t] for t in tags if t in rank), default=None)
        if position is not None and (best is None or position < best[0]):
            best = (position, served_file)
    if best is not None:
        return best[1]
    sdists = [f for f in served if f.filename.endswith((".tar.gz", ".zip"))]
    if sdists:
        return sdists[0]
    raise UsageError(
        "install",
        f"no file of {name} {version} on the index installs on this interpreter",
        "publish a wheel for it or an sdist, or pass --no-install",
    )


def install_command(
    python: Path, name: str, pinned: ServedFile, source: DependencySource, cache_dir: Path
) -> list[str]:
    """``uv pip install`` into the venv of ``python``: the release file by URL and sha256, dependencies
    from ``source``, through uv's cache (a file once downloaded is not downloaded again; pip's own
    HTTP cache keeps nothing from an index that sends no cache headers)."""
    url = pinned.url.split("#", 1)[0]
    requirement = f"{name} @ {url}#sha256={pinned.sha256}" if pinned.sha256 else f"{name} @ {url}"
    where = ["--index-url", source.index_url] if source.index_url else ["--no-index", "--no-deps"]
    return [
        find_uv() or "uv",
        "pip",
        "install",
        "--python",
        str(python),
        "--no-config",
        "--cache-dir",
        str(cache_dir),
        *where,
        requirement,
    ]


def unresolvable(output: str, name: str, source: DependencySource) -> str | None:
    """The one line for a dependency pip found on no index, naming it and the key to set; else None."""
    found = (
        re.search(r"No matching distribution found for ([^\s;]+)", output)  # pip
        or re.search(r"Because ([^\s]+) was not found in the package registry", output)
    )  # uv
    if found is None or found.group(1).lower().startswith(name.lower() + " "):
        return None
    return (
        f"dependency {found.group(1)} of {name} is not served by {source.describe()}; fix: set {DEPENDENCIES_KEY} "
        'to the Simple API URL of an index that serves it (or "none" to install without dependencies)'
    )
