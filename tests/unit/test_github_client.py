"""The GitHub Releases client against the stand-in GitHub (tests/githubstub.py: GitHub itself cannot
be reached from these machines; the stand-in follows REST API version 2022-11-28). Real HTTP on
loopback; each test runs in well under a second except the slow download's one-second deadline."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from githubstub import TOKEN, GitHubStub

from wheelflow.core.deadline import Deadline
from wheelflow.core.errors import (
    CredentialsError,
    DeadlineExceeded,
    ExitCode,
    HashMismatchError,
    IndexRedirectError,
    RateLimited,
    ReleaseAssetError,
    VerificationError,
    WheelflowError,
)
from wheelflow.index.githubreleases import (
    MAX_ASSET_BYTES,
    UPLOAD_ATTEMPTS,
    GitHubReleases,
    Release,
    file_sha256,
    uploads_base,
)

REPO = "octo/flash"
TAG = "v2.8.3"


@pytest.fixture
def stub():
    with GitHubStub(REPO) as github:
        yield github
        # Wherever a test went, the token went only into the Authorization header of the API and uploads hosts.
        for seen in github.seen:
            assert TOKEN not in seen.target
            if seen.host in ("download", "storage"):
                assert seen.authorization is None, seen


def client(stub: GitHubStub, *, seconds: float = 120.0, waits: list[float] | None = None, token: str = TOKEN):
    return GitHubReleases(
        REPO,
        token,
        api_url=stub.api_url,
        uploads_url=stub.uploads_url,
        deadline=Deadline.after(seconds),
        sleep=(waits.append if waits is not None else _no_wait),
    )


def _no_wait(seconds: float) -> None:
    """Backoffs are recorded as asked, not slept: the stand-in answers at once."""


def wheel(
    tmp_path: Path,
    name: str = "flash_attn-2.8.3+cu12torch2.7cxx11abiTRUE-cp312-cp312-linux_x86_64.whl",
    data: bytes = b"",
) -> Path:
    path = tmp_path / name
    path.write_bytes(data or hashlib.sha256(name.encode()).digest() * 300)
    return path


def one_line_with_fix(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and "; fix: " in message, message
    assert TOKEN not in message and TOKEN not in repr(error)
    return message


def test_draft_is_created_once_reused_after_and_a_re_upload_is_already_present(stub, tmp_path: Path) -> None:
    gh = client(stub)
    release, created = gh.draft_for_tag(TAG)
    assert created and release.draft and stub.release(TAG).draft
    again, created_again = gh.draft_for_tag(TAG)  # the by-tag endpoint hides drafts: found in the list
    assert (again.id, created_again) == (release.id, False)
    path = wheel(tmp_path)
    first = gh.upload(release, path)
    assert first.outcome == "uploaded" and first.asset.digest == file_sha256(path)
    assert gh.upload(release, path).outcome == "already present"
    assert stub.asset_names(TAG) == [path.name]
    assert TOKEN not in repr(gh)


def test_a_re_run_finds_its_assets_in_one_listing_and_uploads_nothing(stub, tmp_path: Path) -> None:
    gh = client(stub)
    release, _ = gh.draft_for_tag(TAG)
    paths = [wheel(tmp_path, f"w{i}-1.0-py3-none-any.whl") for i in range(3)]
    for path in paths[:2]:
        gh.upload(release, path)
    stub.add_asset(stub.release(TAG), paths[2].name, b"half", state="starter")  # an earlier run's broken upload
    before = len(stub.seen)
    present = gh.already_there(release, {p.name: file_sha256(p) for p in paths})
    assert sorted(present) == [p.name for p in paths[:2]]
    assert [(s.host, s.method) for s in stub.seen[before:]] == [("api", "GET"), ("api", "DELETE")]
    assert stub.asset_names(TAG) == [p.name for p in paths[:2]]
    stub.add_asset(stub.release(TAG), paths[2].name, b"someone else's")
    with pytest.raises(HashMismatchError, match="another file under our name"):
        gh.already_there(release, {paths[2].name: file_sha256(paths[2])})


def test_publish_makes_the_release_visible_and_users_download_the_same_bytes(stub, tmp_path: Path) -> None:
    gh = client(stub)
    release, _ = gh.draft_for_tag(TAG)
    path = wheel(tmp_path)
    asset = gh.upload(release, path).asset
    gh.prove(asset, file_sha256(path))  # the draft's asset, through the API (the token reaches drafts)
    with pytest.raises(ReleaseAssetError, match="HTTP 404"):
        gh.prove(asset, file_sha256(path), as_user=True)  # users see nothing of a draft
    published = gh.publish(release)
    assert not published.draft and not stub.release(TAG).draft
    gh.prove(asset, file_sha256(path), as_user=True)  # browser_download_url -> 302 -> storage, no token
    assert [s.host for s in stub.seen[-2:]] == ["download", "storage"]


@pytest.mark.case(
    "fault",
    "GitHub release: another file is already an asset under the wheel's name",
    "the release stops: one line naming both sha256 and the fix; nothing is replaced",
)
def test_another_file_under_our_name_stops(stub, tmp_path: Path) -> None:
    gh = client(stub)
    release, _ = gh.draft_for_tag(TAG)
    path = wheel(tmp_path)
    stub.add_asset(stub.release(TAG), path.name, b"someone else's wheel")
    with pytest.raises(HashMismatchError) as stopped:
        gh.upload(release, path)
    assert "another file under our name" in one_line_with_fix(stopped.value)
    assert stub.assets[stub.release(TAG).assets[0]].data == b"someone else's wheel"


@pytest.mark.case(
    "fault",
    "GitHub release: the tag's release is already published and the run may not add to it",
    "refused before any upload: one line saying users would see assets appear, with the fix",
)
def test_a_published_release_gets_assets_only_when_allowed(stub, tmp_path: Path) -> None:
    existing = stub.add_release(TAG, draft=False)
    gh = client(stub)
    with pytest.raises(ReleaseAssetError) as refused:
        gh.draft_for_tag(TAG, published_fix="set the target's add-to-published")
    assert one_line_with_fix(refused.value).endswith("fix: set the target's add-to-published")
    release, created = gh.draft_for_tag(TAG, allow_published=True)
    assert (release.id, release.draft, created) == (existing.id, False, False)


def test_rollback_deletes_this_runs_assets_and_the_draft_it_created_only(stub, tmp_path: Path) -> None:
    gh = client(stub)
    release, created = gh.draft_for_tag(TAG)
    uploaded = [gh.upload(release, wheel(tmp_path, f"w{i}-1.0-py3-none-any.whl")).asset for i in range(2)]
    assert gh.rollback(release, uploaded, created=created) == [a.name for a in uploaded] + [f"release {TAG}"]
    assert stub.release(TAG) is None

    # A draft this run found (another run's): only this run's assets go, the draft and the others' assets stay.
    theirs = stub.add_release("v9", draft=True)
    stub.add_asset(theirs, "theirs-1.0-py3-none-any.whl", b"theirs")
    found, created = gh.draft_for_tag("v9")
    mine = gh.upload(found, wheel(tmp_path, "mine-1.0-py3-none-any.whl")).asset
    assert gh.rollback(found, [mine], created=created) == [mine.name]
    assert stub.asset_names("v9") == ["theirs-1.0-py3-none-any.whl"]


@pytest.mark.case(
    "fault",
    "GitHub release: an asset's bytes differ from its digest (storage serves other bytes)",
    "caught by the download proof: one line naming both sha256, with the fix",
)
def test_bytes_that_differ_from_the_digest_are_caught(stub, tmp_path: Path) -> None:
    gh = client(stub)
    release, _ = gh.draft_for_tag(TAG)
    path = wheel(tmp_path)
    asset = gh.upload(release, path).asset
    with pytest.raises(
        VerificationError, match="GitHub records sha256 .* for asset .*, the built file has 0{64}; fix:"
    ):
        gh.prove(asset, "0" * 64)  # GitHub's own digest is compared before a byte is downloaded
    stub.corrupt.add(path.name)
    with pytest.raises(HashMismatchError) as caught:
        gh.prove(asset, file_sha256(path))
    message = one_line_with_fix(caught.value)
    assert f"the built file has {file_sha256(path)}" in message and "GitHub's digest says" in message


@pytest.mark.case(
    "fault",
    "GitHub release: a 5xx mid-upload leaves a half-made (starter) asset",
    "the half-made asset is deleted and the upload retried; after 3 failures one line with the fix, no asset left",
)
def test_a_5xx_mid_upload_deletes_the_half_made_asset_and_retries(stub, tmp_path: Path) -> None:
    waits: list[float] = []
    gh = client(stub, waits=waits)
    release, _ = gh.draft_for_tag(TAG)
    path = wheel(tmp_path)
    stub.fail_uploads = 1
    assert gh.upload(release, path).outcome == "uploaded"
    assert stub.asset_names(TAG) == [path.name] and waits == [1.0]
    assert any(s.method == "DELETE" and "/releases/assets/" in s.target for s in stub.seen)

    other = wheel(tmp_path, "other-1.0-py3-none-any.whl")
    stub.fail_uploads = UPLOAD_ATTEMPTS
    with pytest.raises(ReleaseAssetError) as failed:
        gh.upload(release, other)
    message = one_line_with_fix(failed.value)
    assert message.startswith(f"upload of {other.name} to release {TAG} of {REPO} failed 3 times (last: HTTP 502)")
    assert failed.value.transient and stub.asset_names(TAG) == [path.name]


@pytest.mark.case(
    "fault",
    "GitHub release: the download host redirects in a loop",
    "one line naming the loop and the fix; not retried",
)
def test_a_redirect_loop_is_one_line(stub, tmp_path: Path) -> None:
    gh = client(stub)
    release, _ = gh.draft_for_tag(TAG)
    asset = gh.upload(release, wheel(tmp_path)).asset
    gh.publish(release)
    stub.redirect_loop = True
    with pytest.raises(IndexRedirectError) as looped:
        gh.download_sha256(asset, as_user=True)
    assert "redirects in a loop" in one_line_with_fix(looped.value) and not looped.value.transient


@pytest.mark.case(
    "fault",
    "GitHub release: the download host drips its bytes slower than the deadline allows",
    "stopped at the deadline: one line naming the URL and the fix",
)
def test_a_slow_download_ends_at_the_deadline(stub, tmp_path: Path) -> None:
    gh = client(stub)
    release, _ = gh.draft_for_tag(TAG)
    asset = gh.upload(release, wheel(tmp_path)).asset
    stub.slow_download = 0.2
    with pytest.raises(DeadlineExceeded) as slow:
        client(stub, seconds=1.0).download_sha256(asset)
    assert "did not complete within the release's deadline (1 s)" in one_line_with_fix(slow.value)


@pytest.mark.case(
    "fault",
    "GitHub answers a primary rate limit (403, X-RateLimit-Remaining: 0, X-RateLimit-Reset) or a secondary one "
    "(403/429 with Retry-After)",
    "waited out when the deadline leaves the time, else one line naming the wait and the fix",
)
def test_rate_limits_are_waited_out_only_within_the_deadline(stub, tmp_path: Path) -> None:
    waits: list[float] = []
    gh = client(stub, waits=waits)
    stub.rate_limit("primary", seconds=30)
    stub.rate_limit("secondary", status=429, seconds=5)
    release, _ = gh.draft_for_tag(TAG)
    assert len(waits) == 2 and 29 <= waits[0] <= 32 and waits[1] == 5.0
    stub.rate_limit("secondary", seconds=7)  # on the uploads host too
    assert gh.upload(release, wheel(tmp_path)).outcome == "uploaded" and waits[2] == 7.0
    stub.rate_limit("secondary-bare")  # no header at all: GitHub asks for at least a minute
    assert gh.release_for_tag(TAG) is not None and waits[3] == 60.0

    short = client(stub, seconds=60.0, waits=waits)
    stub.rate_limit("primary", seconds=3600)
    with pytest.raises(RateLimited) as limited:
        short.release_for_tag(TAG)
    message = one_line_with_fix(limited.value)
    assert re.search(r"GitHub's rate limit for octo/flash asks to wait 36\d\d s \(until \d\d:\d\d:\d\d UTC\)", message)
    assert "more than the 60 s left of the release's deadline" in message and len(waits) == 4


@pytest.mark.case(
    "bad input",
    "a release asset of 2 GiB or more",
    "refused before any byte is sent: one line with the size, GitHub's limit and the fix",
)
def test_an_asset_of_two_gib_is_refused_before_upload(stub, tmp_path: Path) -> None:
    gh = client(stub)
    release, _ = gh.draft_for_tag(TAG)
    big = tmp_path / "huge-1.0-py3-none-any.whl"
    with big.open("wb") as f:
        f.truncate(MAX_ASSET_BYTES)  # sparse: no 2 GiB written
    uploads_before = [s for s in stub.seen if s.host == "uploads"]
    with pytest.raises(ReleaseAssetError) as refused:
        gh.upload(release, big, sha256="0" * 64)
    assert one_line_with_fix(refused.value).startswith(
        "huge-1.0-py3-none-any.whl is 2.00 GiB, and GitHub takes release assets under 2 GiB"
    )
    assert [s for s in stub.seen if s.host == "uploads"] == uploads_before


@pytest.mark.case(
    "secret",
    "a release's upload_url names a host other than the uploads host",
    "refused before the token is sent there: one line with the fix",
)
def test_the_token_goes_to_no_upload_host_but_the_configured_one(stub, tmp_path: Path) -> None:
    gh = client(stub)
    release, _ = gh.draft_for_tag(TAG)
    elsewhere = Release(
        release.id, TAG, True, stub.storage_url + f"/repos/{REPO}/releases/{release.id}/assets{{?name}}"
    )
    with pytest.raises(ReleaseAssetError) as refused:
        gh.upload(elsewhere, wheel(tmp_path))
    assert "the token is not sent elsewhere" in one_line_with_fix(refused.value)
    assert not [s for s in stub.seen if s.host == "storage"]


@pytest.mark.case(
    "fault",
    "the GitHub token is refused (401 Bad credentials)",
    "exit 1, one line naming the request and how to give a valid token; the token is in no message",
)
def test_a_refused_token_is_one_line_without_the_token(stub) -> None:
    wrong = "ghp_wrongTokenAlsoNeverShown0000000000"
    with pytest.raises(CredentialsError) as refused:
        client(stub, token=wrong).draft_for_tag(TAG)
    message = one_line_with_fix(refused.value)
    assert "GitHub refused the token: POST" in message and wrong not in message
    assert refused.value.exit_code == ExitCode.FAILED and isinstance(refused.value, WheelflowError)


@pytest.mark.case(
    "bad input",
    "the GitHub API URL points at GitHub's web host (an HTML page, not the REST API)",
    "one line naming the URL and the API URL to give instead",
)
def test_an_api_url_that_is_not_the_api_is_one_line() -> None:
    with GitHubStub(REPO) as stub:  # not the fixture: this api-url sends the token to the web host on purpose
        gh = GitHubReleases(REPO, TOKEN, api_url=stub.download_url, uploads_url=stub.uploads_url, sleep=_no_wait)
        with pytest.raises(ReleaseAssetError) as wrong:
            gh.release_for_tag(TAG)
    assert one_line_with_fix(wrong.value) == (
        f"{stub.download_url}/repos/{REPO}/releases/tags/{TAG} did not answer with a release as GitHub's REST API "
        "does; fix: check the API URL (https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise)"
    )


def test_listings_follow_the_link_header_and_drafts_are_found_past_the_first_page(tmp_path: Path) -> None:
    with GitHubStub(REPO, per_page_max=2) as stub:
        for i in range(5):
            stub.add_release(f"v0.{i}", draft=False)
        draft = stub.add_release("v0.0.1-draft", draft=True)
        for i in range(2):
            stub.add_release(f"v1.{i}", draft=False)  # listed first (newest): the draft is on page 2
        gh = client(stub)
        assert gh.release_for_tag("v0.0.1-draft").id == draft.id
        for i in range(5):
            stub.add_asset(draft, f"a{i}.whl", b"x")
        assert [a.name for a in gh.assets(gh.release_for_tag("v0.0.1-draft"))] == [f"a{i}.whl" for i in range(5)]
        assert gh.release_for_tag("v404") is None


def test_the_uploads_host_follows_the_api_url() -> None:
    assert uploads_base("https://api.github.com") == "https://uploads.github.com"
    assert uploads_base("https://ghe.example.com/api/v3/") == "https://ghe.example.com/api/uploads"


@pytest.mark.case(
    "secret",
    "a GitHub token that is empty or holds a newline or spaces (a pasted file)",
    "refused before any request: one line with the fix, the token in no message",
)
def test_a_token_with_a_newline_is_refused_before_any_request(stub) -> None:
    for token in ("", "ghp_pastedWithItsNewline00000000000000\n", "Bearer ghp_x"):
        with pytest.raises(CredentialsError) as refused:
            client(stub, token=token)
        message = one_line_with_fix(refused.value)
        assert message.startswith("GitHub release of octo/flash: the token is empty or holds spaces")
        assert token.strip() == "" or token.strip() not in message
    assert stub.seen == []
