"""One installer configuration for every environment a cell uses: the build's and the smoke test's.

pip reads its configuration files (``pip.conf``: an index, extra indexes, find-links, a constraint
file) and ``PIP_*`` variables; uv reads none of them. A build environment made by pip and a smoke
environment made by uv therefore resolve different packages: a machine whose pip configuration caps
torch at 2.14.1 builds against 2.14.1 and smoke-tests against whatever is newest. wheelflow reads
pip's configuration once (``pip config list``, as pip itself merges it) and hands the same settings to
both installers, pip through ``PIP_*`` and uv through ``UV_*`` variables, with the cell's own pins
added as constraints.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wheelflow.core.childenv import child_env
from wheelflow.core.redaction import register_url

_LINE = re.compile(r"^(?P<scope>[^.]*)\.(?P<key>[a-z-]+)='(?P<value>.*)'$")
_KEYS = ("index-url", "extra-index-url", "find-links", "constraint")


@dataclass(frozen=True)
class InstallerConfig:
    """Where packages come from and what caps them, as pip's configuration says."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()  # constraint files (paths or URLs)
    pins: tuple[str, ...] = field(default=())  # the cell's own requirement pins, e.g. torch==2.14.1

    def with_pins(self, pins: Sequence[str], folder: Path) -> InstallerConfig:
        """This configuration plus ``pins`` as one more constraint file written into ``folder``."""
        pins = tuple(p for p in pins if p.strip())
        if not pins:
            return self
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "wheelflow-cell-pins.txt"
        path.write_text("\n".join(pins) + "\n", encoding="utf-8")
        return InstallerConfig(
            self.index_url, self.extra_index_urls, self.find_links, (*self.constraints, str(path)), pins
        )

    def pip_env(self) -> dict[str, str]:
        """The ``PIP_*`` variables that give pip exactly this configuration (its files are then ignored)."""
        env = {"PIP_CONFIG_FILE": os.devnull}
        if self.index_url:
            env["PIP_INDEX_URL"] = self.index_url
        if self.extra_index_urls:
            env["PIP_EXTRA_INDEX_URL"] = " ".join(self.extra_index_urls)
        if self.find_links:
            env["PIP_FIND_LINKS"] = " ".join(self.find_links)
        if self.constraints:
            env["PIP_CONSTRAINT"] = " ".join(self.constraints)
        return env

    def uv_env(self) -> dict[str, str]:
        """The ``UV_*`` variables that give uv the same configuration as pip."""
        env = {"UV_NO_CONFIG": "1"}
        if self.index_url:
            env["UV_INDEX_URL"] = self.index_url
        if self.extra_index_urls:
            env["UV_EXTRA_INDEX_URL"] = " ".join(self.extra_index_urls)
            # pip looks for a version on every index; uv stops at the first that has the name
            env["UV_INDEX_STRATEGY"] = "unsafe-best-match"
        if self.find_links:
            env["UV_FIND_LINKS"] = " ".join(self.find_links)
        if self.constraints:
            env["UV_CONSTRAINT"] = " ".join(self.constraints)
        return env

    def describe(self) -> str:
        parts = []
        if self.index_url:
            parts.append(f"index {self.index_url}")
        parts += [f"extra index {u}" for u in self.extra_index_urls]
        parts += [f"find-links {u}" for u in self.find_links]
        parts += [f"constraints {c}" for c in self.constraints]
        return ", ".join(parts) or "installer defaults"


def parse_pip_config_list(text: str) -> InstallerConfig:
    """``pip config list`` output → the configuration; ``:env:`` lines (``PIP_*`` variables) win over
    files, as in pip. Unknown keys are ignored."""
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None or match["key"] not in _KEYS:
            continue
        if match["scope"] in (":env:", "install"):  # [install] sections apply to the install command too
            (env if match["scope"] == ":env:" else files)[match["key"]] = match["value"]
        elif match["scope"] == "global":
            files.setdefault(match["key"], match["value"])
    merged = {**files, **env}

    def many(key: str) -> tuple[str, ...]:
        return tuple(shlex.split(merged.get(key, "")))

    index = merged.get("index-url") or None
    for url in (index, *many("extra-index-url"), *many("find-links")):
        if url:
            register_url(url)  # an index URL may carry credentials: never shown
    return InstallerConfig(index, many("extra-index-url"), many("find-links"), many("constraint"))


@functools.lru_cache(maxsize=4)
def _read(python: str, env_items: tuple[tuple[str, str], ...]) -> InstallerConfig:
    done = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, env=dict(env_items), check=False
    )
    return parse_pip_config_list(done.stdout) if done.returncode == 0 else InstallerConfig()


def read_installer_config(python: str = sys.executable, environ: Mapping[str, str] | None = None) -> InstallerConfig:
    """This machine's pip configuration (files and ``PIP_*`` variables), read once per process."""
    source = os.environ if environ is None else environ
    pip_vars = {k: v for k, v in source.items() if k.startswith("PIP_") and k != "PIP_CONFIG_FILE"}
    if source.get("PIP_CONFIG_FILE"):
        pip_vars["PIP_CONFIG_FILE"] = source["PIP_CONFIG_FILE"]
    env = {**child_env(), **pip_vars}
    return _read(python, tuple(sorted(env.items())))
