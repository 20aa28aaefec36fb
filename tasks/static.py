"""Static index tasks: read what a static target lists, publish to it, roll it back, prove it is served."""

from __future__ import annotations

import logging

import httpx
from prefect import get_run_logger, task

from wheelflow.adapters.prefect_api import held_alone, read_secret
from wheelflow.config.spec import Target
from wheelflow.core.distributions import Distribution
from wheelflow.index.indexes import PRIVATE_POLL_CAP
from wheelflow.index.simple_api import READ_TIMEOUT, ServedFile, download_sha256, read_served
from wheelflow.index.staticindex import StaticIndexWrite, publish_static, rollback_static
from wheelflow.index.staticsite import StaticSite, read_listed, storage_options_for
from wheelflow.proof.verification import HASH_MISMATCH, VERIFIED, FileStatus, poll_until_served
from wheelflow.tasks.retry import NETWORK_BACKOFF, NETWORK_JITTER, NETWORK_RETRIES, gives_up, only_transient
from wheelflow.tasks.verify import HashMismatchFailed, ServedCheckFailed


def read_static(site: StaticSite, name: str, version: str, filenames: list[str]) -> list[ServedFile]:
    with httpx.Client(timeout=READ_TIMEOUT) as client:
        return read_listed(client, site, name, version, filenames)


@task(
    name="read-static",
    task_run_name="read-static[{site.name}]",
    retries=NETWORK_RETRIES,
    retry_delay_seconds=NETWORK_BACKOFF,
    retry_jitter_factor=NETWORK_JITTER,
    retry_condition_fn=only_transient,
)
@gives_up
def read_static_files(site: StaticSite, name: str, version: str, filenames: list[str]) -> list[ServedFile]:
    served = read_static(site, name, version, filenames)
    get_run_logger().info("%s lists %d of %d file(s) of %s %s", site.name, len(served), len(filenames), name, version)
    return served


# Only the store's transient failures retry (StaticIndexError says which); a conflict never does.
@task(
    name="publish-static",
    task_run_name="publish-static[{site.name}]",
    retries=NETWORK_RETRIES,
    retry_delay_seconds=NETWORK_BACKOFF,
    retry_jitter_factor=NETWORK_JITTER,
    retry_condition_fn=only_transient,
)
@gives_up
def publish_static_files(dists: list[Distribution], target: Target, site: StaticSite) -> StaticIndexWrite:
    """Write files, sidecars, project pages, root pages, under the store's lock (pages are read,
    merged and written back: two writers at once would lose one's entries). Credentials are read here."""
    logger = get_run_logger()
    with held_alone(site.lock_name):
        publication = publish_static(
            dists,
            store_url=site.store_url,
            public_url=site.public_url,
            layout=site.layout,
            shared_files=site.shared_files,
            storage_options=storage_options_for(target, read_secret),
        )
    logger.info("%s: wrote %d file(s) and %d page(s)", site.name, len(publication.added), len(publication.pages))
    return publication


def static_rollback_hook(target: Target, site: StaticSite, publication: StaticIndexWrite):
    """A rollback hook for the release's transaction: this run's entries taken out of the pages as
    they are now (other releases' entries published since stay), this run's files and sidecars
    deleted, under the same lock as the publication."""

    def restore_static_index(transaction) -> None:
        logger = logging.getLogger("wheelflow.rollback")
        with held_alone(site.lock_name):
            rollback_static(publication, storage_options=storage_options_for(target, read_secret))
        logger.warning(
            "rollback: %s: this run's entries taken out of %d page(s), %d file(s) deleted",
            site.name,
            len(publication.pages),
            len(publication.added),
        )

    return restore_static_index


@task(name="verify-static", task_run_name="verify-static[{site.name}]", retries=0)  # polls to its own deadline
def verify_static(
    site: StaticSite, publication: StaticIndexWrite, name: str, version: str, dists: list[Distribution]
) -> dict[str, list[ServedFile]]:
    """Each sub-index lists each of its files with the built sha256 (polled: a CDN may lag), then each
    file is downloaded from the public URL and hashed: listed is not served. Returns each sub-index's listing."""
    logger = get_run_logger()
    expected = {d.filename: d.sha256 for d in dists}
    listings: dict[str, list[ServedFile]] = {}
    with httpx.Client(timeout=READ_TIMEOUT) as client:
        for subindex, filenames in publication.listed.items():
            url = site.simple_url(subindex)
            statuses, served = poll_until_served(
                lambda: [s for s in read_served(client, url, name, version) if s.filename in filenames],
                {f: expected[f] for f in filenames},
                site.verify_timeout,
                on_wait=logger.info,
                max_delay=PRIVATE_POLL_CAP,
            )
            bad = [s for s in statuses if s.status != VERIFIED]
            if bad:
                error = HashMismatchFailed if any(s.status == HASH_MISMATCH for s in bad) else ServedCheckFailed
                raise error(f"{url}: " + "; ".join(s.describe() for s in bad), statuses)
            listings[subindex] = served
        downloaded: dict[str, str] = {}
        for subindex, served in listings.items():
            for file in served:
                if file.url not in downloaded:
                    downloaded[file.url] = download_sha256(client, file.url)
                if downloaded[file.url] != expected[file.filename]:
                    status = FileStatus(file.filename, expected[file.filename], HASH_MISMATCH, downloaded[file.url])
                    raise HashMismatchFailed(
                        f"{site.simple_url(subindex)}: {file.filename} downloaded from "
                        f"{file.url} hashes to {downloaded[file.url]}, the build's is "
                        f"{expected[file.filename]}",
                        [status],
                    )
    logger.info(
        "%s: %d file(s) listed with their sha256 in %d sub-index(es); %d download(s) hashed",
        site.name,
        len(expected),
        len(listings),
        len(downloaded),
    )
    return listings
