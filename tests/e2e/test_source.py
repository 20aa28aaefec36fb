"""What is built is exactly the release commit, and it builds to the same bytes anywhere.

Real git repositories made here, real pypa/build builds of a small setuptools project, real twine.
"""

from __future__ import annotations

import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import git, make_project

from wheelflow.builds.building import build_distributions, source_digest
from wheelflow.core.distributions import twine_check
from wheelflow.core.errors import DirtySourceError
from wheelflow.source.export import prepare_source, source_identity

COMMIT_DATE = "2026-03-01T12:00:00+00:00"
COMMIT_EPOCH = 1772366400


def committed_project(root: Path) -> Path:
    project = make_project(root)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "release", date=COMMIT_DATE)
    return project


def build(source, home: Path):
    return build_distributions(
        source, name="tiny-pkg", version="1.0.0", artifacts=("sdist", "wheel"), env={}, home=home, log=lambda line: None
    )


def leftovers(project: Path) -> list[str]:
    """Build debris in the user's checkout."""
    return sorted(
        p.relative_to(project).as_posix()
        for p in project.rglob("*")
        if p.name.endswith(".egg-info") or p.name in ("build", "dist")
    )


def test_a_changed_tracked_file_is_refused_naming_it_and_untracked_files_do_not_count(tmp_path: Path) -> None:
    project = committed_project(tmp_path / "proj")
    (project / "notes.txt").write_text("untracked: never built, so no reason to refuse\n")
    assert not prepare_source(project, home=tmp_path / "home").dirty

    (project / "README.md").write_text("# edited after the commit\n")
    (project / "src" / "tiny_pkg" / "__init__.py").unlink()
    with pytest.raises(DirtySourceError) as refused:
        prepare_source(project, home=tmp_path / "home")
    message = str(refused.value)
    assert "\n" not in message
    assert "differs from commit" in message and "README.md, src/tiny_pkg/__init__.py;" in message
    assert "notes.txt" not in message
    assert "fix: commit or stash the changes, or pass --allow-dirty" in message
    assert not (tmp_path / "home" / "builds").exists()  # refused before anything was built


def test_the_refusal_names_five_files_and_counts_the_rest(tmp_path: Path) -> None:
    project = committed_project(tmp_path / "proj")
    for n in range(7):
        (project / f"m{n}.py").write_text("")
    git(project, "add", "-A")  # staged, not committed: dirty too
    with pytest.raises(DirtySourceError, match=r": m0\.py, m1\.py, m2\.py, m3\.py, m4\.py \(\+2 more\); fix"):
        prepare_source(project, home=tmp_path / "home")


def test_allow_dirty_builds_the_working_tree_and_labels_it_dirty(tmp_path: Path) -> None:
    project = committed_project(tmp_path / "proj")
    init = project / "src" / "tiny_pkg" / "__init__.py"
    init.write_text(init.read_text().replace("42", "43"))

    source = prepare_source(project, home=tmp_path / "home", allow_dirty=True)
    assert source.dirty and source.changed == ("src/tiny_pkg/__init__.py",)
    assert source.description.startswith(f"git commit {source.commit[:12]} with uncommitted changes (dirty)")
    assert source.identity.startswith("files:")  # not the commit's tree: other bytes, another cache entry

    result = build(source, tmp_path / "home")
    wheel = next(d for d in result.dists if d.kind == "wheel")
    with zipfile.ZipFile(wheel.path) as zf:
        assert "return 43" in zf.read("tiny_pkg/__init__.py").decode()
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert manifest["source"]["dirty"] is True and manifest["source"]["changed"] == ["src/tiny_pkg/__init__.py"]
    assert leftovers(project) == []


def test_one_commit_builds_byte_identical_files_from_two_checkouts_and_two_homes(tmp_path: Path) -> None:
    first = committed_project(tmp_path / "a" / "proj")
    second = tmp_path / "elsewhere" / "clone"
    git(tmp_path, "clone", "-q", str(first), str(second))
    # The second checkout differs in everything a checkout may differ in: file times and modes.
    os.utime(second / "README.md", (1_000_000_000, 1_000_000_000))
    (second / "src" / "tiny_pkg" / "__init__.py").chmod(0o664)
    git(second, "config", "core.fileMode", "false")

    one = build(prepare_source(first, home=tmp_path / "home-1"), tmp_path / "home-1")
    umask = os.umask(0o002)  # and the second build runs under another umask
    try:
        two = build(prepare_source(second, home=tmp_path / "home-2"), tmp_path / "home-2")
    finally:
        os.umask(umask)

    assert {d.filename: d.sha256 for d in one.dists} == {d.filename: d.sha256 for d in two.dists}
    assert not two.cached  # built twice, not found in a shared cache
    sdist = next(d.path for d in one.dists if d.kind == "sdist")
    raw = sdist.read_bytes()
    assert raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0"  # gzip: no file name, mtime 0
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert max(m.mtime for m in members) <= COMMIT_EPOCH
    assert {m.mode for m in members} <= {0o644, 0o755}
    assert twine_check([d.path for d in one.dists]) == []


def test_a_project_in_a_monorepo_subdirectory_is_exported_and_built_alone(tmp_path: Path) -> None:
    repo = tmp_path / "mono"
    repo.mkdir()
    (repo / "README.md").write_text("# the monorepo\n")
    (repo / "tools").mkdir()
    (repo / "tools" / "lint.py").write_text("")
    project = make_project(repo / "python" / "tiny")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "release", date=COMMIT_DATE)

    source = prepare_source(project, home=tmp_path / "home")
    assert source.tree == git(repo, "rev-parse", "HEAD:python/tiny").strip()
    assert source.date_epoch == COMMIT_EPOCH
    exported = sorted(p.relative_to(source.path).as_posix() for p in source.path.rglob("*") if p.is_file())
    assert exported == ["README.md", "pyproject.toml", "src/tiny_pkg/__init__.py"]
    assert (source.path / "README.md").read_text().startswith("# tiny-pkg")  # the project's, not the repo's

    (repo / "tools" / "lint.py").write_text("changed outside the project: not this release's business\n")
    assert not prepare_source(project, home=tmp_path / "home").dirty
    result = build(source, tmp_path / "home")
    assert sorted(d.filename for d in result.dists) == ["tiny_pkg-1.0.0-py3-none-any.whl", "tiny_pkg-1.0.0.tar.gz"]
    assert leftovers(repo) == []


def test_building_a_checkout_leaves_no_egg_info_and_the_cache_ignores_untracked_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = committed_project(tmp_path / "proj")
    home = project / ".wheelflow"  # the default WHEELFLOW_HOME when run from the project: inside it
    monkeypatch.setenv("WHEELFLOW_HOME", str(home))
    identity = source_digest(project)
    assert identity == "git-tree:" + git(project, "rev-parse", "HEAD^{tree}").strip()

    first = build(project, home)  # a path, as the release flow passes today
    assert not first.cached
    assert leftovers(project) == []
    assert git(project, "status", "--porcelain", "--untracked-files=all", "--", ".", ":!.wheelflow") == ""

    (project / "scratch.py").write_text("print('not committed')\n")
    (project / "src" / "tiny_pkg.egg-info").mkdir()
    (project / "src" / "tiny_pkg.egg-info" / "PKG-INFO").write_text("stale\n")
    assert source_digest(project) == identity
    again = build(project, home)
    assert again.cached and again.cache_key == first.cache_key

    (project / "README.md").write_text("# changed\n")
    assert source_digest(project) != identity


def test_a_directory_not_under_git_is_built_without_its_debris_or_wheelflow_home(tmp_path: Path) -> None:
    project = make_project(tmp_path / "plain")
    home = project / ".wheelflow"
    (project / "build" / "lib").mkdir(parents=True)
    (project / "build" / "lib" / "stale.py").write_text("")

    source = prepare_source(project, home=home)
    assert (source.kind, source.commit, source.description) == (
        "directory",
        None,
        "directory, not under version control",
    )
    exported = sorted(p.relative_to(source.path).as_posix() for p in source.path.rglob("*") if p.is_file())
    assert exported == ["README.md", "pyproject.toml", "src/tiny_pkg/__init__.py"]
    assert source.path.is_relative_to(home)

    result = build(source, home)
    assert result.dists and leftovers(project) == ["build"]  # only what was there before
    assert source_identity(project, home=home) == source.identity  # home's new content does not count


def test_the_release_commit_is_the_tags_commit_and_the_tree_is_compared_with_it(tmp_path: Path) -> None:
    from wheelflow.config.spec import load_spec
    from wheelflow.source.versioning import resolve_version

    project = committed_project(tmp_path / "proj")
    git(project, "tag", "-a", "v1.0.0", "-m", "v1.0.0")  # annotated: its own object id is not the commit's
    resolved = resolve_version(load_spec(project))
    assert resolved.commit == git(project, "rev-parse", "HEAD").strip() != git(project, "rev-parse", "v1.0.0").strip()
    assert resolved.commit_time == COMMIT_EPOCH
    assert prepare_source(project, home=tmp_path / "home", commit=resolved.commit).commit == resolved.commit

    (project / "README.md").write_text("# after the release\n")
    git(project, "commit", "-qam", "later")
    with pytest.raises(DirtySourceError, match=f"differs from commit {resolved.commit[:12]}: README.md;"):
        prepare_source(project, home=tmp_path / "home", commit=resolved.commit)
    assert resolve_version(load_spec(make_project(tmp_path / "plain"))).commit is None
