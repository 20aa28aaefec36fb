"""The layers hold: the domain (wheelflow/) imports neither Prefect nor the flows, tasks or CLI.

Prefect adapters live in wheelflow/prefect_api.py; the CLI (wheelflow/cli/) and the deployments
are the top layer. Function-level imports count too: they are how layering rots unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

ADAPTERS = {"wheelflow/prefect_api.py"}
TOP = ("wheelflow/cli/",)
FORBIDDEN_IN_DOMAIN = ("prefect", "wheelflow.flows", "wheelflow.tasks", "wheelflow.cli", "wheelflow.deployments",
                       "wheelflow.adapters.prefect_api", "flows", "tasks", "deployments")


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module the file imports, at any depth, relative imports resolved."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def domain_files() -> list[Path]:
    files = []
    for path in sorted((REPO / "wheelflow").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative not in ADAPTERS and not relative.startswith(TOP):
            files.append(path)
    return files


def violations(path: Path) -> list[str]:
    return sorted(m for m in imported_modules(path)
                  if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_IN_DOMAIN))


def test_domain_modules_import_no_prefect_flows_tasks_or_cli() -> None:
    files = domain_files()
    assert len(files) > 20  # the walk found the domain
    broken = {p.relative_to(REPO).as_posix(): violations(p) for p in files if violations(p)}
    assert broken == {}


def test_the_check_sees_a_function_level_import(tmp_path: Path) -> None:
    probe = REPO / "wheelflow" / "_layer_probe.py"
    probe.write_text("def f():\n    from prefect import flow\n    from .tasks import build\n")
    try:
        assert violations(probe) == ["prefect", "prefect.flow", "wheelflow.tasks", "wheelflow.tasks.build"]
    finally:
        probe.unlink()
