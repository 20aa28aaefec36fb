"""Read-only views of a target: what it serves of a version, at the URLs installers read it at.

``backfill``, ``verify`` and the monitor read targets without writing to them; each kind of target
gives its view through its publisher's ``reader()`` (``flows/targets.py``), so none of them branches
on the kind or assumes a Simple API URL of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from wheelflow.config.spec import IndexTarget, StaticTarget
from wheelflow.core.deadline import Deadline
from wheelflow.index.indexes import PRIVATE_POLL_CAP, PUBLIC_POLL_CAP
from wheelflow.index.localindex import open_index
from wheelflow.index.simple_api import ServedFile, read_served
from wheelflow.index.staticindex import project_subindexes
from wheelflow.index.staticsite import open_static, storage_options_for


@dataclass(frozen=True)
class TargetReader:
    """A target as readers see it: its name, the Simple API URLs that list the project (the root index
    first, then sub-indexes), and how long a fresh file may take to appear there."""

    name: str
    simple_urls: tuple[str, ...]
    verify_timeout: float
    public: bool  # the public index or its test instance: read more gently

    @property
    def poll_cap(self) -> float:
        return PUBLIC_POLL_CAP if self.public else PRIVATE_POLL_CAP

    def read_each(
        self, client: httpx.Client, name: str, version: str, *, deadline: Deadline | None = None
    ) -> dict[str, list[ServedFile]]:
        """Simple API URL → this version's files it lists, with their sha256."""
        return {url: read_served(client, url, name, version, deadline=deadline) for url in self.simple_urls}

    def read(
        self, client: httpx.Client, name: str, version: str, *, deadline: Deadline | None = None
    ) -> list[ServedFile]:
        """This version's files the target serves (a file listed in several sub-indexes once)."""
        files: dict[str, ServedFile] = {}
        for listing in self.read_each(client, name, version, deadline=deadline).values():
            for served in listing:
                files.setdefault(served.filename, served)
        return list(files.values())

    def refuses_new_files(self, name: str, version: str) -> str | None:
        """Why the target takes no new file for ``version`` (one line with its fix), else None: backfill
        asks before building, so a refusal costs no compile."""
        return None

    def install_url(self, client: httpx.Client, name: str, version: str) -> str:
        """Where a user installs the version from: the first index that lists a wheel of it, else the root."""
        if len(self.simple_urls) == 1:
            return self.simple_urls[0]
        for url, listing in self.read_each(client, name, version).items():
            if any(f.filename.endswith(".whl") for f in listing):
                return url
        return self.simple_urls[0]


@contextlib.contextmanager
def read_index(target: IndexTarget | str, home: Path | None = None) -> Iterator[TargetReader]:
    """An index that takes uploads (an alias, a Simple API URL, or a spec's target), read-only; the
    embedded index runs while this is open."""
    with open_index(target, home) as endpoints:
        yield TargetReader(endpoints.name, (endpoints.simple_url,), endpoints.verify_timeout, endpoints.public)


@contextlib.contextmanager
def read_static(
    target: StaticTarget, home: Path, read_secret: Callable[[str], Any] | None = None, project: str | None = None
) -> Iterator[TargetReader]:
    """A static index, read-only, at its public URL; with ``project``, every sub-index with a page for it
    (found by listing the store) is read, not only the root index. The embedded one is served on
    loopback while this is open."""
    with open_static(target, home) as site:
        subindexes = [""]
        if project is not None:
            listed = project_subindexes(site.store_url, project, storage_options_for(target, read_secret))
            subindexes += [s for s in listed if s]
        urls = tuple(site.simple_url(s) for s in subindexes)
        yield TargetReader(site.name, urls, site.verify_timeout, False)
