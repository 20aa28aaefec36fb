"""The version a build will produce is read before anything compiles (PEP 517's metadata hook in the
build environment, or the sdist's PKG-INFO): a release whose build would stamp another version is
refused in seconds, naming both versions and the fix, never after a long compile."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from wheelflow.builds.builders.local import LocalBuilder
from wheelflow.builds.building import build_distributions
from wheelflow.builds.cells import build_cell_wheel
from wheelflow.config.matrix import Cell
from wheelflow.core.errors import BuildError

#: Printed by the project's compile step: never seen when the version is refused before it.
COMPILING = "RETAG-PKG-COMPILING"


def version_file_project(root: Path, *, stamps_release_version: bool) -> Path:
    """A setup.py project that reads its own version file, as upstream projects do; with
    ``stamps_release_version`` it takes WHEELFLOW_RELEASE_VERSION first, as the docs ask."""
    (root / "retag_pkg").mkdir(parents=True)
    (root / "retag_pkg" / "__init__.py").write_text("")
    (root / "retag_pkg" / "version.py").write_text('__version__ = "1.2.0"\n')
    stamped = 'os.environ.get("WHEELFLOW_RELEASE_VERSION") or ' if stamps_release_version else ""
    (root / "setup.py").write_text(
        textwrap.dedent(f"""
        import os, re
        from setuptools import setup
        from setuptools.command.build_py import build_py

        class Compile(build_py):
            def run(self):
                print("{COMPILING}", flush=True)  # stands for a long nvcc compile
                super().run()

        written = re.search(r'"(.+)"', open("retag_pkg/version.py").read()).group(1)
        setup(name="retag-pkg", version={stamped}written, packages=["retag_pkg"], cmdclass={{"build_py": Compile}})
        """)
    )
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    return root


def build(project: Path, home: Path, artifacts: tuple[str, ...], log: list[str]):
    return build_distributions(
        project,
        name="retag-pkg",
        version="1.2.0.post2",  # the tag v1.2.0.post2 re-releases the file's 1.2.0
        artifacts=artifacts,
        env={"WHEELFLOW_RELEASE_VERSION": "1.2.0.post2"},
        home=home,
        log=log.append,
    )


@pytest.mark.case(
    "bad input",
    "a post-release re-tag over a build that stamps its version file's version",
    "refused before the compile, naming both versions and how to stamp the release's",
)
def test_a_wheel_that_would_carry_the_version_files_version_is_refused_before_it_compiles(
    tmp_path: Path, home: Path
) -> None:
    project = version_file_project(tmp_path / "p", stamps_release_version=False)
    log: list[str] = []
    with pytest.raises(BuildError) as refused:
        build(project, home, ("wheel",), log)
    message = str(refused.value)
    assert "\n" not in message
    assert "the build would produce version 1.2.0, the release is 1.2.0.post2" in message
    assert "fix: make the build stamp WHEELFLOW_RELEASE_VERSION" in message
    assert not any(COMPILING in line for line in log)


@pytest.mark.case(
    "bad input",
    "the sdist carries another version than the release",
    "refused before any wheel is built, naming the sdist's version and the release's",
)
def test_the_sdists_version_is_checked_before_any_wheel_builds(tmp_path: Path, home: Path) -> None:
    project = version_file_project(tmp_path / "p", stamps_release_version=False)
    log: list[str] = []
    with pytest.raises(BuildError) as refused:
        build(project, home, ("sdist", "wheel"), log)
    assert "sdist retag_pkg-1.2.0.tar.gz: its PKG-INFO says version 1.2.0, the release is 1.2.0.post2" in str(
        refused.value
    )
    assert not any(COMPILING in line for line in log)


def test_a_build_that_stamps_the_release_version_builds_the_re_tag(tmp_path: Path, home: Path) -> None:
    project = version_file_project(tmp_path / "p", stamps_release_version=True)
    log: list[str] = []
    result = build(project, home, ("sdist", "wheel"), log)
    assert sorted(d.filename for d in result.dists) == [
        "retag_pkg-1.2.0.post2-py3-none-any.whl",
        "retag_pkg-1.2.0.post2.tar.gz",
    ]
    assert any(COMPILING in line for line in log)


@pytest.mark.case(
    "bad input",
    "a matrix cell whose build would stamp another version",
    "refused before the cell compiles, naming both versions",
)
def test_a_cell_is_refused_before_it_compiles_and_names_the_version_it_would_build(tmp_path: Path, home: Path) -> None:
    project = version_file_project(tmp_path / "p", stamps_release_version=False)
    log: list[str] = []
    with pytest.raises(BuildError) as refused:
        build_cell_wheel(
            LocalBuilder(),
            Cell("c1", {}),
            project=project,
            source_digest="tree-1",
            name="retag-pkg",
            version="1.2.0.post2",
            build_env={},
            home=home,
            log=log.append,
            labels={},
        )
    assert str(refused.value).startswith(
        "cell c1: the build would produce version 1.2.0, the release is 1.2.0.post2; the release 1.2.0.post2 "
        "re-tags 1.2.0"
    )
    assert not any(COMPILING in line for line in log)


@pytest.mark.case(
    "bad input",
    "wheelflow release of a post-release tag over a build that stamps the version file's version",
    "refused when the sdist is built, before any wheel, in one line with the fix (exit 1)",
)
def test_a_release_of_a_re_tag_is_refused_at_the_sdist_before_any_wheel(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    import json

    from conftest import git, make_project, run_cli

    project = make_project(tmp_path / "proj", version="1.2.0", index_url=index.simple_url)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "release")
    git(project, "tag", "v1.2.0.post2")
    result = run_cli("release", str(project), "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1, result.stderr[-3000:]
    assert report["error"].startswith(
        "sdist tiny_pkg-1.2.0.tar.gz: its PKG-INFO says version 1.2.0, the release is 1.2.0.post2; the release "
        "1.2.0.post2 re-tags 1.2.0"
    )
    assert "fix: make the build stamp WHEELFLOW_RELEASE_VERSION" in report["error"]
    assert "Traceback" not in result.stderr
    assert list(home.rglob("*.whl")) == [] and list(index.packages.iterdir()) == []


@pytest.mark.case(
    "bad input",
    "a Docker cell whose build would stamp another version",
    "refused in its container before the compile, naming both versions",
)
def test_a_docker_cell_is_refused_before_it_compiles(tmp_path: Path, home: Path, docker_images) -> None:
    from wheelflow.builds.builders.docker import DockerBuilder

    project = version_file_project(tmp_path / "p", stamps_release_version=False)
    log: list[str] = []
    with pytest.raises(BuildError) as refused:
        build_cell_wheel(
            DockerBuilder(),
            Cell("c1", {"python": "3.11"}, image="wheelflow/builder:py3.11", runtime_image="wheelflow/runtime:py3.11"),
            project=project,
            source_digest="tree-1",
            name="retag-pkg",
            version="1.2.0.post2",
            build_env={},
            home=home,
            log=log.append,
            labels={},
        )
    assert str(refused.value).startswith("cell c1: the build would produce version 1.2.0, the release is 1.2.0.post2")
    assert not any(COMPILING in line for line in log)


def test_a_docker_cell_that_stamps_the_release_version_builds(tmp_path: Path, home: Path, docker_images) -> None:
    from wheelflow.builds.builders.docker import DockerBuilder

    project = version_file_project(tmp_path / "p", stamps_release_version=True)
    log: list[str] = []
    built = build_cell_wheel(
        DockerBuilder(),
        Cell("c1", {"python": "3.11"}, image="wheelflow/builder:py3.11", runtime_image="wheelflow/runtime:py3.11"),
        project=project,
        source_digest="tree-1",
        name="retag-pkg",
        version="1.2.0.post2",
        build_env={},
        home=home,
        log=log.append,
        labels={},
    )
    assert built.wheel.filename == "retag_pkg-1.2.0.post2-py3-none-any.whl"
    assert any(COMPILING in line for line in log)
    assert not (built.wheel.path.parent / ".wheelflow-planned-version").exists()
