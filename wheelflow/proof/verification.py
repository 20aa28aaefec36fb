"""Prove a release is served: every expected file downloaded and hashed, then a real install.

A listing only says what the index claims. The proof is the bytes: every expected file is
downloaded from the URL the listing gives and its sha256 compared with the built file's (and with
the listing's), on every target and every run, files already present included. The comparison is
a plain function; polling takes its clock, sleep and downloader as arguments, so tests drive it
without waiting.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import httpx
from packaging.utils import canonicalize_name

from wheelflow.builds.builders import loaded_torch
from wheelflow.checks.abi import installed_objects, library_dirs, unresolved_lines
from wheelflow.checks.userstorch import FLAG, torch_release, users_torch_finding
from wheelflow.core.childenv import child_env
from wheelflow.core.deadline import Deadline
from wheelflow.core.distributions import parse_filename, sha256_of
from wheelflow.core.errors import IndexReadError, UsageError
from wheelflow.core.pyenvs import installer_env
from wheelflow.core.redaction import redact
from wheelflow.core.sandbox import protection, protection_label, run_step_captured
from wheelflow.index.simple_api import (
    READ_TIMEOUT,
    ServedFile,
    download_sha256,
    files_for_version,
    list_project_files,
    project_url,
)
from wheelflow.proof.installsource import dependency_source, install_command, release_file, unresolvable

# VERIFIED is given only after a download: the served bytes hash to the built file's sha256.
# LISTED: the listing names the file (with the expected sha256, if it gives one); not downloaded yet.
VERIFIED, SERVED, MISSING, HASH_MISMATCH, LISTED = "verified", "served", "missing", "hash-mismatch", "listed"
# YANKED: the listing marks the file yanked (PEP 592: data-yanked / "yanked"): installers skip it, so it is
# never verified, and waiting does not change it.
YANKED = "yanked"
#: Downloads at once during a proof: enough to overlap latency, gentle on an index.
DEFAULT_CONCURRENCY = 4

#: sha256 hex digest of the bytes served for a listed file, read within the deadline.
Download = Callable[[ServedFile, Deadline], str]


@dataclass(frozen=True)
class FileStatus:
    filename: str
    sha256: str | None  # the local (expected) sha256, or the served one when there is no local file
    status: str
    served_sha256: str | None = None  # downloaded, once the file was downloaded; else as listed
    listed_sha256: str | None = None
    yanked_reason: str = ""

    def describe(self) -> str:
        if self.status == MISSING:
            return f"{self.filename} is not served"
        if self.status == HASH_MISMATCH:
            if self.listed_sha256 is not None and self.served_sha256 != self.listed_sha256:
                return (
                    f"{self.filename}: the index lists sha256 {self.listed_sha256} but the downloaded bytes "
                    f"have sha256 {self.served_sha256}"
                )
            return f"{self.filename} is served with sha256 {self.served_sha256}, the built file has {self.sha256}"
        if self.status == VERIFIED:
            return f"{self.filename} downloaded, sha256 matches"
        if self.status == SERVED:
            return f"{self.filename} downloaded, sha256 {self.served_sha256}"
        if self.status == LISTED:
            return f"{self.filename} is listed (not downloaded)"
        if self.status == YANKED:
            reason = " ".join(self.yanked_reason.split())[:200]  # the index's text: one line, short
            why = f" (reason: {reason})" if reason else ""
            return (
                f"{self.filename} is yanked on this index{why}: installers skip it, so its users do not get "
                "it; fix: release a new version (e.g. a .post1); an index never takes the same file again"
            )
        return f"{self.filename} {self.status}"


def _lower(sha256: str | None) -> str | None:
    return sha256.lower() if sha256 else None  # hex digests compare case-insensitively


def compare_listing(expected: Mapping[str, str | None], served: list[ServedFile]) -> list[FileStatus]:
    """What the listing alone says about each expected file (sha256 None: only presence is expected):
    MISSING, YANKED or HASH_MISMATCH (final: a served filename never changes its bytes), or LISTED."""
    by_name = {s.filename: s for s in served}
    statuses = []
    for filename, sha256 in expected.items():
        found, want = by_name.get(filename), _lower(sha256)
        if found is None:
            statuses.append(FileStatus(filename, want, MISSING))
            continue
        listed = _lower(found.sha256)
        if found.yanked:
            statuses.append(FileStatus(filename, want, YANKED, listed, listed, found.yanked_reason))
        elif want is not None and listed is not None and listed != want:
            statuses.append(FileStatus(filename, want, HASH_MISMATCH, listed, listed))
        else:
            statuses.append(FileStatus(filename, want, LISTED, listed, listed))
    return statuses


def compare(expected: Mapping[str, str | None], served: list[ServedFile]) -> list[FileStatus]:
    """The listing-only comparison with a listed match reported as VERIFIED.

    Only for deciding which files a target already has (the release flow's read of what is present,
    before uploading); it is not a proof: ``prove_files`` is.
    """
    return [
        FileStatus(
            s.filename, s.sha256 or s.listed_sha256, VERIFIED if s.sha256 else SERVED, s.served_sha256, s.listed_sha256
        )
        if s.status == LISTED
        else s
        for s in compare_listing(expected, served)
    ]


def proof_of(listed: FileStatus, downloaded: str) -> FileStatus:
    """The status of a LISTED file once its bytes hashed to ``downloaded``."""
    downloaded = downloaded.lower()
    wrong = (listed.listed_sha256 is not None and downloaded != listed.listed_sha256) or (
        listed.sha256 is not None and downloaded != listed.sha256
    )
    status = HASH_MISMATCH if wrong else VERIFIED if listed.sha256 is not None else SERVED
    return FileStatus(
        listed.filename,
        listed.sha256 if listed.sha256 is not None else downloaded,
        status,
        downloaded,
        listed.listed_sha256,
    )


def prove_files(
    served: list[ServedFile],
    expected: Mapping[str, str | None],
    download: Download,
    *,
    deadline: Deadline,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[FileStatus]:
    """Compare the listing, then download every listed expected file (``concurrency`` at a time) and
    compare its bytes' sha256 with the expected one and the listed one. An empty ``expected`` proves
    every file in ``served``."""
    return _prove_listed(served, expected, download, {}, deadline, concurrency)


def _download_all(files: list[ServedFile], download: Download, deadline: Deadline, concurrency: int) -> list[str]:
    if len(files) <= 1 or concurrency <= 1:
        return [download(f, deadline) for f in files]
    pool = ThreadPoolExecutor(max_workers=min(concurrency, len(files)), thread_name_prefix="wheelflow-download")
    try:
        futures = [pool.submit(download, f, deadline) for f in files]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # the first failure stops the downloads not yet started


def http_download(client: httpx.Client, log: Callable[[str], None] | None = None) -> Download:
    """The real downloader: streams each file from the URL the listing gives and hashes it."""
    return lambda served, deadline: download_sha256(client, served.url, deadline=deadline, log=log)


def prove_served(
    client: httpx.Client,
    simple_url: str,
    name: str,
    version: str,
    expected: Mapping[str, str | None],
    *,
    deadline: Deadline,
    concurrency: int = DEFAULT_CONCURRENCY,
    log: Callable[[str], None] | None = None,
) -> list[FileStatus]:
    """One listing read, then every expected file of ``name`` ``version`` downloaded and hashed.

    An empty ``expected`` proves every file the index lists for this version. The listing and every
    download end by ``deadline`` (DeadlineExceeded names the URL); a malformed listing raises
    MalformedListingError.
    """
    listed = list_project_files(client, simple_url, name, deadline=deadline)
    served = files_for_version(listed, name, version, deadline, project_url(simple_url, name))
    return prove_files(served, expected, http_download(client, log), deadline=deadline, concurrency=concurrency)


def expected_from_paths(items: Iterable[str]) -> dict[str, str | None]:
    """``--expect`` values → {filename: sha256 or None}: a path to a built file is expected with its
    sha256; a bare wheel or sdist file name only has to be served. A path that does not exist is a
    usage error, never silently weakened to a presence check."""
    expected: dict[str, str | None] = {}
    for item in items:
        path = Path(item)
        if path.is_file():
            sha256: str | None = sha256_of(path)
        elif path.exists():
            raise UsageError("--expect", f"{item!r} is not a file", "give the path of a built wheel or sdist")
        elif path.name != item:
            raise UsageError(
                "--expect",
                f"{item!r} does not exist",
                "give the path of a built file, or a bare file name to check only that it is served",
            )
        elif parse_filename(item) is None:
            raise UsageError(
                "--expect",
                f"{item!r} is neither a file here nor a wheel or sdist file name",
                "give the path of a built file, or a file name like name-1.0-py3-none-any.whl",
            )
        else:
            sha256 = None
        if expected.get(path.name, sha256) != sha256:
            raise UsageError(
                "--expect", f"two files named {path.name} with different contents", "expect each file name once"
            )
        expected[path.name] = sha256
    return expected


def poll_until_served(
    read: Callable[[], list[ServedFile]],
    expected: Mapping[str, str | None],
    timeout: float | Deadline,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_wait: Callable[[str], None] = lambda message: None,
    first_delay: float = 0.25,
    max_delay: float = 2.0,
    download: Download | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    settled: Callable[[list[ServedFile]], str | None] | None = None,
) -> tuple[list[FileStatus], list[ServedFile]]:
    """Read the listing until every expected file is there and proven, a hash mismatch shows, or the
    deadline passes; returns the statuses and the last listing.

    Index caches lag behind uploads, so a missing file is re-read with exponential backoff capped at
    ``max_delay`` (a file is seen at most that long after it appears); each listed file is downloaded
    and hashed once, as soon as it is listed, with ``download`` (default: over HTTP from the URL the
    listing gives). A mismatching hash is final at once. An empty ``expected`` proves every file the
    index lists for the version. ``settled`` (given a listing still missing files) returns why no
    upload can be in flight (the release is old), or None; a reason ends the wait at once, told
    through ``on_wait``. ``timeout`` (seconds, or a Deadline shared with the caller's other
    steps) bounds everything, the reads ``read`` makes included: they run under it as the current
    deadline. A listing that is malformed fails at once; an index that does not answer is retried.
    """
    deadline = timeout if isinstance(timeout, Deadline) else Deadline.after(timeout, clock=clock)
    with contextlib.ExitStack() as stack:
        if download is None:
            download = http_download(stack.enter_context(httpx.Client(timeout=READ_TIMEOUT)), on_wait)
        proofs: dict[tuple[str, str, str | None], FileStatus] = {}  # (file, URL, listed sha256) → its proof
        delay, last, error = first_delay, None, None
        while True:
            try:
                with deadline.applied():
                    served = read()
                statuses = _prove_listed(served, expected, download, proofs, deadline, concurrency)
                last, error = (statuses, served), None
                missing = [s.filename for s in statuses if s.status == MISSING]
                if not missing or any(s.status in (HASH_MISMATCH, YANKED) for s in statuses) or deadline.expired:
                    return last
                reason = settled(served) if settled is not None else None
                if reason:
                    on_wait(reason)
                    return last
                on_wait(f"not served yet: {', '.join(missing)}; reading again in {delay:.1f} s")
            except IndexReadError as exc:
                if not exc.transient:
                    raise
                if deadline.expired:  # the deadline ran out mid-read: an earlier listing stands
                    if last is not None:
                        return last
                    raise
                error = exc
                on_wait(f"index not readable yet ({exc}); retrying")
            sleep(min(delay, deadline.remaining()))
            delay = min(delay * 2, max_delay)
            if deadline.expired:  # no time left for another read: the last one stands
                if error is not None or last is None:
                    raise error or deadline.exceeded("read", "the index")
                return last


def _prove_listed(
    served: list[ServedFile],
    expected: Mapping[str, str | None],
    download: Download,
    proofs: dict[tuple[str, str, str | None], FileStatus],
    deadline: Deadline,
    concurrency: int,
) -> list[FileStatus]:
    """Statuses against this listing, downloading only files not in ``proofs`` (proven at an earlier
    read of the same listing); an empty ``expected`` means every listed file."""
    wanted = dict(expected) or {f.filename: None for f in served}
    statuses = compare_listing(wanted, served)
    by_name = {f.filename: f for f in served}
    key = {s.filename: (s.filename, by_name[s.filename].url, s.listed_sha256) for s in statuses if s.status == LISTED}
    new = [s for s in statuses if s.status == LISTED and key[s.filename] not in proofs]
    digests = _download_all([by_name[s.filename] for s in new], download, deadline, concurrency)
    for status, digest in zip(new, digests):
        proofs[key[status.filename]] = proof_of(status, digest)
    return [proofs[key[s.filename]] if s.filename in key else s for s in statuses]


def settled_reason(upload_times: list[datetime | None], now: datetime, window: float) -> str | None:
    """Why no upload of this release can be in flight, or None: every served file's upload time is
    known and the newest is older than ``window`` seconds (the longest an index takes to show an
    upload). Then a missing file will not appear by waiting."""
    if not upload_times or any(t is None for t in upload_times):
        return None  # nothing served yet, or an age unknown: an upload may be under way
    newest = max(t for t in upload_times if t is not None)
    age = (now - newest).total_seconds()
    if age <= window:
        return None
    return (
        f"the release is {_age(age)} old (its newest file was uploaded {newest:%Y-%m-%d %H:%M} UTC, longer ago "
        f"than the {window:g} s an upload takes to show): no upload is in flight"
    )


def _age(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


@dataclass(frozen=True)
class InstallResult:
    ok: bool
    installed: str | None  # filename pip installed
    message: str  # one line
    output_tail: str = ""
    torch: str | None = None  # the torch the install resolved, "2.15.0+cu132 (CUDA 13.2)", where it has one
    flags: tuple[str, ...] = ()  # what users should know though nothing failed (the torch they get)


def pip_failure(output: str) -> str:
    """The line of pip's output that says what went wrong (its last line is often a bare hash)."""
    if "DO NOT MATCH THE HASHES" in output:
        found = re.findall(r"/([^/\s#]+\.(?:whl|tar\.gz))(?:[#:\s]|$)", output) or ["file"]
        expected = re.search(r"Expected sha256 ([0-9a-f]{64})", output)
        got = re.search(r"Got\s+([0-9a-f]{64})", output)
        detail = (
            f" (listed sha256 {expected.group(1)[:16]}…, downloaded {got.group(1)[:16]}…)" if expected and got else ""
        )
        return f"the downloaded {found[0]} does not match the sha256 the index lists{detail}: the index or a proxy served damaged bytes"
    errors = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR:")]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return errors[0] if errors else (lines[-1] if lines else "no output")


def install_and_smoke(
    name: str,
    version: str,
    simple_url: str,
    served: list[ServedFile],
    *,
    smoke: str | None,
    workdir: Path | None = None,
    dependencies: str = "pypi",
    cache_dir: Path | None = None,
    timeout: float = 900,
    log: Callable[[str], None] = print,
    built_torch: Mapping[str, str] | None = None,
    users_torch: str = FLAG,
) -> InstallResult:
    """``uv pip install`` of the release into a fresh venv, then the smoke command.

    The release file comes from the index under test, pinned by URL and sha256; its dependencies
    from ``dependencies`` (:mod:`wheelflow.proof.installsource`), through uv's cache in ``cache_dir``
    (default: $WHEELFLOW_HOME/cache/uv). The torch the install resolved is recorded; where
    ``built_torch`` (wheel filename -> its cell's build torch) names another release for the installed
    wheel, that is flagged (refused with ``users_torch`` "same") and the wheel's shared objects, as
    installed, must resolve against that torch's libraries (:func:`users_torch_problem`)."""
    from wheelflow.core.home import wheelflow_home  # localindex starts indexes, which read this module's callers

    source = dependency_source(dependencies)
    pinned = release_file(served, name, version)
    if not pinned.filename.endswith(".whl") and any(f.filename.endswith(".whl") for f in served):
        return InstallResult(
            False,
            pinned.filename,
            f"no wheel of {name} {version} on this index installs on Python "
            f"{sys.version_info.major}.{sys.version_info.minor} here: pip and uv would build from the "
            f"sdist {pinned.filename}; fix: publish a wheel for it (check the wheel's tags)",
        )
    cache_dir = cache_dir or wheelflow_home() / "cache" / "uv"
    root = Path(tempfile.mkdtemp(prefix="wheelflow-verify-", dir=workdir))
    try:
        venv = root / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True, env=child_env()
        )
        python = venv / "bin" / "python"
        env = installer_env()  # no pip or uv configuration: no extra index or find-links from the environment
        cmd = install_command(python, name, pinned, source, cache_dir)
        log("$ " + " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=root)
        except subprocess.TimeoutExpired:
            return InstallResult(False, None, f"pip install {name}=={version} did not finish within {timeout:.0f} s")
        output = redact((proc.stdout + proc.stderr).strip())
        if proc.returncode != 0:
            why = unresolvable(output, name, source) or pip_failure(output)[:300]
            return InstallResult(False, None, f"pip install {name}=={version} failed: {why}", output[-3000:])
        installed = _installed_file(venv, name)
        by_name = {s.filename: s for s in served}
        if installed is None or installed[0] not in by_name:
            got = installed[0] if installed else "nothing"
            return InstallResult(
                False,
                got,
                f"pip installed {got}, which is not a file of {name} {version} on this index",
                output[-3000:],
            )
        filename, sha256 = installed
        if sha256 and by_name[filename].sha256 and sha256 != by_name[filename].sha256:
            return InstallResult(
                False,
                filename,
                f"pip installed {filename} with sha256 {sha256}, the index lists {by_name[filename].sha256}",
            )
        smoke_env = installer_env(venv)
        torch = loaded_torch(python, smoke_env)  # the torch users of this index get with the release
        on = f"; torch {torch}" if torch else ""
        built = (built_torch or {}).get(filename)
        flag = users_torch_finding(name, filename, built, torch, users_torch)
        refused = users_torch_problem(venv, name, filename, built, torch) if flag else None
        if refused:
            return InstallResult(False, filename, refused, torch=torch)
        if flag and not flag.warning:  # abi.users-torch = "same"
            return InstallResult(False, filename, flag.message, torch=torch)
        flags = (flag.message,) if flag else ()
        flagged = "".join(
            f"; warning: {f}; its shared objects load against torch {torch_release(torch)}'s libraries as installed"
            for f in flags
        )
        if not smoke:
            return InstallResult(True, filename, f"installed {filename}{on}{flagged}", output[-3000:], torch, flags)
        log(f"$ {smoke} (sandbox: {protection_label(protection())})")
        # Code we do not control: in the sandbox, where nothing it starts outlives it
        run, smoke_output = run_step_captured(
            ["/bin/sh", "-c", smoke], env=smoke_env, cwd=root, writable=[root], timeout=timeout
        )
        if run.timed_out:
            return InstallResult(False, filename, f"smoke command did not finish within {timeout:.0f} s")
        smoke_output = redact(smoke_output.strip())  # it may print its environment
        for line in smoke_output.splitlines()[-20:]:
            log(line)
        if run.code != 0:
            last = smoke_output.splitlines()[-1] if smoke_output else ""
            return InstallResult(
                False,
                filename,
                f"smoke command failed on {filename} (exit {run.code}): {last[:300]}",
                smoke_output[-3000:],
            )
        return InstallResult(
            True, filename, f"installed {filename}; smoke ok{on}{flagged}", smoke_output[-3000:], torch, flags
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def users_torch_problem(venv: Path, name: str, filename: str, built: str | None, users: str | None) -> str | None:
    """The ABI gate's symbol check against the torch users get: ``name``'s shared objects, as installed
    in ``venv``, resolved against the libraries installed beside them (that torch's ``lib/`` and the
    nvidia-* wheels it pulled). Why it would not load (one line with the fix), or None."""
    for site_packages in venv.glob("lib/python*/site-packages"):
        wanted = canonicalize_name(name)
        for dist_info in site_packages.glob("*.dist-info"):
            if canonicalize_name(dist_info.name.removesuffix(".dist-info").rsplit("-", 1)[0]) != wanted:
                continue
            why = unresolved_lines(installed_objects(site_packages, dist_info), library_dirs(site_packages))
            if why:
                return (
                    f"{filename} would not load with the torch users get (torch {users}; built for "
                    f"{torch_release(built)}): {'; '.join(why)}; fix: pin torch=={torch_release(built)} in the "
                    f"wheel's metadata, or publish a cell for torch {torch_release(users)}"
                )
    return None


def _installed_file(venv: Path, name: str) -> tuple[str, str | None] | None:
    """(filename, sha256) of the installed ``name``, from its PEP 610 direct_url.json."""
    wanted = canonicalize_name(name)
    for record in venv.glob("lib/python*/site-packages/*.dist-info/direct_url.json"):
        if canonicalize_name(record.parent.name.removesuffix(".dist-info").rsplit("-", 1)[0]) != wanted:
            continue
        info = json.loads(record.read_text())
        filename = unquote(info.get("url", "").split("#")[0].rsplit("/", 1)[-1])  # "+" arrives as %2B
        archive = info.get("archive_info", {})
        sha256 = (archive.get("hashes") or {}).get("sha256")
        if sha256 is None and str(archive.get("hash", "")).startswith("sha256="):
            sha256 = archive["hash"].split("=", 1)[1]
        return filename, sha256
    return None
