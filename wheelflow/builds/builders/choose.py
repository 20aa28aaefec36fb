"""Which builder builds the matrix on this runner, decided before anything is built."""

from __future__ import annotations

from collections.abc import Sequence

from wheelflow.builds.builders import Builder
from wheelflow.builds.builders.docker import DockerBuilder, daemon_answers
from wheelflow.builds.builders.local import LocalBuilder
from wheelflow.config.matrix import Cell
from wheelflow.config.spec import BUILDERS, ReleaseSpec
from wheelflow.core.errors import SpecError


def choose_builder(spec: ReleaseSpec, requested: str | None, cells: Sequence[Cell] = ()) -> tuple[Builder, str | None]:
    """``requested``, else the spec's builder, else Docker when a daemon answers and has every image
    ``cells`` need, else local; with a note saying why local was chosen over Docker (None otherwise)."""
    name = requested or spec.builder
    if name is not None and name not in BUILDERS:
        raise SpecError("--builder", f"unknown builder {name!r}", 'use "docker" or "local"')
    docker, local = DockerBuilder(spec.docker, pass_env=spec.pass_env), LocalBuilder(pass_env=spec.pass_env)
    if name is not None:
        return (docker if name == "docker" else local), None
    if not daemon_answers():
        return local, None
    missing = docker.missing_images(cells)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        return (
            local,
            f"docker images missing ({shown}): built with the local builder; run `wheelflow images` for Docker",
        )
    return docker, None
