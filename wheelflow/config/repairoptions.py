"""The spec's ``repair`` table, and the check of a repair command's placeholders."""

from __future__ import annotations

from dataclasses import dataclass

from wheelflow.core.errors import RepairError

COMMAND_FIELDS = ("{wheel}", "{dest_dir}")


@dataclass(frozen=True)
class RepairOptions:
    """The spec's ``repair`` table."""

    command: str | None = None  # replaces auditwheel: a shell command with {wheel} and {dest_dir}
    exclude: tuple[str, ...] = ()  # added to DEFAULT_EXCLUDES
    plat: str | None = None  # None: the best policy the wheel qualifies for (auditwheel's "auto")
    timeout: float = 1800.0


def check_command(command: str) -> None:
    """A repair command names {wheel} and {dest_dir} and no other placeholder."""
    missing = [field for field in COMMAND_FIELDS if field not in command]
    try:
        command.format(wheel="w", dest_dir="d")
    except (KeyError, IndexError, ValueError):
        missing = missing or ["only {wheel} and {dest_dir}"]
    if missing:
        raise RepairError(
            f"repair.command {command!r} must use {' and '.join(missing)}; "
            'fix: write e.g. "auditwheel repair -w {dest_dir} {wheel}"'
        )
