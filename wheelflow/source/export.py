"""The source a release is built from: exactly the project directory's tracked files at one commit.

Building in the user's checkout builds whatever happens to be there (uncommitted edits, untracked
files, a stale ``*.egg-info``, wheelflow's own ``.wheelflow``) and leaves build debris behind. So the
commit's files of the project directory (a monorepo subdirectory included) are exported with
``git archive`` into ``$WHEELFLOW_HOME/sources``, and every build works on a copy of that export.
Being git archive, it honours the ``export-ignore`` and ``export-subst`` attributes, and leaves out
submodules' files (a project that needs them is not supported yet).

What counts as dirty: a tracked file of the project directory that is modified, deleted or staged
relative to the commit. Such a working tree is refused before anything is built, unless the caller
allows it (``--allow-dirty``): then the tracked files are taken as they are in the working tree and
the source says ``dirty``. Untracked files are never built, dirty or not (they are in no commit, so
the release could not be rebuilt from its tag); they therefore do not make a tree dirty either. A
new file is released once it is committed (or ``git add``-ed, for a dirty build).

A directory that is not under git is copied without VCS metadata, build outputs, ``*.egg-info`` and
``$WHEELFLOW_HOME``.

A file that is a Git LFS pointer (git-lfs absent, or the object not pulled) is refused, naming it:
otherwise the release ships the pointer's few lines of text in place of the file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wheelflow.core.childenv import child_env
from wheelflow.core.errors import DirtySourceError, SourceError
from wheelflow.core.reproducible import canonical_mode

GIT, DIRECTORY = "git", "directory"
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".wheelflow",
        "__pycache__",
        "build",
        "dist",
        ".venv",
        ".tox",
        ".pytest_cache",
        ".mypy_cache",
    }
)
SHOWN_CHANGES = 5


@dataclass(frozen=True)
class Source:
    """What a release builds. ``path`` is a pristine export: builds copy it and never write into it."""

    path: Path
    project: Path  # the user's project directory, which builds never touch
    kind: str  # "git" or "directory"
    commit: str | None
    tree: str | None  # git's tree id of the project directory at ``commit``
    dirty: bool
    changed: tuple[str, ...]  # tracked files that differ from ``commit`` (only when dirty)
    date_epoch: int  # SOURCE_DATE_EPOCH: the commit's time; the newest file's for a dirty tree or a directory
    identity: str  # what the build cache keys on: the tree id when clean, else a digest of the files
    description: str  # one line for the report

    def json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "commit": self.commit,
            "tree": self.tree,
            "dirty": self.dirty,
            "changed": list(self.changed),
            "date_epoch": self.date_epoch,
            "description": self.description,
        }


def git_output(project: Path, *args: str) -> str | None:
    """git's stdout run in ``project``, or None when git fails (not a repository, no such object)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(project), *args], capture_output=True, text=True, check=True, env=child_env()
        )
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    return out.stdout


def resolve_commit(project: Path, revision: str = "HEAD") -> str | None:
    """The full commit id ``revision`` (a tag, HEAD, ...) names in the project's repository, if any."""
    out = git_output(project, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    return out.strip() if out else None


def _commit_and_tree(project: Path, revision: str) -> tuple[str | None, str | None]:
    """The commit ``revision`` names and git's tree id of the project directory in it (None: absent)."""
    commit = resolve_commit(project, revision)
    tree = git_output(project, "rev-parse", "--verify", "--quiet", f"{commit}:./") if commit else None
    return commit, tree.strip() if tree else None


def commit_time(project: Path, commit: str) -> int | None:
    out = git_output(project, "log", "-1", "--format=%ct", commit)
    return int(out) if out and out.strip().isdigit() else None


def changed_files(project: Path, commit: str) -> list[str]:
    """Tracked files of the project directory (relative to it) that differ from ``commit`` in the
    working tree or the index: modified, deleted, staged. Untracked files are not listed."""
    out = git_output(project, "diff", "--name-only", "--relative", "--no-renames", "-z", commit, "--")
    if out is None:
        raise SourceError(f"git cannot compare {project} with commit {commit[:12]}; fix: run `git status` there")
    return sorted(name for name in out.split("\0") if name)


def _inside(path: Path, directory: Path) -> str | None:
    """``path`` relative to ``directory`` when it lies inside it."""
    try:
        return path.resolve().relative_to(directory.resolve()).as_posix()
    except ValueError:
        return None


def _excluded(relative: str, home_inside: str | None) -> bool:
    return home_inside is not None and (relative == home_inside or relative.startswith(home_inside + "/"))


def tracked_files(project: Path, home: Path) -> list[str] | None:
    """The project directory's tracked files that exist in the working tree (relative posix paths),
    or None when git tracks nothing there (not a repository, or a directory outside its index)."""
    out = git_output(project, "ls-files", "-z", "--cached")
    if not out:
        return None
    home_inside = _inside(home, project)
    names = (n for n in dict.fromkeys(out.split("\0")) if n and not _excluded(n, home_inside))
    return sorted(n for n in names if (project / n).is_file() or (project / n).is_symlink())


def directory_files(project: Path, home: Path) -> list[str]:
    """Every file of a directory that is not under git, without VCS metadata, build outputs,
    ``*.egg-info`` and $WHEELFLOW_HOME."""
    home_resolved = home.resolve()
    files = []
    for root, dirs, names in os.walk(project):
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in SKIP_DIRS and not d.endswith(".egg-info") and Path(root, d).resolve() != home_resolved
        )
        files.extend(Path(root, n).relative_to(project).as_posix() for n in names)
    return sorted(files)


def export_files(export: Path) -> list[str]:
    """Every file of an export: it holds exactly what is built."""
    return sorted(p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file() or p.is_symlink())


def source_files(project: Path, home: Path) -> list[str]:
    """What a build of ``project`` takes: all of an export (under $WHEELFLOW_HOME/sources), else
    git's tracked files as they are on disk, else (not under git) every file but build debris."""
    if _inside(project, home / "sources") is not None:
        return export_files(project)
    tracked = tracked_files(project, home)
    return tracked if tracked is not None else directory_files(project, home)


def _files_digest(project: Path, files: list[str]) -> str:
    digest = hashlib.sha256()
    for name in files:
        path = project / name
        if path.is_symlink():
            content, executable = os.readlink(path).encode(), "l"
        else:
            content, executable = path.read_bytes(), "x" if os.access(path, os.X_OK) else "-"
        digest.update(f"{name}\0{executable}\0{hashlib.sha256(content).hexdigest()}\0".encode())
    return digest.hexdigest()


def _newest_mtime(project: Path, files: list[str]) -> int:
    return max((int((project / n).lstat().st_mtime) for n in files), default=0)


def _publish(staging: Path, final: Path) -> Path:
    """Move a finished export into place; another run that got there first wins (same content)."""
    try:
        os.rename(staging, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _staging(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".exporting-", dir=final.parent))


def _export_commit(project: Path, commit: str, home: Path, epoch: int) -> Path:
    final = home / "sources" / f"git-{commit[:20]}"
    if final.is_dir():  # exports are never written into: an earlier run's is this commit's
        return final
    staging = _staging(final)
    archive = staging.with_suffix(".tar")
    try:
        # From inside the project directory, git archive takes that subdirectory only, paths relative to it.
        proc = subprocess.run(
            ["git", "-C", str(project), "archive", "--format=tar", "-o", str(archive), commit],
            capture_output=True,
            text=True,
            env=child_env(),
        )
        if proc.returncode != 0:
            raise SourceError(
                f"git archive of commit {commit[:12]} in {project} failed: "
                f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}; fix: run `git status` there"
            )
        home_inside = _inside(home, project)
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if _excluded(member.name.rstrip("/"), home_inside):
                    continue
                if not (member.isfile() or member.isdir() or member.issym()):
                    continue
                if member.issym() and (
                    os.path.isabs(member.linkname)
                    or ".." in Path(member.linkname).parts
                    and not _inside(staging / Path(member.name).parent / member.linkname, staging)
                ):
                    raise SourceError(
                        f"{member.name} in commit {commit[:12]} is a link out of the project "
                        f"({member.linkname}); fix: make it a relative link inside the project"
                    )
                _extract(tar, member, staging, epoch)
                refuse_lfs_pointer(staging / member.name, member.name, f"commit {commit[:12]}")
        return _publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        archive.unlink(missing_ok=True)


#: How a Git LFS pointer file begins (the current spec, and the one it was first published under).
_LFS_POINTER_STARTS = (b"version https://git-lfs.github.com/spec/", b"version https://hawser.github.com/spec/")
_LFS_POINTER_MAX = 1024  # the spec keeps pointers under 1024 bytes


def refuse_lfs_pointer(path: Path, name: str, where: str) -> None:
    """SourceError when the file at ``path`` (``name`` in the project) is a Git LFS pointer: git-lfs did
    not put the real file there, and the release would ship the pointer's few lines of text instead."""
    if path.is_symlink() or not path.is_file() or path.stat().st_size >= _LFS_POINTER_MAX:
        return
    head = path.read_bytes()
    if head.startswith(_LFS_POINTER_STARTS) and b"\noid sha256:" in head:
        raise SourceError(
            f"{name} in {where} is a Git LFS pointer ({len(head)} bytes of text), not the file it stands for: "
            "git-lfs did not fetch it, and the release would ship the pointer; fix: install git-lfs and run "
            "`git lfs pull` where the release runs, or mark the file `export-ignore` in .gitattributes if the "
            "release does not need it"
        )


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, epoch: int) -> None:
    target = root / member.name
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if member.issym():
        target.symlink_to(member.linkname)
        return
    source = tar.extractfile(member)
    assert source is not None
    with source, open(target, "wb") as out:
        shutil.copyfileobj(source, out)
    target.chmod(canonical_mode(member.mode))
    os.utime(target, (epoch, epoch))


def _copy_files(project: Path, files: list[str], home: Path, name: str, epoch: int) -> Path:
    final = home / "sources" / name
    if final.is_dir():  # named by the files' digest: the same files
        return final
    for file in files:
        refuse_lfs_pointer(project / file, file, str(project))
    staging = _staging(final)
    try:
        copy_tree(project, files, staging, epoch)
        return _publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def copy_tree(source: Path, files: list[str], destination: Path, epoch: int | None = None) -> None:
    """Copy ``files`` (relative to ``source``) with modes 0644/0755, links as links, mtimes ``epoch``."""
    for name in files:
        origin, target = source / name, destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            target.symlink_to(os.readlink(origin))
            continue
        shutil.copyfile(origin, target)
        target.chmod(canonical_mode(origin.stat().st_mode))
        if epoch is not None:
            os.utime(target, (epoch, epoch))


def _changes_line(changed: list[str]) -> str:
    shown = ", ".join(changed[:SHOWN_CHANGES])
    return shown + (f" (+{len(changed) - SHOWN_CHANGES} more)" if len(changed) > SHOWN_CHANGES else "")


@contextlib.contextmanager
def _disk_space_named(home: Path) -> Iterator[None]:
    """A full disk while exporting is the runner's, with a fix: never a raw OSError."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise SourceError(
            f"No space left on device while exporting the source under {home}; fix: free space on the "
            f"disk of {home} (its builds/ and sources/ can be deleted) or set WHEELFLOW_HOME to a "
            "larger disk"
        ) from None


def prepare_source(project: Path, *, home: Path, commit: str | None = None, allow_dirty: bool = False) -> Source:
    """See :func:`_prepare_source`; a full disk under ``home`` is a SourceError naming the fix."""
    with _disk_space_named(home.absolute()):
        return _prepare_source(project, home=home, commit=commit, allow_dirty=allow_dirty)


def _prepare_source(project: Path, *, home: Path, commit: str | None = None, allow_dirty: bool = False) -> Source:
    """Export what is released from ``project``: ``commit``'s tracked files of the project directory
    (default HEAD), or the directory itself when git does not track it.

    Raises DirtySourceError, before anything is built, when tracked files differ from the commit,
    unless ``allow_dirty``: then the working tree's tracked files are exported, labelled dirty.
    """
    project = project.absolute()
    home = home.absolute()
    commit_id, tree = _commit_and_tree(project, commit or "HEAD")
    if commit is not None and commit_id is None:
        raise SourceError(
            f"commit {commit!r} is not in the repository of {project}; fix: fetch it, or release "
            "a commit that exists there"
        )
    if tree is None and tracked_files(project, home) is None:
        return _directory_source(project, home)  # not a repository, or a directory git does not track
    if commit_id is None or tree is None:
        raise SourceError(
            f"{project} is not in commit {commit_id[:12] if commit_id else 'HEAD'}; fix: commit the project first"
        )
    changed = changed_files(project, commit_id)
    if changed and not allow_dirty:
        raise DirtySourceError(
            f"the working tree of {project} differs from commit {commit_id[:12]}: {_changes_line(changed)}; "
            "fix: commit or stash the changes, or pass --allow-dirty to build the working tree (labelled dirty)"
        )
    if changed:
        return _dirty_source(project, home, commit_id, tree, changed)
    return commit_source(project, home=home, commit=commit_id)


def commit_source(project: Path, *, home: Path, commit: str) -> Source:
    """The export of ``commit``'s tracked files of the project directory, whatever the working tree
    holds (a backfill of an old tag, or a cell built on a runner whose checkout is elsewhere)."""
    project, home = project.absolute(), home.absolute()
    commit_id, tree = _commit_and_tree(project, commit)
    if commit_id is None or tree is None:
        raise SourceError(
            f"commit {commit!r} of {project} is not there, or holds no project directory; fix: fetch "
            "it, or name a commit that contains the project"
        )
    epoch = commit_time(project, commit_id) or 0
    with _disk_space_named(home):
        path = _export_commit(project, commit_id, home, epoch)
    return Source(
        path=path,
        project=project,
        kind=GIT,
        commit=commit_id,
        tree=tree,
        dirty=False,
        changed=(),
        date_epoch=epoch,
        identity=f"git-tree:{tree}",
        description=f"git commit {commit_id[:12]} (tree {tree[:12]}), tracked files only",
    )


def _dirty_source(project: Path, home: Path, commit: str, tree: str, changed: list[str]) -> Source:
    files = tracked_files(project, home) or []
    digest = _files_digest(project, files)
    epoch = _newest_mtime(project, files)
    return Source(
        path=_copy_files(project, files, home, f"dirty-{digest[:20]}-{epoch}", epoch),
        project=project,
        kind=GIT,
        commit=commit,
        tree=tree,
        dirty=True,
        changed=tuple(changed),
        date_epoch=epoch,
        identity=f"files:{digest}",
        description=f"git commit {commit[:12]} with uncommitted changes (dirty): {_changes_line(changed)}",
    )


def _directory_source(project: Path, home: Path) -> Source:
    files = directory_files(project, home)
    if not files:
        raise SourceError(f"{project} holds no files to build; fix: check the project path")
    digest = _files_digest(project, files)
    epoch = _newest_mtime(project, files)
    return Source(
        path=_copy_files(project, files, home, f"directory-{digest[:20]}-{epoch}", epoch),
        project=project,
        kind=DIRECTORY,
        commit=None,
        tree=None,
        dirty=False,
        changed=(),
        date_epoch=epoch,
        identity=f"files:{digest}",
        description="directory, not under version control",
    )


def source_identity(project: Path, *, home: Path) -> str:
    """What ``prepare_source(project, home=home, allow_dirty=True).identity`` would be, without
    exporting: the tree id of HEAD's project directory when the tracked files match it, else a
    digest of the files a build takes (never untracked files, never $WHEELFLOW_HOME)."""
    project, home = project.absolute(), home.absolute()
    commit, tree = _commit_and_tree(project, "HEAD")
    if commit is not None and tree is not None and not changed_files(project, commit):
        return f"git-tree:{tree}"
    return f"files:{_files_digest(project, source_files(project, home))}"
