"""A release that compiles without a compiler cache says so, and how to get one."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from wheelflow.builds.buildenv import BuildSetup
from wheelflow.builds.builders.local import LocalBuilder
from wheelflow.builds.cells import build_cell_wheel
from wheelflow.config.matrix import Cell

HINT = "compiled without a compiler cache (no ccache on PATH); fix: install ccache (apt-get install ccache)"


def c_extension_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "tiny.c").write_text(
        textwrap.dedent("""
        #include <Python.h>
        static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tiny_ext", NULL, -1, NULL};
        PyMODINIT_FUNC PyInit_tiny_ext(void) { return PyModule_Create(&module); }
        """)
    )
    (root / "setup.py").write_text(
        'from setuptools import Extension, setup\nsetup(name="tiny-ext", version="1.0.0", '
        'ext_modules=[Extension("tiny_ext", ["tiny.c"])])\n'
    )
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    return root


def build(project: Path, home: Path, log: list[str]) -> None:
    build_cell_wheel(
        LocalBuilder(),
        Cell("c1", {}),
        project=project,
        source_digest="tree-1",
        name="tiny-ext",
        version="1.0.0",
        build_env={},
        home=home,
        log=log.append,
        labels={},
        setup=BuildSetup(compiler_cache=True),
    )


def test_a_cell_compiled_without_ccache_says_how_to_get_one(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    # ccache is installed on this machine: a runner without it cannot exist here otherwise.
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "ccache" else real_which(name, *a, **k))
    log: list[str] = []
    build(c_extension_project(tmp_path / "p"), home, log)
    hints = [line for line in log if HINT in line]
    assert len(hints) == 1 and hints[0].startswith(f"cell c1: {HINT}")


@pytest.mark.skipif(shutil.which("ccache") is None, reason="needs ccache")
def test_a_cell_compiled_through_ccache_gives_no_hint(tmp_path: Path, home: Path) -> None:
    log: list[str] = []
    build(c_extension_project(tmp_path / "p"), home, log)
    assert not any(HINT in line for line in log)
    assert any("compiler cache: " in line and "compiles hit" in line for line in log)
