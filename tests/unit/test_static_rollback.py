"""Rolling a static index back takes out exactly this run's entries from the pages as they are now
(issue 27, item 1): releases that published to the same store in between keep their listings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from wheelcraft import make_sdist, make_wheel

from wheelflow.core.distributions import describe
from wheelflow.index.staticindex import StaticIndexWrite, parse_anchors, publish_static, rollback_static

PUBLIC = "http://127.0.0.1:9/"


def publish(store: Path, out: Path, name: str, version: str) -> StaticIndexWrite:
    out.mkdir(parents=True)
    dists = [
        describe(make_wheel(out, name=name, version=f"{version}+sm90")),
        describe(make_sdist(out, name=name, version=version)),
    ]
    return publish_static(dists, store_url=store.as_uri(), public_url=PUBLIC)


def listing(store: Path, page: str) -> dict[str, str]:
    """Anchor text -> href of a page as served now (empty when the page is gone)."""
    path = store / page
    return {a[""]: a["href"] for a in parse_anchors(path.read_bytes())} if path.exists() else {}


def assert_served(store: Path, publication: StaticIndexWrite) -> None:
    """Every file of ``publication`` is listed on its pages and its bytes hash to the listed sha256."""
    for f in publication.files:
        project = f.path.split("/")[-2]
        page = f"{f.subindex}/{project}/index.html".lstrip("/")
        href = listing(store, page).get(f.filename)
        assert href is not None and href.endswith(f"#sha256={f.sha256}"), (page, f.filename)
        assert hashlib.sha256((store / f.path).read_bytes()).hexdigest() == f.sha256
        assert project in listing(store, f"{f.subindex}/index.html".lstrip("/"))


@pytest.mark.case(
    "fault",
    "a release's static publication is rolled back after two other releases published to the same store",
    "only its own entries leave the current pages; the others stay listed and byte-proven",
)
def test_rollback_takes_out_only_this_runs_entries_from_the_current_pages(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a = publish(store, tmp_path / "a", "tiny_pkg", "1.0.0")  # A: waits for approval after this
    b = publish(store, tmp_path / "b", "other_pkg", "2.0.0")  # B: another project, same store
    a2 = publish(store, tmp_path / "a2", "tiny_pkg", "1.1.0")  # A': another version of A's project

    rollback_static(a)  # A rejected

    assert_served(store, b)
    assert_served(store, a2)
    assert set(listing(store, "index.html")) == {"tiny-pkg", "other-pkg"}
    assert set(listing(store, "tiny-pkg/index.html")) == {"tiny_pkg-1.1.0.tar.gz"}
    assert set(listing(store, "sm90/tiny-pkg/index.html")) == {
        "tiny_pkg-1.1.0+sm90-py3-none-any.whl",
        "tiny_pkg-1.1.0.tar.gz",
    }
    for f in a.files:
        assert not (store / f.path).exists(), f"{f.path} of the rolled-back run is still stored"

    rollback_static(a2)  # then A' too: its project leaves the lists, B stays
    assert_served(store, b)
    assert set(listing(store, "index.html")) == {"other-pkg"}
    assert set(listing(store, "sm90/index.html")) == {"other-pkg"}
    assert not (store / "tiny-pkg" / "index.html").exists()


def test_rollback_alone_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    store = tmp_path / "store"
    publish(store, tmp_path / "old", "tiny_pkg", "1.0.0")
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    rollback_static(publish(store, tmp_path / "new", "tiny_pkg", "1.1.0"))
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_rollback_never_writes_back_old_bytes(tmp_path: Path) -> None:
    """A page changed after the publication keeps that change: the rollback merges, never restores."""
    store = tmp_path / "store"
    a = publish(store, tmp_path / "a", "tiny_pkg", "1.0.0")
    page = store / "tiny-pkg" / "index.html"
    page.write_bytes(
        page.read_bytes().replace(b"<br>\n  </body>", b'<br>\n    <a href="x.tar.gz">x.tar.gz</a><br>\n  </body>')
    )
    rollback_static(a)
    assert set(listing(store, "tiny-pkg/index.html")) == {"x.tar.gz"}
