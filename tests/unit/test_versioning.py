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
        "version mismatch: tag v1.3.0 (version.tag 'v{version}') says 1.3.0 but pyproject.toml (version.file) "
        "says 1.2.0; fix: make the tag, the version file and --version agree before releasing (version.tag "
        "'v{version}' reads the tag; a post-release re-tag of an unchanged version, e.g. v1.2.0.post1, is accepted)"
    )


def test_requested_version_must_agree_with_the_file(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0", None)
    with pytest.raises(
        VersionError, match=r"^version mismatch: --version says 2\.0 but pyproject\.toml \(version\.file\) says 1\.2\.0"
    ):
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


# ---- post-release re-tags: an upstream release tagged again, its version file unchanged ----


def test_a_post_release_retag_of_an_unchanged_version_releases_the_tags_version(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0", "v1.2.0.post1")
    resolved = resolve_version(load_spec(project))
    assert (resolved.version, resolved.tag) == ("1.2.0.post1", "v1.2.0.post1")
    assert resolved.sources == {"tag v1.2.0.post1": "1.2.0.post1", "pyproject.toml": "1.2.0 (re-tagged as 1.2.0.post1)"}
    assert resolve_version(load_spec(project), "1.2.0.post1").version == "1.2.0.post1"
    with pytest.raises(
        VersionError, match=r"^version mismatch: --version says 1\.2\.0 but tag v1\.2\.0\.post1 \(version\.tag"
    ):
        resolve_version(load_spec(project), "1.2.0")


def test_a_retag_spelled_with_a_dash_is_a_post_release_too(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0", "v1.2.0-1")  # PEP 440 reads 1.2.0-1 as 1.2.0.post1
    assert resolve_version(load_spec(project)).version == "1.2.0.post1"


def test_the_retag_supersedes_the_original_tag_on_the_same_commit(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0", "v1.2.0")
    git(project, "tag", "-a", "v1.2.0.post1", "-m", "re-tag")
    git(project, "tag", "-a", "v1.2.0.post2", "-m", "re-tag again")
    resolved = resolve_version(load_spec(project))
    assert (resolved.version, resolved.tag) == ("1.2.0.post2", "v1.2.0.post2")


def test_a_retag_on_a_later_commit_over_the_unchanged_file(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0", "v1.2.0")
    (project / "FIX").write_text("a packaging fix, the version file unchanged\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "packaging fix")
    git(project, "tag", "-a", "v1.2.0.post1", "-m", "re-tag")
    resolved = resolve_version(load_spec(project))
    assert (resolved.version, resolved.tag) == ("1.2.0.post1", "v1.2.0.post1")


@pytest.mark.case(
    "bad input",
    "a post-release tag over another version than the version file's",
    "refused before the build, naming version.tag and the re-tag it would accept",
)
def test_a_post_tag_of_another_version_is_still_a_mismatch_naming_version_tag(tmp_path: Path) -> None:
    for file_version, tag in (
        ("1.2.0", "v1.3.0.post1"),
        ("1.2.0.post1", "v1.2.0.post2"),
        ("1.2.0", "v1.2.0.post1.dev1"),
    ):
        project = tagged_project(tmp_path / tag, file_version, tag)
        with pytest.raises(VersionError) as err:
            resolve_version(load_spec(project))
        assert f"version mismatch: tag {tag} (version.tag 'v{{version}}') says" in str(err.value)
        assert "a post-release re-tag of an unchanged version, e.g. v" in str(err.value)


@pytest.mark.case(
    "bad input",
    "a commit with no tag released as a final version while version.tag is set",
    "refused before the build, naming the tag to create and --dev",
)
def test_a_commit_without_its_tag_is_not_released_as_a_final_version(tmp_path: Path) -> None:
    project = tagged_project(tmp_path, "1.2.0", None)
    for requested in (None, "1.2.0"):
        with pytest.raises(VersionError) as err:
            resolve_version(load_spec(project), requested)
        assert str(err.value) == (
            f"HEAD {git(project, 'rev-parse', 'HEAD')[:12]} has no tag matching version.tag 'v{{version}}', and a "
            "final release is built from its tagged commit; fix: tag it (git tag v1.2.0, then push the tag) and "
            "release again, or release a development build with --dev (version.require-tag = false releases "
            "untagged commits)"
        )
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        text.replace('file = "pyproject.toml"', 'file = "pyproject.toml"\nrequire-tag = false')
    )
    git(project, "commit", "-qam", "untagged commits release too")
    assert resolve_version(load_spec(project)).version == "1.2.0"  # the opt-out, as examples/hello-cuda sets it
    git(project, "checkout", "-q", "HEAD~1")
    git(project, "tag", "v1.2.0")  # lightweight tags count as well
    assert resolve_version(load_spec(project)).tag == "v1.2.0"


def test_a_project_not_under_git_has_no_tag_to_ask_for(tmp_path: Path) -> None:
    assert resolve_version(load_spec(make_project(tmp_path / "plain", version="1.2.0"))).version == "1.2.0"
