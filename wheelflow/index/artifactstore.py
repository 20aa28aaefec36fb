"""Where wheels built on one machine are picked up by another: a store addressed by URL (fsspec).

The default is ``WHEELFLOW_ARTIFACT_STORE`` when set, else a directory under $WHEELFLOW_HOME (a
shared mount serves several machines); a team points either at object storage (``s3://...``, ``gs://...``) with the fsspec backend
for it installed. Objects are content-addressed by their sha256, so a re-upload is a no-op and a
reader checks what it got.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import fsspec

from wheelflow.core.distributions import parse_filename
from wheelflow.core.errors import ArtifactStoreError, HashMismatchError

STORE_ENV = "WHEELFLOW_ARTIFACT_STORE"  # the store every worker reaches, e.g. s3://team-bucket/wheelflow
RUNNER_ENV = "WHEELFLOW_RUNNER_NAME"


def default_store(home: Path, env: Mapping[str, str] | None = None) -> str:
    """``WHEELFLOW_ARTIFACT_STORE`` when set (a URL shared by every worker), else a directory under
    $WHEELFLOW_HOME, which only works across machines when that directory is a shared mount."""
    env = os.environ if env is None else env
    return env.get(STORE_ENV) or (home / "artifacts").resolve().as_uri()


def runner_name(env: Mapping[str, str] | None = None) -> str:
    """The worker this process runs on: ``WHEELFLOW_RUNNER_NAME``, else the host name."""
    env = os.environ if env is None else env
    return env.get(RUNNER_ENV) or socket.gethostname()


def is_local(store: str) -> bool:
    return "://" not in store or store.startswith("file://")


def record_elsewhere_error(store: str, cell: str, built_on: str | None, here: str) -> ArtifactStoreError | None:
    """Why a cell's run record is missing, when the answer is "another machine's local directory":
    the cell ran on another runner and the store is a ``file://`` path not shared between them."""
    if not is_local(store) or built_on is None or built_on == here:
        return None
    return ArtifactStoreError(
        f"cell {cell} was built on runner {built_on!r} but this release runs on {here!r}, and the artifact store "
        f"{store} is a local directory the release cannot read; fix: set {STORE_ENV} (or artifact_store) on every "
        "worker to a URL they all reach (s3://..., or a directory mounted on each)",
        transient=False,
    )


def object_url(store: str, sha256: str, filename: str) -> str:
    return f"{store.rstrip('/')}/{sha256[:2]}/{sha256}/{filename}"


def put(store: str, path: Path, sha256: str) -> str:
    url = object_url(store, sha256, path.name)
    fs, target = fsspec.core.url_to_fs(url)
    if fs.exists(target):
        return url
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(path), target + ".partial")
    fs.mv(target + ".partial", target)  # readers never see half a wheel
    return url


def get(url: str, directory: Path, sha256: str) -> Path:
    """Fetch into ``directory`` and check the bytes; a different sha256 is an error naming the URL."""
    filename = url.rsplit("/", 1)[-1]
    if "\\" in filename or parse_filename(filename) is None:
        raise ArtifactStoreError(
            f"refusing artifact name {filename!r} from {url}: not a wheel or sdist file name; "
            "fix: check what wrote the run record",
            transient=False,
        )
    directory.mkdir(parents=True, exist_ok=True)
    local = directory / filename
    digest = hashlib.sha256()
    try:
        with fsspec.open(url, "rb") as source, open(local, "wb") as sink:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                digest.update(chunk)
                sink.write(chunk)
    except FileNotFoundError:
        raise ArtifactStoreError(
            f"{url} is not in the artifact store; fix: check that the builder and the "
            "release use the same artifact_store"
        ) from None
    if digest.hexdigest() != sha256:
        local.unlink()
        raise HashMismatchError(
            f"{url} has sha256 {digest.hexdigest()}, the builder reported {sha256}; "
            "fix: the store changed the bytes: check it, then re-run the release"
        )
    return local


def run_record_url(store: str, flow_run_id: str) -> str:
    return f"{store.rstrip('/')}/runs/{flow_run_id}.json"


def put_run_record(store: str, flow_run_id: str, record: dict) -> str:
    """What a remote run produced, where its caller finds it without Prefect result storage."""
    url = run_record_url(store, flow_run_id)
    fs, target = fsspec.core.url_to_fs(url)
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(target, "w") as sink:
        sink.write(json.dumps(record))
    return url


def get_run_record(store: str, flow_run_id: str) -> dict:
    url = run_record_url(store, flow_run_id)
    try:
        with fsspec.open(url, "r") as source:
            return json.loads(source.read())
    except FileNotFoundError:
        raise ArtifactStoreError(
            f"flow run {flow_run_id} left no record at {url}; fix: check that the runner "
            "and the release use the same artifact_store"
        ) from None
