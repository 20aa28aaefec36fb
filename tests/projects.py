"""Projects the tests (and bench/bench_matrix.py) release: made on disk, fast to build."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_matrix_project(root: Path, cells: int, concurrency: int, seconds: float) -> Path:
    (root / "src" / "bench_cell").mkdir(parents=True)
    (root / "src" / "bench_cell" / "__init__.py").write_text("VALUE = 1\n")
    (root / "README.md").write_text("# bench-cell\n\nA fixed-cost cell for wheelflow's matrix benchmark.\n")
    (root / "setup.py").write_text(
        textwrap.dedent(f"""
        import os, time
        from setuptools import setup
        from setuptools.command.build_py import build_py

        class FixedCost(build_py):
            def run(self):
                time.sleep({seconds})  # the cell's fixed cost
                super().run()

        local = os.environ.get("WHEELFLOW_LOCAL_VERSION")
        setup(version="1.0.0" + (f"+{{local}}" if local else ""), cmdclass={{"build_py": FixedCost}})
        """)
    )
    values = ", ".join(f'"{i}"' for i in range(1, cells + 1))
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "bench-cell"
        dynamic = ["version"]
        readme = "README.md"
        description = "benchmark cell"

        [tool.setuptools.packages.find]
        where = ["src"]

        [tool.wheelflow]
        artifacts = ["wheel"]
        smoke = "python -c 'import bench_cell'"

        [tool.wheelflow.version]
        tag = "v{{version}}"

        [tool.wheelflow.matrix]
        axes = {{ python = ["3.11"], n = [{values}] }}
        image = "wheelflow/builder:py{{python}}"
        runtime-image = "wheelflow/runtime:py{{python}}"
        local-version = "c{{n}}"
        concurrency = {concurrency}
        """)
    )
    return root
