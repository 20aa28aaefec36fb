"""Which built files go to which target.

A target lists artifact kinds: ``sdist``, ``wheel`` (every wheel), ``plain-wheel`` (wheels without a
local version label, e.g. the pure "JIT" wheel for the public index) and ``variant-wheel`` (wheels
with one, e.g. ``+cu130``); ``local-versions`` narrows variant wheels to label patterns, so each CUDA
version can go to its own index as PyTorch-style indexes are laid out.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from wheelflow.config.spec import Target
from wheelflow.core.distributions import Distribution, parse_filename


def local_label(dist: Distribution) -> str | None:
    parsed = parse_filename(dist.filename)
    return parsed[1].local if parsed else None


def routes(dist: Distribution, target: Target) -> bool:
    return routes_label(dist.kind, local_label(dist) if dist.kind == "wheel" else None, target)


def routes_label(artifact_kind: str, label: str | None, target: Target) -> bool:
    """Whether a file of this artifact kind ("sdist"/"wheel") and local label goes to ``target``."""
    wanted = target.artifacts
    if artifact_kind == "sdist":
        return "sdist" in wanted
    if label is None:
        return "wheel" in wanted or "plain-wheel" in wanted
    if not ("wheel" in wanted or "variant-wheel" in wanted):
        return False
    return not target.local_versions or any(fnmatchcase(label, pattern) for pattern in target.local_versions)


def routed(dists: list[Distribution], target: Target) -> list[Distribution]:
    return [d for d in dists if routes(d, target)]
