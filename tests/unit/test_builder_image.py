"""The builder image carries the repair step's tools, installed without any index reachable from the build."""

from __future__ import annotations

import pytest

from wheelflow.builds.builders.docker import daemon_answers
from wheelflow.builds.images import DISTROS, base_tag, build_from_dockerfile, image_exists

BOOKWORM = DISTROS[0]
TEST_TAG = "wheelflow-test/builder-tools:py" + BOOKWORM.python  # never the shared wheelflow/builder tags


def test_builder_image_has_auditwheel_and_patchelf() -> None:
    if not daemon_answers():
        pytest.skip("no Docker daemon answers on this machine")
    import docker

    client = docker.from_env()
    if not image_exists(client, base_tag(BOOKWORM, build=True)):
        pytest.skip(f"{base_tag(BOOKWORM, build=True)} is absent: run `wheelflow images` first")
    build_from_dockerfile(
        client,
        "builder.Dockerfile",
        base_tag(BOOKWORM, build=True),
        TEST_TAG,
        lambda line: None,
        python=BOOKWORM.python,
    )
    try:
        out = client.containers.run(
            TEST_TAG,
            ["sh", "-c", "/opt/wheelflow/bin/auditwheel --version && /opt/wheelflow/bin/patchelf --version"],
            remove=True,
            network_disabled=True,
        )
    finally:
        client.images.remove(TEST_TAG, force=True)
    assert b"auditwheel 6." in out and b"patchelf 0." in out
