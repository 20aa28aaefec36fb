"""A static PEP 503 index that wheelflow writes itself, to any fsspec URL, for installers to read over HTTP.

This is where CUDA projects really publish their variant wheels: per-variant sub-indexes on object
storage or a web server's directory (``whl/sm80/``, ``whl/cu130/``), read with ``--index-url``.
Every page carries what resolvers need to avoid downloading whole wheels: ``#sha256=`` fragments,
``data-requires-python``, and PEP 658/714 core metadata (a ``FILE.metadata`` sidecar plus
``data-core-metadata``/``data-dist-info-metadata``).

Layout under the store root, for project ``hello-cuda`` and ``layout = "{local_version}"``::

    index.html                          root project list (the plain index)
    hello-cuda/index.html               sdist and plain wheels (always listed at the root)
    hello-cuda/hello_cuda-0.1.0.tar.gz
    sm90/index.html                     the sm90 sub-index's project list
    sm90/hello-cuda/index.html          its wheels, plus the shared files with shared-files = "every-subindex"
    sm90/hello-cuda/hello_cuda-0.1.0+sm90-cp311-cp311-manylinux_2_34_x86_64.whl
    sm90/hello-cuda/hello_cuda-0.1.0+sm90-cp311-cp311-manylinux_2_34_x86_64.whl.metadata

Each file is stored once; a sub-index page links the shared files at the root with a relative href.
Publishing writes files, then sidecars, then project pages, then root pages, so a page never links
a file that is not there yet; pages are merged with what they already list and replaced atomically.
No Prefect here: the release flow wraps these functions in tasks (and a per-project lock).
"""

from __future__ import annotations

import email.parser
import hashlib
import html
import os
import posixpath
import re
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from wheelflow.checks.audits import read_metadata
from wheelflow.config.staticlayout import DEFAULT_LAYOUT, check_layout, check_public_url, check_store_url
from wheelflow.core.distributions import Distribution, parse_filename
from wheelflow.core.errors import StaticIndexError
from wheelflow.core.redaction import redact_url
from wheelflow.index.simple_api import _AnchorParser

SHARED_FILES = ("every-subindex", "root")
PAGE = "index.html"
# Pages must be served as HTML: pip skips a Simple API page of any other content type. A plain
# S3 PUT would store binary/octet-stream, so the S3 write says so explicitly.
_HTML = "text/html; charset=utf-8"
_CONTENT_TYPE_KWARGS = {"s3": "ContentType", "s3a": "ContentType"}


@dataclass(frozen=True)
class StaticFile:
    """One file the index lists after a publication."""

    filename: str
    subindex: str  # "" for the root index; shared files are stored at the root
    path: str  # relative to the store root
    sha256: str


@dataclass(frozen=True)
class StaticIndexWrite:
    """What one publish_static call did, enough to verify it and to undo it exactly.

    Holds no credentials: rollback_static takes the storage options again.
    """

    store_url: str
    public_url: str
    files: tuple[StaticFile, ...]
    # Relative store paths this run created (distribution files and sidecars), in write order.
    added: tuple[str, ...] = ()
    # Each project page written, with the file names this run added to it (listed before: not ours).
    project_pages: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Each project list (a sub-index's index.html) written, with the projects this run added to it.
    list_pages: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Sub-index ("" for the root) -> the files it lists for this run.
    listed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def pages(self) -> tuple[str, ...]:
        """Every page this run wrote, in write order."""
        return tuple(path for path, _ in (*self.project_pages, *self.list_pages))

    def simple_url(self, subindex: str = "") -> str:
        """The Simple API URL installers use for a sub-index (``--index-url``)."""
        return join_url(self.public_url, subindex) + "/"


def subindex_for(filename: str, layout: str = DEFAULT_LAYOUT) -> str:
    """The sub-index a file belongs to: the layout filled from its local version label, or "" (the
    root) for the sdist and plain wheels, which carry none."""
    parsed = parse_filename(filename)
    if parsed is None:
        raise StaticIndexError(f"{filename} is not a wheel or sdist filename; fix: publish built distributions")
    local = parsed[1].local
    return layout.format(local_version=local) if local else ""


#: Schemes whose store is a folder on this machine (fsspec's local file system).
_LOCAL_PROTOCOLS = (None, "file", "local")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def store_location(store_url: str) -> str:
    """The one name of the store ``store_url`` writes to, whatever its spelling: what its lock and
    identity are keyed by. Two spellings of one store under two locks would let two releases merge
    its root page at once, and one project's entry would be lost.

    A folder on this machine (a plain path, ``file://``, ``local://``) is its resolved real path:
    ``file:///x/store``, a symlink to it, ``/x/./store`` and ``//x/store`` are one store. Any other
    URL is normalised: scheme and host lowercased, a default port dropped, dot segments and
    duplicate or trailing slashes removed."""
    from fsspec.core import split_protocol
    from fsspec.implementations.local import LocalFileSystem

    protocol, _path = split_protocol(store_url)
    if protocol in _LOCAL_PROTOCOLS:
        # fsspec's own reading of the URL (file://x/store is relative, as where fsspec writes it)
        return os.path.realpath(LocalFileSystem._strip_protocol(store_url))
    parts = urlsplit(store_url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    netloc = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:  # not a number: kept as written (the store says so where it is opened)
        netloc, port = parts.netloc.lower(), None
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    path = posixpath.normpath(re.sub("/+", "/", parts.path)) if parts.path else ""
    path = "" if path in ("/", ".") else path
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def join_url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts if p.strip("/")]])


def wheel_metadata(path: Path) -> bytes | None:
    """The wheel's .dist-info/METADATA bytes as stored (the PEP 658 sidecar's content)."""
    if not path.name.endswith(".whl"):
        return None
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        return zf.read(names[0]) if names else None


def _requires_python(path: Path, metadata: bytes | None) -> str | None:
    message = email.parser.BytesParser().parsebytes(metadata) if metadata is not None else read_metadata(path)
    value = message.get("Requires-Python") if message is not None else None
    return value.strip() if value else None


# --- pages -------------------------------------------------------------------------------------

Anchor = dict[str, str]  # attribute -> value, plus "" -> the link text (the filename)


def parse_anchors(page: bytes) -> list[Anchor]:
    """The anchors of an existing page, attributes kept as written (so merging keeps e.g. data-yanked)."""
    parser = _AnchorParser()
    parser.feed(page.decode("utf-8", errors="replace"))
    return [{**{k: v or "" for k, v in attrs.items()}, "": text} for attrs, text in parser.anchors if attrs.get("href")]


def _anchor_sha256(anchor: Anchor) -> str | None:
    fragment = urlsplit(anchor.get("href", "")).fragment
    return fragment[len("sha256=") :] if fragment.startswith("sha256=") else None


def render_page(title: str, anchors: Iterable[Anchor]) -> bytes:
    """A PEP 503 page: one anchor per line, sorted by text, every attribute HTML-escaped."""
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        '    <meta name="pypi:repository-version" content="1.0">',
        f"    <title>{html.escape(title)}</title>",
        "  </head>",
        "  <body>",
        f"    <h1>{html.escape(title)}</h1>",
    ]
    for anchor in sorted(anchors, key=lambda a: a[""]):
        attrs = [("href", anchor["href"])] + sorted((k, v) for k, v in anchor.items() if k not in ("", "href"))
        rendered = " ".join(f'{k}="{html.escape(v, quote=True)}"' for k, v in attrs)
        lines.append(f"    <a {rendered}>{html.escape(anchor[''])}</a><br>")
    lines += ["  </body>", "</html>", ""]
    return "\n".join(lines).encode()


# --- storage -----------------------------------------------------------------------------------


@contextmanager
def _storage_errors(store_url: str, action: str) -> Iterator[None]:
    """Storage failures become one line naming the store and the fix; never a traceback."""
    try:
        yield
    except StaticIndexError:
        raise
    except PermissionError as exc:
        raise StaticIndexError(
            f"cannot {action} at {redact_url(store_url)}: permission denied ({type(exc).__name__}); "
            "fix: check the store's credentials and that they may write there"
        ) from None
    except FileNotFoundError:
        raise StaticIndexError(
            f"cannot {action} at {redact_url(store_url)}: it does not exist; fix: create the bucket or directory first"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise StaticIndexError(
            f"cannot {action} at {redact_url(store_url)}: {type(exc).__name__}; fix: check that the store answers",
            transient=True,
        ) from None


class _Store:
    """The store root through fsspec; paths are relative to it and use '/'."""

    def __init__(self, store_url: str, storage_options: Mapping[str, Any] | None) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        check_store_url(store_url)
        self.url = store_url
        try:
            self.fs, self.root = fsspec.core.url_to_fs(store_url, **dict(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise StaticIndexError(
                f"store-url {redact_url(store_url)!r} cannot be opened ({str(exc).splitlines()[0][:160]}); "
                "fix: install the fsspec package for its scheme (s3fs for s3://)"
            ) from None
        self.local = isinstance(self.fs, LocalFileSystem)
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol)
        self.type_kwarg = next((_CONTENT_TYPE_KWARGS[p] for p in protocols if p in _CONTENT_TYPE_KWARGS), None)

    def full(self, path: str) -> str:
        return posixpath.join(self.root, path) if path else self.root

    def read(self, path: str) -> bytes | None:
        with _storage_errors(self.url, f"read {path}"):
            try:
                return self.fs.cat_file(self.full(path))
            except FileNotFoundError:
                return None

    def exists(self, path: str) -> bool:
        with _storage_errors(self.url, f"look up {path}"):
            return self.fs.exists(self.full(path))

    def write_bytes(self, path: str, data: bytes, content_type: str | None = None) -> None:
        """Replace ``path`` atomically: a rename on a local disk, a single PUT on object storage."""
        target = self.full(path)
        with _storage_errors(self.url, f"write {path}"):
            if self.local:
                self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
                temp = f"{target}.tmp-{uuid.uuid4().hex}"
                self.fs.pipe_file(temp, data)
                self.fs.mv(temp, target)
            elif content_type and self.type_kwarg:
                self.fs.pipe_file(target, data, **{self.type_kwarg: content_type})
            else:
                self.fs.pipe_file(target, data)

    def upload(self, local: Path, path: str) -> None:
        target = self.full(path)
        with _storage_errors(self.url, f"upload {path}"):
            if self.local:
                self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
                temp = f"{target}.tmp-{uuid.uuid4().hex}"
                self.fs.put_file(str(local), temp)
                self.fs.mv(temp, target)
            else:
                self.fs.put_file(str(local), target)

    def delete(self, path: str) -> None:
        with _storage_errors(self.url, f"delete {path}"):
            try:
                self.fs.rm_file(self.full(path))
            except FileNotFoundError:
                pass


# --- publish and roll back ---------------------------------------------------------------------


@dataclass
class _Entry:
    file: StaticFile
    dist: Distribution
    metadata: bytes | None
    requires_python: str | None


def _entries(
    dists: Iterable[Distribution], layout: str, shared_files: str
) -> tuple[list[_Entry], dict[tuple[str, str], list[_Entry]]]:
    """Every file with its stored place, and the (sub-index, project) pages that list each one."""
    entries: list[_Entry] = []
    for dist in dists:
        parsed = parse_filename(dist.filename)
        if parsed is None:
            raise StaticIndexError(
                f"{dist.filename} is not a wheel or sdist filename; fix: publish built distributions"
            )
        subindex = subindex_for(dist.filename, layout)
        path = (
            posixpath.join(subindex, parsed[0], dist.filename) if subindex else posixpath.join(parsed[0], dist.filename)
        )
        metadata = wheel_metadata(dist.path)
        entries.append(
            _Entry(
                StaticFile(dist.filename, subindex, path, dist.sha256),
                dist,
                metadata,
                _requires_python(dist.path, metadata),
            )
        )
    pages: dict[tuple[str, str], list[_Entry]] = {}
    variant_indexes = sorted({e.file.subindex for e in entries if e.file.subindex})
    for entry in entries:
        project = parse_filename(entry.file.filename)[0]  # type: ignore[index]
        if entry.file.subindex:
            homes = [entry.file.subindex]
        else:
            homes = [""] + (variant_indexes if shared_files == "every-subindex" else [])
        for home in homes:
            pages.setdefault((home, project), []).append(entry)
    return entries, pages


def _anchor_for(entry: _Entry, page_dir: str) -> Anchor:
    href = quote(posixpath.relpath(entry.file.path, page_dir)) + f"#sha256={entry.file.sha256}"
    anchor: Anchor = {"": entry.file.filename, "href": href}
    if entry.requires_python:
        anchor["data-requires-python"] = entry.requires_python
    if entry.metadata is not None:
        digest = "sha256=" + hashlib.sha256(entry.metadata).hexdigest()
        anchor["data-core-metadata"] = digest  # PEP 714
        anchor["data-dist-info-metadata"] = digest  # PEP 658, for older clients
    return anchor


def publish_static(
    dists: Iterable[Distribution],
    *,
    store_url: str,
    public_url: str,
    layout: str = DEFAULT_LAYOUT,
    shared_files: str = "every-subindex",
    storage_options: Mapping[str, Any] | None = None,
) -> StaticIndexWrite:
    """Publish ``dists`` to the static index at ``store_url``, read by installers at ``public_url``.

    Files already listed with the same sha256 are kept as they are (a re-run publishes nothing new);
    a listed file with other bytes stops the publication before anything is written.
    """
    check_public_url(public_url)
    check_layout(layout)
    if shared_files not in SHARED_FILES:
        raise StaticIndexError(
            f"shared-files {shared_files!r} is not one of {', '.join(SHARED_FILES)}; "
            'fix: write shared-files = "every-subindex" or "root"'
        )
    store = _Store(store_url, storage_options)
    entries, page_entries = _entries(dists, layout, shared_files)

    # Read every page first, so a conflict stops the run before its first write.
    project_pages: dict[str, tuple[bytes | None, list[Anchor]]] = {}
    listed_before: dict[str, str] = {}  # store path -> sha256 a page already lists for it
    for (subindex, project), group in page_entries.items():
        page_dir = posixpath.join(subindex, project)
        previous = store.read(posixpath.join(page_dir, PAGE))
        anchors = {a[""]: a for a in parse_anchors(previous)} if previous is not None else {}
        for entry in group:
            old = anchors.get(entry.file.filename)
            if old is not None and _anchor_sha256(old) not in (None, entry.file.sha256):
                raise StaticIndexError(
                    f"{redact_url(store_url)}/{page_dir}/ already lists {entry.file.filename} with sha256 "
                    f"{_anchor_sha256(old)}, this build's is {entry.file.sha256}; a published file never changes; "
                    "fix: release a new version (or remove the old file from the index by hand)"
                )
            if old is not None:
                listed_before[entry.file.path] = entry.file.sha256
            anchors[entry.file.filename] = {**(old or {}), **_anchor_for(entry, page_dir)}
        project_pages[posixpath.join(page_dir, PAGE)] = (previous, list(anchors.values()))

    added: list[str] = []
    new = [e for e in entries if e.file.path not in listed_before]
    for entry in new:
        if not store.exists(entry.file.path):
            added.append(entry.file.path)
        store.upload(entry.dist.path, entry.file.path)
    for entry in new:
        if entry.metadata is not None:
            sidecar = entry.file.path + ".metadata"
            if not store.exists(sidecar):
                added.append(sidecar)
            store.write_bytes(sidecar, entry.metadata)

    written_projects: list[tuple[str, tuple[str, ...]]] = []
    for path, (previous, anchors) in project_pages.items():
        project = posixpath.basename(posixpath.dirname(path))
        content = render_page(f"Links for {project}", anchors)
        if content != previous:
            store.write_bytes(path, content, _HTML)
            before = {a[""] for a in parse_anchors(previous)} if previous is not None else set()
            written_projects.append((path, tuple(sorted(a[""] for a in anchors if a[""] not in before))))
    written_lists: list[tuple[str, tuple[str, ...]]] = []
    for subindex in sorted({s for s, _p in page_entries}):
        path = posixpath.join(subindex, PAGE)
        previous = store.read(path)
        projects = {a[""]: a for a in parse_anchors(previous)} if previous is not None else {}
        ours = [p for p in sorted({p for s, p in page_entries if s == subindex}) if p not in projects]
        for project in ours:
            projects[project] = {"": project, "href": f"{project}/"}
        content = render_page("Simple index", projects.values())
        if content != previous:
            store.write_bytes(path, content, _HTML)
            written_lists.append((path, tuple(ours)))

    listed: dict[str, list[str]] = {}
    for (subindex, _project), group in page_entries.items():
        listed.setdefault(subindex, []).extend(e.file.filename for e in group)
    return StaticIndexWrite(
        store_url=store_url,
        public_url=public_url,
        files=tuple(e.file for e in entries),
        added=tuple(added),
        project_pages=tuple(written_projects),
        list_pages=tuple(written_lists),
        listed={sub: tuple(sorted(names)) for sub, names in sorted(listed.items())},
    )


def rollback_static(publication: StaticIndexWrite, *, storage_options: Mapping[str, Any] | None = None) -> None:
    """Undo a publication by taking out exactly what it put in, from the pages as they are *now*:
    other releases may have published to the same store since (an approval can wait an hour), and
    their entries stay. Old bytes are never written back.

    Each project page loses this run's file anchors (those still carrying this run's sha256); a
    project list loses a project only when that project's page lists nothing any more; a page left
    empty is deleted. Lists are written first, then project pages, so no page
    links a file being removed; then this run's files and sidecars are deleted. The caller holds
    the store's lock, as for publishing (the pages are read, merged and written back)."""
    store = _Store(publication.store_url, storage_options)
    sha = {f.filename: f.sha256 for f in publication.files}
    merged_projects: dict[str, list[Anchor]] = {}
    for path, names in publication.project_pages:
        current = store.read(path)
        if current is None:
            continue
        ours = set(names)
        merged_projects[path] = [
            a for a in parse_anchors(current) if not (a[""] in ours and _anchor_sha256(a) in (None, sha.get(a[""])))
        ]
    # Candidates per project list: the projects this run added to it, and every project whose page
    # this rollback empties (added to the list by an earlier run that is gone by now).
    candidates: dict[str, set[str]] = {path: set(projects) for path, projects in publication.list_pages}
    for path, anchors in merged_projects.items():
        if not anchors:
            project_dir = posixpath.dirname(path)
            list_page = posixpath.join(posixpath.dirname(project_dir), PAGE)
            candidates.setdefault(list_page, set()).add(posixpath.basename(project_dir))
    for path, projects in candidates.items():
        current = store.read(path)
        if current is None:
            continue
        subindex = posixpath.dirname(path)

        def emptied(project: str) -> bool:
            page = posixpath.join(subindex, project, PAGE)
            if page in merged_projects:
                return not merged_projects[page]
            return store.read(page) is None

        anchors = [a for a in parse_anchors(current) if not (a[""] in projects and emptied(a[""]))]
        _write_or_delete(store, path, "Simple index", anchors, current)
    for path, anchors in merged_projects.items():
        project = posixpath.basename(posixpath.dirname(path))
        _write_or_delete(store, path, f"Links for {project}", anchors, store.read(path))
    for path in reversed(publication.added):
        store.delete(path)


def _write_or_delete(store: _Store, path: str, title: str, anchors: list[Anchor], current: bytes | None) -> None:
    if not anchors:
        store.delete(path)
        return
    content = render_page(title, anchors)
    if content != current:
        store.write_bytes(path, content, _HTML)


def project_subindexes(store_url: str, name: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Every sub-index of the store with a page for project ``name`` ("" is the root index), root first:
    a read-only look at the store (listing, never writing), for callers that know no filename in advance."""
    from packaging.utils import canonicalize_name

    store = _Store(store_url, storage_options)
    project = canonicalize_name(name)
    root = store.full("").rstrip("/")
    with _storage_errors(store_url, f"list the pages of {project}"):
        pages = store.fs.glob(f"{root}/**/{project}/{PAGE}") if store.fs.exists(root) else []
    found = {posixpath.relpath(posixpath.dirname(posixpath.dirname(p)), root) for p in pages}
    return sorted("" if sub == "." else sub for sub in found)
