"""Polling the listing until files appear: backoff, deadline, and mismatches that end it at once."""

from __future__ import annotations

from functools import partial

import pytest

from wheelflow.core.deadline import Deadline
from wheelflow.index.simple_api import ServedFile
from wheelflow.proof.verification import poll_until_served as poll
from wheelflow.proof.verification import prove_files

# These listings are fakes (their URLs are not real): the index they stand for serves exactly the
# bytes it lists. Downloads over real sockets are tested in test_byte_proof.py.
poll_until_served = partial(poll, download=lambda served, deadline: served.sha256)

A = ServedFile("a-1.0-py3-none-any.whl", "u", "aaa")
B = ServedFile("a-1.0.tar.gz", "u", "bbb")


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_waits_with_backoff_until_the_lagging_file_appears() -> None:
    time = FakeTime()
    listings = iter([[A], [A], [A], [A, B]])
    statuses, _ = poll_until_served(
        lambda: next(listings), {A.filename: "aaa", B.filename: "bbb"}, 60, clock=time.clock, sleep=time.sleep
    )
    assert [s.status for s in statuses] == ["verified", "verified"]
    assert time.sleeps == [0.25, 0.5, 1.0]


def test_gives_up_at_the_deadline_naming_the_missing_file() -> None:
    time = FakeTime()
    statuses, _ = poll_until_served(
        lambda: [A], {A.filename: "aaa", B.filename: "bbb"}, 10, clock=time.clock, sleep=time.sleep
    )
    assert {s.filename: s.status for s in statuses} == {A.filename: "verified", B.filename: "missing"}
    assert time.now == 10  # the last sleep is cut to the deadline, never past it


def test_hash_mismatch_ends_the_wait_at_once() -> None:
    time = FakeTime()
    statuses, _ = poll_until_served(
        lambda: [ServedFile(A.filename, "u", "other")],
        {A.filename: "aaa", B.filename: "bbb"},
        600,
        clock=time.clock,
        sleep=time.sleep,
    )
    assert statuses[0].status == "hash-mismatch" and statuses[0].served_sha256 == "other"
    assert time.sleeps == []


def test_the_public_index_gets_a_deadline_past_its_cdn_cache_and_local_indexes_seconds() -> None:
    from wheelflow.index.indexes import resolve_endpoints

    # The public index's Simple API pages are cached ~10 minutes at its CDN: 30 minutes covers a purge lag.
    assert resolve_endpoints("pypi").verify_timeout == 1800
    assert resolve_endpoints("testpypi").verify_timeout == 1800
    assert resolve_endpoints("http://127.0.0.1:8080/simple/").verify_timeout == 60


def test_polls_back_off_to_a_ceiling_over_a_long_deadline() -> None:
    time = FakeTime()
    # The public index's cap (wheelflow.index.indexes.PUBLIC_POLL_CAP): gentle on its CDN over 30 minutes.
    poll_until_served(lambda: [], {A.filename: "aaa"}, 1800, clock=time.clock, sleep=time.sleep, max_delay=10.0)
    assert max(time.sleeps) == 10.0 and len(time.sleeps) < 190  # ~185 reads over 30 minutes, not thousands


def test_a_file_that_appears_after_a_10_s_lag_is_seen_within_2_s() -> None:
    time = FakeTime()
    visible_at = 10.0
    reads: list[float] = []

    def listing() -> list[ServedFile]:
        reads.append(time.now)
        return [A, B] if time.now >= visible_at else [A]

    statuses, _ = poll_until_served(
        listing, {A.filename: "aaa", B.filename: "bbb"}, 60, clock=time.clock, sleep=time.sleep
    )
    assert [s.status for s in statuses] == ["verified", "verified"]
    assert visible_at <= reads[-1] <= visible_at + 2.0
    assert max(time.sleeps) == 2.0  # the backoff is capped: never a long blind wait


def test_a_malformed_listing_fails_at_once_and_a_silent_index_is_retried() -> None:
    import pytest

    from wheelflow.core.errors import IndexReadError, MalformedListingError

    time = FakeTime()

    def broken() -> list[ServedFile]:
        raise MalformedListingError("http://i/simple/a/ is not a valid PEP 691 JSON listing: files: Field required")

    with pytest.raises(MalformedListingError):
        poll_until_served(broken, {A.filename: "aaa"}, 60, clock=time.clock, sleep=time.sleep)
    assert time.sleeps == []  # reading the same garbage again cannot help

    answers = iter([IndexReadError("cannot read http://i/simple/a/: ConnectError"), [A]])

    def flaky() -> list[ServedFile]:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    statuses, _ = poll_until_served(flaky, {A.filename: "aaa"}, 60, clock=time.clock, sleep=time.sleep)
    assert [s.status for s in statuses] == ["verified"] and time.sleeps == [0.25]


def test_a_read_cut_off_by_the_deadline_leaves_the_last_listing_standing() -> None:
    """A slow index under load: the read in flight when the deadline passes does not turn "B is not
    served" into "the index did not answer"; the listing read before it is the verdict."""
    from wheelflow.core.errors import IndexReadError

    time = FakeTime()
    reads = 0

    def slow_second_read() -> list[ServedFile]:
        nonlocal reads
        reads += 1
        if reads == 1:
            return [A]
        time.now = 10.0  # this read used up the rest of the deadline
        raise IndexReadError("cannot read http://i/simple/a/: ReadTimeout")

    statuses, _ = poll_until_served(
        slow_second_read, {A.filename: "aaa", B.filename: "bbb"}, 10, clock=time.clock, sleep=time.sleep
    )
    assert {s.filename: s.status for s in statuses} == {A.filename: "verified", B.filename: "missing"}


@pytest.mark.case(
    "fault",
    "every file the index lists is yanked (PEP 592 data-yanked / yanked)",
    "never verified: the proof fails at once naming the yank and its reason",
)
def test_a_yanked_file_is_never_verified_and_ends_the_wait_at_once() -> None:
    time = FakeTime()
    downloads: list[str] = []
    statuses, _ = poll(
        lambda: [ServedFile(A.filename, "u", "aaa", yanked=True, yanked_reason="broken  build\nplease upgrade")],
        {A.filename: "aaa"},
        600,
        clock=time.clock,
        sleep=time.sleep,
        download=lambda served, deadline: downloads.append(served.filename) or served.sha256,
    )
    [status] = statuses
    assert status.status == "yanked" and time.sleeps == [] and downloads == []
    assert status.describe() == (
        "a-1.0-py3-none-any.whl is yanked on this index (reason: broken build please upgrade): installers skip it, "
        "so its users do not get it; fix: release a new version (e.g. a .post1); an index never takes the same "
        "file again"
    )
    # Proving every listed file (verify without --expect) says the same.
    [status] = prove_files(
        [ServedFile(B.filename, "u", "bbb", yanked=True)], {}, lambda s, d: "bbb", deadline=Deadline.after(5)
    )
    assert status.status == "yanked"
