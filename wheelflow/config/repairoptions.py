"""The spec's ``repair`` table, and the check of a repair command's placeholders."""

from __future__ import annotations

from dataclasses import dataclass

from wheelflow.config.bounds import MAX_COMMAND, TemplateRefused, quoted, template_fields, too_long
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
    fix = 'fix: write e.g. "auditwheel repair -w {dest_dir} {wheel}"'
    if reason := too_long(command, MAX_COMMAND):
        raise RepairError(f"repair.command {reason}; fix: shorten it (or run a script)")
    try:
        fields = template_fields(command)  # plain names only: {wheel:>99999999} would render 100 MB
    except TemplateRefused as exc:
        raise RepairError(f"repair.command {exc}; {fix}") from None
    missing = [field for field in COMMAND_FIELDS if field.strip("{}") not in fields]
    if missing or set(fields) - {field.strip("{}") for field in COMMAND_FIELDS}:
        raise RepairError(
            f"repair.command {quoted(command)} must use {' and '.join(missing) or 'only {wheel} and {dest_dir}'}; {fix}"
        )
