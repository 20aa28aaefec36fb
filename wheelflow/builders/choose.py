"""Which builder builds the matrix on this runner."""

from __future__ import annotations

from ..errors import SpecError
from ..spec import BUILDERS, ReleaseSpec
from . import Builder
from .docker import DockerBuilder, daemon_answers
from .local import LocalBuilder


def choose_builder(spec: ReleaseSpec, requested: str | None) -> Builder:
    """``requested``, else the spec's builder, else Docker when a daemon answers and local otherwise."""
    name = requested or spec.builder
    if name is not None and name not in BUILDERS:
        raise SpecError("--builder", f"unknown builder {name!r}", 'use "docker" or "local"')
    if name is None:
        name = "docker" if daemon_answers() else "local"
    return DockerBuilder(spec.docker, pass_env=spec.pass_env) if name == "docker" else LocalBuilder(pass_env=spec.pass_env)
