"""The artifact store's default and the refusal of a local store the release cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest

from wheelflow.index import artifactstore


def test_the_shared_store_from_the_environment_is_the_default(tmp_path: Path) -> None:
    assert (
        artifactstore.default_store(tmp_path, {"WHEELFLOW_ARTIFACT_STORE": "s3://team/wheelflow"})
        == "s3://team/wheelflow"
    )
    assert artifactstore.default_store(tmp_path, {}) == (tmp_path / "artifacts").as_uri()


@pytest.mark.case(
    "fault",
    "a build-cell run lands on another worker and the artifact store is a local file:// path",
    "refused naming both runners, with the fix (a store every worker reaches)",
)
def test_a_local_store_on_another_runner_is_refused_with_the_fix(tmp_path: Path) -> None:
    store = (tmp_path / "store").as_uri()
    with pytest.raises(artifactstore.ArtifactStoreError) as missing:  # what the release sees: no record here
        artifactstore.get_run_record(store, "run-1")
    error = artifactstore.record_elsewhere_error(store, "py3.11-cu13.0", "gpu-box-2", "control-box")
    assert error is not None and not error.transient
    assert str(error) == (
        f"cell py3.11-cu13.0 was built on runner 'gpu-box-2' but this release runs on 'control-box', and the artifact "
        f"store {store} is a local directory the release cannot read; fix: set WHEELFLOW_ARTIFACT_STORE (or "
        "artifact_store) on every worker to a URL they all reach (s3://..., or a directory mounted on each)"
    )
    assert "left no record" in str(missing.value)
    # Same runner, or a store that is no local directory: the plain "missing" error stands.
    assert artifactstore.record_elsewhere_error(store, "c", "control-box", "control-box") is None
    assert artifactstore.record_elsewhere_error("s3://team/wheelflow", "c", "gpu-box-2", "control-box") is None


def test_the_runner_is_named_by_the_environment_or_the_host() -> None:
    import socket

    assert artifactstore.runner_name({"WHEELFLOW_RUNNER_NAME": "gpu-box-2"}) == "gpu-box-2"
    assert artifactstore.runner_name({}) == socket.gethostname()
