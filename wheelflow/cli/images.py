"""``wheelflow images``: build the builder and runtime images offline (debootstrap + docker import)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from wheelflow.builds.builders.docker import docker_client
from wheelflow.builds.images import ensure_images
from wheelflow.cli.common import err_console, show_table
from wheelflow.core.errors import InfrastructureError
from wheelflow.core.home import wheelflow_home
from wheelflow.core.homeservices import flock_waiting

#: How long a second `wheelflow images` waits for one already making the images (a cold run takes a
#: few minutes; the images are the daemon's, shared by every home).
LOCK_WAIT = 3600.0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "images", help="build the builder and runtime images offline (debootstrap + docker import)"
    )
    parser.add_argument("--mirror", help="Debian archive URL (default: the one this machine's apt uses)")
    return parser


def say(line: str) -> None:
    err_console.print(line, markup=False, highlight=False)


@contextlib.contextmanager
def one_maker_at_a_time(lock: Path, wait: float) -> Iterator[None]:
    """Held by one `wheelflow images` of this user at a time: the images are the daemon's, and two
    commands making the same tag at once fail each other. A second one waits, then finds them made."""

    def too_long() -> InfrastructureError:
        return InfrastructureError(
            f"images: another `wheelflow images` has been making the images for more than {wait:.0f} s "
            f"(lock {lock}); fix: wait for it to end, then run `wheelflow images` again"
        )

    def waiting() -> None:
        say("waiting for another `wheelflow images` that is making the images…")

    with open(lock, "a+") as handle, flock_waiting(handle, fcntl.LOCK_EX, wait, too_long, poll=1.0, on_wait=waiting):
        yield


def run(args: argparse.Namespace) -> int:
    import docker

    client = docker_client()
    lock = Path(tempfile.gettempdir()) / f"wheelflow-images-{os.getuid()}.lock"
    try:
        with (
            one_maker_at_a_time(lock, LOCK_WAIT),
            err_console.status("making images (debootstrap takes about a minute per base image)…"),
        ):
            outcome = ensure_images(client, mirror=args.mirror, cache=wheelflow_home() / "debootstrap-cache", log=say)
    except (RuntimeError, docker.errors.DockerException) as exc:
        # debootstrap's, docker import's or the build's own words, then one line with the fix
        first, _, detail = str(exc).partition("\n")
        for line in detail.splitlines():
            say(line)
        raise InfrastructureError(
            f"images: {first.strip().rstrip(':')}; fix: see the output above, then run `wheelflow images` again "
            "(images already made are kept)"
        ) from None
    table = Table(title="wheelflow images")
    table.add_column("image")
    table.add_column("")
    for tag, what in outcome.items():
        table.add_row(tag, what)
    show_table(table)
    return 0
