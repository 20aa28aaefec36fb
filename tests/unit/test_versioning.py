"""The release version: tag, version file and --version must agree, or nothing is built."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import git, make_project

from wheelflow.config.spec import load_spec
from wheelflow.core.errors import VersionError
from wheelflow.source.versioning import resolve_version


def tagged_project(tmp_path: Path, file_version: str, tag: str | None) -> Path:
    project = make_project(tmp_path / "p", version=file_version)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "release", date="2026-03-01T12:00:00+00:00")
    if tag:
        git(project, "tag", "-a", tag, "-m", tag)
    return project


def test_tag_and_version_file_agree(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0", "v1.2.0")
    resolved = resolve_version(load_spec(project))
    assert resolved.version == "1.2.0"
    assert resolved.tag == "v1.2.0"
    assert resolved.sources == {"tag v1.2.0": "1.2.0", "pyproject.toml": "1.2.0"}
    assert resolved.commit_time == 1772366400  # 2026-03-01T12:00:00Z: the build's SOURCE_DATE_EPOCH


def test_tag_version_mismatch_is_refused(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0", "v1.3.0")
    with pytest.raises(VersionError) as err:
        resolve_version(load_spec(project))
    assert str(err.value) == (
        "version mismatch: tag v1.3.0 says 1.3.0 but pyproject.toml says 1.2.0; "
        "fix: make the tag, the version file and --version agree before releasing"
    )


def test_requested_version_must_agree_with_the_file(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0", None)
    with pytest.raises(VersionError, match=r"^version mismatch: --version says 2\.0 but pyproject\.toml says 1\.2\.0"):
        resolve_version(load_spec(project), "2.0")


@pytest.mark.case(
    "bad input", "a version that is not PEP 440", "refused before the build, naming the source and the value"
)
def test_non_pep440_version_is_refused(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0", None)
    with pytest.raises(VersionError) as err:
        resolve_version(load_spec(project), "1.2-final-final")
    assert str(err.value) == (
        "--version: '1.2-final-final' is not a PEP 440 version; fix: use a form like 1.2.3, 1.2.3rc1 or 1.2.3.post1"
    )


def test_tag_of_this_version_elsewhere_than_head_is_refused(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0", "v1.2.0")
    (project / "CHANGES").write_text("after the tag\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "after the tag")
    with pytest.raises(VersionError, match=r"^version mismatch: tag v1\.2\.0 points at [0-9a-f]{12}, not at HEAD"):
        resolve_version(load_spec(project))


def test_normalised_versions_compare_equal(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0rc1", "v1.2.0-rc.1")
    assert resolve_version(load_spec(project)).version == "1.2.0rc1"
