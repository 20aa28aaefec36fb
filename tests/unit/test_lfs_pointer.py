"""A tracked Git LFS pointer never ships as its text: the export refuses it, naming the file and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import git, make_project

from wheelflow.core.errors import SourceError
from wheelflow.source.export import prepare_source

POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 12345\n"
)


@pytest.mark.case(
    "bad input",
    "a tracked Git LFS pointer file in the export",
    "refused before the build naming the file and the fix (git lfs pull, or export-ignore)",
)
def test_a_tracked_lfs_pointer_is_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    (project / "src" / "tiny_pkg" / "weights.bin").write_text(POINTER)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "release")
    commit = git(project, "rev-parse", "HEAD").strip()
    with pytest.raises(SourceError) as err:
        prepare_source(project, home=tmp_path / "home")
    assert str(err.value) == (
        f"src/tiny_pkg/weights.bin in commit {commit[:12]} is a Git LFS pointer (130 bytes of text), not the file it "
        "stands for: git-lfs did not fetch it, and the release would ship the pointer; fix: install git-lfs and run "
        "`git lfs pull` where the release runs, or mark the file `export-ignore` in .gitattributes if the release "
        "does not need it"
    )
    assert not list((tmp_path / "home" / "sources").glob("git-*"))  # no export left to be reused

    # The fix named: export-ignore keeps it out of the export, and the release builds.
    (project / ".gitattributes").write_text("src/tiny_pkg/weights.bin export-ignore\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "weights stay out of the release")
    source = prepare_source(project, home=tmp_path / "home")
    assert not (source.path / "src" / "tiny_pkg" / "weights.bin").exists()

    # A working tree built with --allow-dirty, and a directory not under git, are read the same way.
    (project / "README.md").write_text("changed\n")
    (project / ".gitattributes").unlink()
    git(project, "add", "-A")
    with pytest.raises(SourceError, match=r"^src/tiny_pkg/weights\.bin in .* is a Git LFS pointer"):
        prepare_source(project, home=tmp_path / "home", allow_dirty=True)


def test_a_file_that_only_mentions_lfs_is_not_a_pointer(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    (project / "NOTES.md").write_text("version https://git-lfs.github.com/spec/v1 is the pointer format\n")
    assert (prepare_source(project, home=tmp_path / "home").path / "NOTES.md").is_file()
