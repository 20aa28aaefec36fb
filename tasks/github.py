"""GitHub release tasks: upload an asset to the draft, prove the assets, publish the draft, roll back.

The client (:mod:`wheelflow.index.githubreleases`) already retries what GitHub asks to retry (5xx,
rate limits within the deadline); a task retries only a transient failure that outlived those.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from wheelflow.core.distributions import Distribution
from wheelflow.core.errors import HashMismatchError, WheelflowError
from wheelflow.index.githubreleases import Asset, GitHubReleases, Release, UploadOutcome
from wheelflow.proof.verification import HASH_MISMATCH, MISSING, VERIFIED, FileStatus
from wheelflow.tasks.retry import NETWORK_BACKOFF, NETWORK_JITTER, NETWORK_RETRIES, gives_up, only_transient
from wheelflow.tasks.verify import HashMismatchFailed, ServedCheckFailed


# No cache key for these tasks: their client holds an open connection pool and the token, which must
# never be hashed or persisted as a task input.
@task(
    name="upload-asset",
    cache_policy=NO_CACHE,
    task_run_name="upload-asset[{name}→{release.tag_name}]",
    retries=NETWORK_RETRIES,
    retry_delay_seconds=NETWORK_BACKOFF,
    retry_jitter_factor=NETWORK_JITTER,
    retry_condition_fn=only_transient,
)
@gives_up
def upload_asset(gh: GitHubReleases, release: Release, path: Path, sha256: str, name: str) -> UploadOutcome:
    """``path`` as asset ``name`` of the draft: "uploaded", or "already present" with our bytes."""
    done = gh.upload(release, path, sha256=sha256, name=name)
    get_run_logger().info("%s: %s (%s)", name, done.outcome, release.tag_name)
    return done


@task(name="prove-assets", task_run_name="prove-assets[{release.tag_name}]", retries=0, cache_policy=NO_CACHE)
def prove_assets(gh: GitHubReleases, release: Release, assets: dict[str, Asset], dists: list[Distribution]) -> None:
    """Each asset downloaded through the API and hashed, and compared with GitHub's ``digest`` where it
    gives one: every file's status, then the first failure (ServedCheckFailed with all statuses)."""
    statuses, failures = [], []
    for dist in dists:
        asset = assets.get(dist.filename)
        if asset is None:
            statuses.append(FileStatus(dist.filename, dist.sha256, MISSING))
            failures.append(f"{dist.filename} is not an asset of release {release.tag_name}")
            continue
        try:
            gh.prove(asset, dist.sha256)
        except HashMismatchError as exc:
            statuses.append(FileStatus(dist.filename, dist.sha256, HASH_MISMATCH))
            failures.append(str(exc))
        except WheelflowError as exc:
            statuses.append(FileStatus(dist.filename, dist.sha256, HASH_MISMATCH, asset.digest))
            failures.append(str(exc))
        else:
            statuses.append(FileStatus(dist.filename, dist.sha256, VERIFIED, dist.sha256))
    if failures:
        error = HashMismatchFailed if any(s.status == HASH_MISMATCH for s in statuses) else ServedCheckFailed
        raise error(f"release {release.tag_name} of {gh.repository}: " + "; ".join(failures), statuses)
    get_run_logger().info("%d asset(s) of %s downloaded and hashed", len(dists), release.tag_name)


@task(name="publish-release", task_run_name="publish-release[{release.tag_name}]", retries=0, cache_policy=NO_CACHE)
def publish_release(gh: GitHubReleases, release: Release) -> Release:
    """The draft made visible to users, once every asset is proven."""
    published = gh.publish(release)
    get_run_logger().info("published release %s of %s", release.tag_name, gh.repository)
    return published


def release_rollback_hook(gh: GitHubReleases, state: ReleaseState):
    """A rollback hook for the release's transaction: this run's assets deleted, and the release when
    this run created it (a draft, or one it published itself)."""

    def delete_this_runs_assets(transaction) -> None:
        logger = logging.getLogger("wheelflow.rollback")
        if state.release is None:
            return
        removed = gh.rollback(
            state.release, list(state.uploaded.values()), created=state.created, published_by_run=state.published
        )
        logger.warning("rollback: %s: deleted %s", gh.repository, ", ".join(removed) or "nothing")

    return delete_this_runs_assets


class ReleaseState:
    """What one release run did to a GitHub release: the release, whether it created or published it,
    and the assets it uploaded (name -> asset): what a rollback takes back."""

    def __init__(self) -> None:
        self.release: Release | None = None
        self.created = False
        self.published = False
        self.uploaded: dict[str, Asset] = {}
