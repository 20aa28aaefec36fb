"""Recording uploads stays linear in the number of files (issue 36, item 3): the release's upload record
is read from the Prefect server once per stage, not once per upload batch, and each batch adds only its
own files; every batch is still written at once, so a run stopped between batches leaves the earlier
ones on record for its re-run and rollback."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import wheelflow.flows.stages as stages
from wheelflow.core.distributions import Distribution
from wheelflow.core.report import FileReport, ReleaseReport
from wheelflow.ops.monitor import manifest_variable, record_uploads

INDEX = "https://index.example/simple/"


class FakeServer:
    """The artifact that holds the record, as the Prefect server keeps it: each write a new version."""

    def __init__(self, record: dict[str, Any] | None = None) -> None:
        self.versions: list[dict[str, Any]] = [copy.deepcopy(record)] if record else []
        self.reads = 0

    def read(self, key: str) -> Any:
        self.reads += 1
        return copy.deepcopy(self.versions[-1]) if self.versions else None

    def write(self, key: str, value: Any, description: str) -> None:
        self.versions.append(copy.deepcopy(value))  # what is sent, not the caller's object


def release(n_files: int) -> tuple[SimpleNamespace, SimpleNamespace, list[Distribution]]:
    dists = [Distribution(Path(f"demo-1.0-cp311-cp311-linux_{n}.whl"), "wheel", f"{n:064x}") for n in range(n_files)]
    report = ReleaseReport(project="demo", flow_run_id="run-2")
    report.files = [FileReport(d.filename, d.sha256, "prod", d.kind) for d in dists]
    ctx = SimpleNamespace(spec=SimpleNamespace(name="demo"), version="1.0", report=report)
    publisher = SimpleNamespace(record_keys=lambda target: ("old-spelling", INDEX))
    stage = SimpleNamespace(target=SimpleNamespace(name="prod"), publisher=publisher, files=dists)
    return ctx, stage, dists


@pytest.mark.parametrize("n_files", [10, 200])
def test_the_record_is_read_once_per_stage_whatever_the_number_of_batches(monkeypatch, n_files: int) -> None:
    """One batch per file (uploads that never overlap) was one read of the growing record per file."""
    earlier = {
        "name": "demo",
        "version": "1.0",
        "uploads": {INDEX: {"sdist.tar.gz": {"sha256": "a", "flow_run_id": "1"}}},
    }
    server = FakeServer(earlier)
    monkeypatch.setattr(stages, "read_record", server.read)
    monkeypatch.setattr(stages, "write_record", server.write)
    ctx, stage, dists = release(n_files)
    bookkeeping = stages.PublishBookkeeping(ctx, stage)

    for n, dist in enumerate(dists):
        bookkeeping.written(dist, stages.UploadOutcome.UPLOADED, "uploaded")
        bookkeeping.record()
        # written at once: what a crash right now leaves on record holds this file and every earlier one
        assert set(server.versions[-1]["uploads"][INDEX]) == {"sdist.tar.gz"} | {d.filename for d in dists[: n + 1]}

    assert server.reads == 1
    assert len(server.versions) == 1 + n_files
    on_index = server.versions[-1]["uploads"][INDEX]
    assert on_index["sdist.tar.gz"] == {"sha256": "a", "flow_run_id": "1"}  # an earlier run's upload is kept
    assert on_index[dists[-1].filename] == {"sha256": dists[-1].sha256, "flow_run_id": "run-2"}


def test_a_second_stage_reads_what_the_first_wrote(monkeypatch) -> None:
    server = FakeServer()
    monkeypatch.setattr(stages, "read_record", server.read)
    monkeypatch.setattr(stages, "write_record", server.write)
    ctx, stage, dists = release(2)
    first = stages.PublishBookkeeping(ctx, stage)
    first.written(dists[0], stages.UploadOutcome.UPLOADED, "uploaded")
    first.record()
    first.record()  # nothing new: nothing read or written

    other = SimpleNamespace(
        target=SimpleNamespace(name="mirror"), publisher=SimpleNamespace(record_keys=lambda t: ("m",))
    )
    ctx.report.files.append(FileReport(dists[1].filename, dists[1].sha256, "mirror", "wheel"))
    second = stages.PublishBookkeeping(ctx, SimpleNamespace(**vars(other), files=[dists[1]]))
    second.written(dists[1], stages.UploadOutcome.UPLOADED, "uploaded")
    second.record()

    assert server.reads == 2 and len(server.versions) == 2
    assert server.versions[-1]["uploads"] == {
        INDEX: {dists[0].filename: {"sha256": dists[0].sha256, "flow_run_id": "run-2"}},
        "m": {dists[1].filename: {"sha256": dists[1].sha256, "flow_run_id": "run-2"}},
    }


def test_a_batch_touches_only_its_own_files() -> None:
    """Adding a batch leaves the rest of the record as it is (the same objects, not copies of them):
    the first upload of a file to an index stays its record."""
    on_index = {f"f{n}": {"sha256": "s", "flow_run_id": "1"} for n in range(1000)}
    record = {"name": "demo", "version": "1.0", "uploads": {INDEX: on_index}}
    entry = on_index["f1"]

    out = record_uploads(
        record, name="demo", version="1.0", index=INDEX, files={"f1": "other", "new": "n"}, flow_run_id="2"
    )

    assert out is record and out["uploads"][INDEX] is on_index and on_index["f1"] is entry
    assert on_index["f1"] == {"sha256": "s", "flow_run_id": "1"}
    assert on_index["new"] == {"sha256": "n", "flow_run_id": "2"}
    fresh = record_uploads(None, name="demo", version="1.0", index=INDEX, files={"a": "b"}, flow_run_id="3")
    assert fresh == {"name": "demo", "version": "1.0", "uploads": {INDEX: {"a": {"sha256": "b", "flow_run_id": "3"}}}}
    assert manifest_variable("Demo", "1.0") == manifest_variable("demo", "1.0")


def test_looking_up_a_file_report_follows_the_list() -> None:
    """The report's index of its files follows ``files`` when it is replaced or grows; the first entry wins."""
    report = ReleaseReport(project="demo")
    report.files = [FileReport("a.whl", "1", "prod", "wheel"), FileReport("a.whl", "2", "prod", "wheel")]
    assert report.file("a.whl", "prod").sha256 == "1"
    assert report.file("a.whl", "mirror") is None
    report.files.append(FileReport("a.whl", "3", "mirror", "wheel"))
    assert report.file("a.whl", "mirror").sha256 == "3"
    report.files = [FileReport("b.whl", "4", "prod", "wheel")]
    assert report.file("a.whl", "prod") is None and report.file("b.whl", "prod").sha256 == "4"


class CountingList(list):
    """A report's files that count how often they are walked through."""

    walks = 0

    def __iter__(self):
        CountingList.walks += 1
        return super().__iter__()


def test_confirming_every_file_published_walks_the_report_a_fixed_number_of_times() -> None:
    """A scan of every file entry per built file was quadratic after the last check (2,000 files: 4 million
    comparisons); a file that reached no target is still named."""
    from wheelflow.core.errors import PublishError
    from wheelflow.flows.publishing import confirm_published
    from wheelflow.proof.verification import VERIFIED

    ctx, _, dists = release(300)
    for entry in ctx.report.files:
        entry.upload, entry.status = stages.UploadOutcome.UPLOADED, VERIFIED
    ctx.report.files = CountingList(ctx.report.files)
    CountingList.walks = 0
    confirm_published(ctx, dists)
    assert CountingList.walks <= 2

    stray = Distribution(Path("demo-1.0.tar.gz"), "sdist", "f" * 64)
    with pytest.raises(PublishError, match="demo-1.0.tar.gz reached no target"):
        confirm_published(ctx, [*dists, stray])


def test_the_report_is_redacted_once_for_its_file_and_the_flows_result(monkeypatch, tmp_path: Path) -> None:
    """After the last check the report was turned into redacted JSON twice (saved, then returned): the
    costliest part of the report for a 2,000-file release. The flow returns what was saved."""
    import json

    import wheelflow.flows.release as release_flow

    monkeypatch.setattr(release_flow, "create_table_artifact", lambda **kwargs: None)
    monkeypatch.setattr(release_flow, "create_markdown_artifact", lambda **kwargs: None)
    calls = []
    to_json = ReleaseReport.to_json
    monkeypatch.setattr(ReleaseReport, "to_json", lambda self: calls.append(1) or to_json(self))
    ctx, _, _ = release(3)
    ctx.report.name, ctx.report.version = "demo", "1.0"

    published = release_flow.publish_report(ctx.report, tmp_path)

    assert len(calls) == 1
    assert published == json.loads((tmp_path / "reports" / "run-2.json").read_text())
    assert [f["filename"] for f in published["files"]] == [f.filename for f in ctx.report.files]
