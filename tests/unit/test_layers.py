"""The layer contracts (import-linter, pyproject.toml) hold, and an import against them breaks them.

The tree is staged in a temporary folder in its installed shape (tools/lint_layers.py); nothing is
written into the source tree."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# import-linter 2.16 needs Python 3.11: on the 3.10 floor the layers go unchecked (CI checks them on 3.11)
pytest.importorskip("importlinter", reason="import-linter is installed on Python 3.11 and later")


def _tool():
    spec = importlib.util.spec_from_file_location("lint_layers", REPO / "tools" / "lint_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lint_layers():
    return _tool()


def _staged_with(lint_layers, tmp_path: Path, module: str, line: str) -> str:
    staged = lint_layers.stage(REPO, tmp_path / "staged")
    path = staged.joinpath(*module.split(".")).with_suffix(".py")
    assert path.is_file(), path
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    result = lint_layers.lint(staged)
    assert result.returncode != 0, result.stdout
    return result.stdout


def test_the_tree_keeps_every_contract(lint_layers, tmp_path: Path) -> None:
    result = lint_layers.lint(lint_layers.stage(REPO, tmp_path / "staged"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and "4 kept, 0 broken" in result.stdout


def test_a_domain_module_importing_a_flow_breaks_the_layers(lint_layers, tmp_path: Path) -> None:
    out = _staged_with(lint_layers, tmp_path, "wheelflow.config.routing", "import wheelflow.flows.release  # upward")
    assert "wheelflow.config is not allowed to import wheelflow.flows" in out


def test_the_base_layer_importing_the_spec_breaks_the_layers(lint_layers, tmp_path: Path) -> None:
    # what made the old cycle: a low-level module reaching up into the configuration
    out = _staged_with(lint_layers, tmp_path, "wheelflow.core.deadline", "from wheelflow.config.spec import Target")
    assert "wheelflow.core is not allowed to import wheelflow.config" in out


def test_the_domain_importing_prefect_breaks_its_contract(lint_layers, tmp_path: Path) -> None:
    out = _staged_with(lint_layers, tmp_path, "wheelflow.ops.alerts", "import prefect")
    assert "wheelflow.ops is not allowed to import prefect" in out


def test_a_cycle_between_siblings_breaks_the_acyclic_contract(lint_layers, tmp_path: Path) -> None:
    # index.removal already imports index.indexes; the reverse closes a circle inside one layer
    out = _staged_with(lint_layers, tmp_path, "wheelflow.index.indexes", "import wheelflow.index.removal")
    assert "No import cycles between sibling modules or packages BROKEN" in out
