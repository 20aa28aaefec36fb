"""Reading indexes we cannot trust: byte proof, hard deadlines, hostile listings (issues 14.1, 15.4, 15.5).

Every index here is a real HTTP server on loopback (tests/hostile_index.py) scripted to lie, drip or
send garbage; `wheelflow verify` runs as a user runs it, in a subprocess.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from conftest import run_cli
from hostile_index import HostileIndex, sha256

from wheelflow.core.deadline import Deadline
from wheelflow.core.errors import MalformedListingError, SpecError, UsageError
from wheelflow.index.simple_api import MAX_LISTING_BYTES, list_project_files, parse_html_page
from wheelflow.proof.verification import FileStatus, expected_from_paths, prove_served

PROJECT = "tiny-pkg"
WHEEL, SDIST = "tiny_pkg-1.0.0-py3-none-any.whl", "tiny_pkg-1.0.0.tar.gz"
WHEEL_BYTES, SDIST_BYTES = b"the wheel that was built\n", b"the sdist that was built\n"


@pytest.fixture
def hostile():
    with HostileIndex() as index:
        yield index


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    """The built files, as `--expect PATH` names them: their sha256 is what must be served."""
    (tmp_path / WHEEL).write_bytes(WHEEL_BYTES)
    (tmp_path / SDIST).write_bytes(SDIST_BYTES)
    return tmp_path / WHEEL, tmp_path / SDIST


def verify(index: HostileIndex, *args: str, timeout: float = 60):
    return run_cli("verify", f"{PROJECT}==1.0.0", "--index", index.simple_url, "--no-install", *args, timeout=timeout)


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# -- byte proof (14.1) -------------------------------------------------------------------------------


@pytest.mark.case(
    "fault",
    "the listing gives the true sha256 but the index serves other bytes for one file",
    "every file is downloaded and hashed: a hash mismatch naming that file",
)
def test_a_file_served_with_other_bytes_than_listed_is_a_named_mismatch(hostile: HostileIndex, built) -> None:
    wheel, sdist = built
    hostile.list_files(
        PROJECT,
        [
            hostile.serve_file(WHEEL, WHEEL_BYTES),
            hostile.serve_file(SDIST, b"damaged on the way", listed_sha256=sha256(SDIST_BYTES)),
        ],
    )
    result = verify(hostile, "--expect", str(wheel), "--expect", str(sdist), "--json")
    assert result.returncode == 1
    assert {f["filename"]: f["status"] for f in json.loads(result.stdout)["files"]} == {
        WHEEL: "verified",
        SDIST: "hash-mismatch",
    }
    assert one_line(result.stderr) == (
        f"wheelflow: verify failed: {SDIST}: the index lists sha256 {sha256(SDIST_BYTES)} but the downloaded bytes "
        f"have sha256 {sha256(b'damaged on the way')}"
    )


@pytest.mark.case(
    "fault",
    "a release whose files are already on the index is verified again",
    "each file is downloaded from the URL the listing gives, every run",
)
def test_every_expected_file_is_downloaded_on_every_run(hostile: HostileIndex, built) -> None:
    hostile.list_files(
        PROJECT,
        [
            hostile.serve_file(WHEEL, WHEEL_BYTES, path="/elsewhere/w"),
            hostile.serve_file(SDIST, SDIST_BYTES, path="/elsewhere/s"),
        ],
    )
    for _ in range(2):
        assert verify(hostile, "--expect", str(built[0]), "--expect", str(built[1])).returncode == 0
    assert sorted(p for p in hostile.gets if p.startswith("/elsewhere/")) == ["/elsewhere/s"] * 2 + ["/elsewhere/w"] * 2


def test_a_proven_file_is_described_as_downloaded_never_as_verified_from_a_listing() -> None:
    assert FileStatus(WHEEL, "ab" * 32, "verified", "ab" * 32).describe() == f"{WHEEL} downloaded, sha256 matches"
    assert "verified" not in FileStatus(WHEEL, "ab" * 32, "listed", "ab" * 32).describe()


@pytest.mark.case(
    "bad input", "the listing names one file twice with different sha256", "refused in one line naming both"
)
def test_a_file_listed_twice_with_different_hashes_is_refused_naming_both(hostile: HostileIndex) -> None:
    first = hostile.serve_file(WHEEL, WHEEL_BYTES, path="/a/" + WHEEL)
    second = hostile.serve_file(WHEEL, b"other bytes", path="/b/" + WHEEL)
    hostile.list_files(PROJECT, [first, second])
    result = verify(hostile, "--expect", WHEEL)
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"wheelflow: error: {hostile.simple_url}{PROJECT}/ lists {WHEEL} twice with different sha256: "
        f"{sha256(WHEEL_BYTES)} (at {hostile.url}a/{WHEEL}) and {sha256(b'other bytes')} (at {hostile.url}b/{WHEEL}); "
        "fix: the index contradicts itself: remove the wrong copy from the index"
    )


@pytest.mark.parametrize("form", ["json", "html"])
def test_an_uppercase_hex_digest_is_the_same_digest(hostile: HostileIndex, built, form: str) -> None:
    entry = hostile.serve_file(WHEEL, WHEEL_BYTES, listed_sha256=sha256(WHEEL_BYTES).upper())
    if form == "json":
        hostile.list_files(PROJECT, [entry])
    else:
        hostile.list_html(PROJECT, f'<a href="{entry["url"]}#sha256={sha256(WHEEL_BYTES).upper()}">{WHEEL}</a>')
    result = verify(hostile, "--expect", str(built[0]), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"] == [
        {"filename": WHEEL, "sha256": sha256(WHEEL_BYTES), "status": "verified"}
    ]


def test_downloads_run_concurrently_up_to_the_bound_and_report_their_rate(hostile: HostileIndex) -> None:
    names = [f"tiny_pkg-1.0.0-cp3{i}-cp3{i}-linux_x86_64.whl" for i in range(8)]
    hostile.list_files(PROJECT, [hostile.serve_file(n, n.encode()) for n in names])
    in_flight, most, lock = [0], [0], threading.Lock()
    # Each download waits (in the server) until four are in flight at once: a serial downloader
    # breaks the barrier and gets a 404 for its file, which fails the proof.
    four_at_once = threading.Barrier(4, timeout=20)

    def arrive(path: str) -> None:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            four_at_once.wait()
        finally:
            with lock:
                in_flight[0] -= 1

    hostile.on_file_get = arrive
    log: list[str] = []
    with httpx.Client() as client:
        statuses = prove_served(
            client,
            hostile.simple_url,
            PROJECT,
            "1.0.0",
            {n: sha256(n.encode()) for n in names},
            deadline=Deadline.after(60),
            concurrency=4,
            log=log.append,
        )
    assert [s.status for s in statuses] == ["verified"] * 8
    assert most[0] == 4  # four at once, never more
    assert sorted(line.split(":")[0] for line in log) == sorted(f"downloaded {n}" for n in names)
    assert all(line.endswith(" MB/s)") for line in log)


# -- hard deadlines (15.4) ---------------------------------------------------------------------------


@pytest.mark.case(
    "fault",
    "the index drips its answer one byte every 2 s (listing, headers, or a file)",
    "`verify --timeout 10` ends within 15 s, exit 1, one line naming the URL and the time spent",
)
@pytest.mark.parametrize("where", ["listing body", "listing headers", "file download"])
def test_a_dripping_index_cannot_outlast_the_verify_timeout(hostile: HostileIndex, built, where: str) -> None:
    listing = hostile.list_files(PROJECT, [hostile.serve_file(WHEEL, WHEEL_BYTES)])
    slow = {"listing body": listing, "listing headers": listing, "file download": f"/files/{WHEEL}"}[where]
    (hostile.drip_headers if where == "listing headers" else hostile.drip_body).add(slow)
    # The subprocess timeout is the bound the issue sets (a deadline, not a measurement).
    result = verify(hostile, "--expect", str(built[0]), "--timeout", "10", timeout=15)
    assert result.returncode == 1
    line = one_line(result.stderr)
    action = "download" if where == "file download" else "read"
    assert line.startswith(
        f"wheelflow: error: cannot {action} {hostile.url.rstrip('/')}{slow}: no complete answer after "
    )
    assert "(the deadline was 10 s)" in line


def test_a_read_takes_the_earliest_of_its_own_the_current_and_the_default_deadline() -> None:
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    own, outer = Deadline.after(30, clock=clock), Deadline.after(10, clock=clock)
    assert Deadline.for_read(own, 120) is own
    with outer.applied():
        assert Deadline.for_read(own, 120) is outer
        assert Deadline.for_read(None, 120) is outer
    assert Deadline.current() is None
    now[0] = 10
    assert outer.expired and outer.remaining() == 0


# -- hostile listings (15.5) -------------------------------------------------------------------------


def _entry(**fields) -> dict:
    return {"filename": WHEEL, "url": f"/files/{WHEEL}", "hashes": {"sha256": sha256(WHEEL_BYTES)}, **fields}


MALFORMED = {
    "not JSON": (b"<html>surprise</html>", "not JSON (Expecting value: line 1 column 1 (char 0))"),
    "a list at the top": ([], "the top level is a list, not an object"),
    "no meta": ({"name": PROJECT, "files": []}, "meta: Field required"),
    "api version 2": (
        {"meta": {"api-version": "2.0"}, "name": PROJECT, "files": []},
        "meta.api-version '2.0' is not 1.x",
    ),
    "files not a list": (
        {"meta": {"api-version": "1.0"}, "name": PROJECT, "files": {}},
        "files: Input should be a valid list",
    ),
    "no filename": ([{"url": "/f", "hashes": {}}], "files.0.filename: Field required"),
    "hashes as a list": ([_entry(hashes=["sha256", "00"])], "files.0.hashes: Input should be a valid dictionary"),
    "a number for a string": ([_entry(filename=5)], "files.0.filename: Input should be a valid string"),
    "a number for a hash": ([_entry(hashes={"sha256": 5})], "files.0.hashes.sha256: Input should be a valid string"),
    "a javascript URL": ([_entry(url="javascript:alert(1)")], "file URL 'javascript:alert(1)' is not an http(s) URL"),
    "a file URL": ([_entry(url="file:///etc/passwd")], "file URL 'file:///etc/passwd' is not an http(s) URL"),
    "a path for a name": ([_entry(filename="../../.bashrc")], "file name '../../.bashrc' is not a plain file name"),
    "a hash that is not hex": (
        [_entry(hashes={"sha256": "z" * 64})],
        f"{WHEEL}: sha256 '{'z' * 64}' is not 64 hex digits",
    ),
}


@pytest.mark.case(
    "bad input",
    "the index answers a malformed PEP 691 listing (13 kinds)",
    "exit 1, one line naming the listing URL and what is wrong, no traceback",
)
@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_json_listing_is_one_line_naming_the_url_and_the_fault(hostile: HostileIndex, case: str) -> None:
    payload, problem = MALFORMED[case]
    if isinstance(payload, list) and payload:  # a list of entries: wrap it in an otherwise valid page
        hostile.list_files(PROJECT, payload)
    else:
        hostile.list_json(PROJECT, payload)
    result = verify(hostile, "--expect", WHEEL)
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"wheelflow: error: {hostile.simple_url}{PROJECT}/ is not a valid PEP 691 JSON listing: {problem}; "
        "fix: check the index URL; the index answers with a broken listing"
    )


@pytest.mark.case(
    "bad input",
    "the index redirects in a loop, to file://, or to javascript:",
    "exit 1 at once, one line naming the listing URL and the redirect; never retried",
)
@pytest.mark.parametrize("where", ["a loop", "file://", "javascript:", "a chain of 12"])
def test_a_redirect_loop_or_a_non_http_target_is_one_permanent_line(hostile: HostileIndex, where: str) -> None:
    listing = f"/simple/{PROJECT}/"
    if where == "a loop":
        hostile.redirects |= {listing: "/elsewhere/", "/elsewhere/": listing}
        problem = f"it redirects in a loop ({hostile.simple_url}{PROJECT}/ → {hostile.url}elsewhere/ → "
    elif where == "a chain of 12":
        hostile.redirects |= {listing: "/hop/1"} | {f"/hop/{i}": f"/hop/{i + 1}" for i in range(1, 12)}
        problem = "more than 10 redirects"
    else:
        target = "file:///etc/passwd" if where == "file://" else "javascript:alert(1)"
        hostile.redirects[listing] = target
        problem = f"it redirects to '{target}', not an http(s) URL"
    result = verify(hostile, "--expect", WHEEL, "--timeout", "60")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith(f"wheelflow: error: cannot read {hostile.simple_url}{PROJECT}/: ")
    assert problem in line
    assert hostile.gets.count(listing) == 1  # permanent: not read again until the deadline


@pytest.mark.case(
    "bad input",
    "the index answers a JSON listing nested 100,000 levels deep",
    "exit 1, one line naming the listing URL, no RecursionError traceback",
)
def test_a_deeply_nested_listing_is_one_line_naming_the_url(hostile: HostileIndex) -> None:
    depth = 100_000
    hostile.list_json(
        PROJECT, b'{"meta": {"api-version": "1.0"}, "name": "x", "files": ' + b"[" * depth + b"]" * depth + b"}"
    )
    result = verify(hostile, "--expect", WHEEL)
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"wheelflow: error: {hostile.simple_url}{PROJECT}/ is not a valid PEP 691 JSON listing: nested too deeply "
        "to be a listing; fix: check the index URL; the index answers with a broken listing"
    )


@pytest.mark.parametrize(
    "href, problem",
    [
        (f"/files/..%2F..%2F{WHEEL}", f"file name '../../{WHEEL}' is not a plain file name"),
        ("/files/", "file name '../x' is not a plain file name"),  # no name in the URL: the label is used, and checked
        (f"javascript:alert(1)//{WHEEL}", "is not an http(s) URL"),
        (f"/files/{WHEEL}#sha256=abc", "sha256 'abc' is not 64 hex digits"),
    ],
)
def test_names_and_urls_from_an_html_listing_are_validated(href: str, problem: str) -> None:
    with pytest.raises(MalformedListingError) as err:
        parse_html_page(f'<a href="{href}">../x</a>', "http://127.0.0.1:9/simple/tiny-pkg/")
    assert problem in str(err.value) and str(err.value).startswith("http://127.0.0.1:9/simple/tiny-pkg/ is not a valid")
    assert not err.value.transient  # reading the same broken listing again cannot help


@pytest.mark.parametrize("how", ["declared", "streamed"])
def test_a_listing_larger_than_64_mib_is_refused_without_reading_it_all(hostile: HostileIndex, how: str) -> None:
    path = hostile.list_files(PROJECT, [])
    if how == "declared":
        hostile.declared_size[path] = MAX_LISTING_BYTES + 1
        hostile.drip_body.add(path)  # the body never comes: only the declaration can be refused in time
    else:
        hostile.endless.add(path)  # no length declared: the read has to stop counting at the limit
    with httpx.Client() as client, pytest.raises(MalformedListingError) as err:
        list_project_files(client, hostile.simple_url, PROJECT, deadline=Deadline.after(60))
    detail = f"is {MAX_LISTING_BYTES + 1} bytes long" if how == "declared" else "sent more than the 64 MiB"
    assert str(err.value).startswith(f"{hostile.simple_url}{PROJECT}/ {detail}")


# -- --expect paths ----------------------------------------------------------------------------------


def test_expect_takes_a_built_files_sha256_or_a_bare_name(built) -> None:
    wheel, _ = built
    assert expected_from_paths([str(wheel), SDIST]) == {WHEEL: sha256(WHEEL_BYTES), SDIST: None}


@pytest.mark.parametrize(
    "item, problem",
    [
        ("dist/tiny_pkg-1.0.0-py3-none-any.whl", "'dist/tiny_pkg-1.0.0-py3-none-any.whl' does not exist"),
        ("not-a-distribution.txt", "'not-a-distribution.txt' is neither a file here nor a wheel or sdist file name"),
    ],
)
def test_expect_naming_a_path_that_does_not_exist_is_a_usage_error(item: str, problem: str) -> None:
    with pytest.raises(UsageError) as err:
        expected_from_paths([item])
    assert str(err.value).startswith(f"usage error: --expect: {problem}; fix: ")
    assert isinstance(err.value, SpecError) and err.value.exit_code == 2  # the CLI's exit code for usage errors


@pytest.mark.case(
    "bad input",
    "verify --expect naming a path that does not exist",
    "exit 2, one line naming the path and the fix; the index is not read",
)
def test_expect_naming_a_missing_path_exits_2(hostile: HostileIndex, tmp_path: Path) -> None:
    missing = tmp_path / "dist" / WHEEL
    result = verify(hostile, "--expect", str(missing))
    assert result.returncode == 2 and hostile.gets == []
    assert one_line(result.stderr) == (
        f"wheelflow: error: usage error: --expect: '{missing}' does not exist; fix: give "
        "the path of a built file, or a bare file name to check only that it is served"
    )


def test_verify_without_expect_proves_every_listed_file(hostile: HostileIndex) -> None:
    hostile.list_files(
        PROJECT,
        [
            hostile.serve_file(WHEEL, WHEEL_BYTES),
            hostile.serve_file(SDIST, b"other bytes", listed_sha256=sha256(SDIST_BYTES)),
        ],
    )
    result = verify(hostile, "--json")
    assert result.returncode == 1
    assert {f["filename"]: f["status"] for f in json.loads(result.stdout)["files"]} == {
        WHEEL: "served",
        SDIST: "hash-mismatch",
    }
