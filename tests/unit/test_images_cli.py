"""`wheelflow images` when the daemon's build fails or another `wheelflow images` is making the images:
one line with the fix, no traceback; a second command waits for the first instead of failing it.
The daemon is replaced by a stand-in here (tests/e2e make the real images)."""

from __future__ import annotations

import fcntl
import tempfile
import threading
from pathlib import Path

import docker
import pytest

from wheelflow import cli
from wheelflow.cli import images


@pytest.fixture
def no_daemon_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WHEELFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the lock's folder
    monkeypatch.setattr(images, "docker_client", lambda: object())
    return tmp_path / f"wheelflow-images-{__import__('os').getuid()}.lock"


@pytest.mark.case(
    "fault",
    "`wheelflow images`: the Docker build of an image fails (or two commands build the same tag at once)",
    "one line naming the failed step and the fix, exit 1; the build's own output above it; no traceback",
)
def test_a_failed_image_build_is_one_line_with_the_fix(
    no_daemon_needed: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(*args: object, **kwargs: object) -> dict[str, str]:
        raise docker.errors.BuildError("The command '/bin/sh -c pip install' returned a non-zero code: 1", [])

    monkeypatch.setattr(images, "ensure_images", failing)
    assert cli.main(["images"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "wheelflow: error: images: The command '/bin/sh -c pip install' returned a non-zero code: 1; "
        "fix: see the output above, then run `wheelflow images` again (images already made are kept)"
    )


def test_debootstraps_own_words_come_before_the_one_line(
    no_daemon_needed: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(*args: object, **kwargs: object) -> dict[str, str]:
        raise RuntimeError("debootstrap trixie failed:\nE: Couldn't download packages: python3")

    monkeypatch.setattr(images, "ensure_images", failing)
    assert cli.main(["images"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-2:] == [
        "E: Couldn't download packages: python3",
        "wheelflow: error: images: debootstrap trixie failed; fix: see the output above, then run "
        "`wheelflow images` again (images already made are kept)",
    ]


def test_a_second_images_command_waits_for_the_first_then_finds_its_images(
    no_daemon_needed: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    waiting = threading.Event()
    said: list[str] = []
    made: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("waiting for another"):
            waiting.set()

    monkeypatch.setattr(images, "say", say)
    monkeypatch.setattr(images, "ensure_images", lambda *a, **k: made.append("checked") or {"wheelflow/x": "kept"})
    with open(no_daemon_needed, "a+") as first:  # the first command, holding the lock while it makes them
        fcntl.flock(first.fileno(), fcntl.LOCK_EX)
        second: list[int] = []
        thread = threading.Thread(target=lambda: second.append(cli.main(["images"])))
        thread.start()
        assert waiting.wait(30), said
        assert made == []  # not while the first one holds the lock
        fcntl.flock(first.fileno(), fcntl.LOCK_UN)
        thread.join(30)
    assert second == [0] and made == ["checked"]


def test_a_maker_that_never_ends_is_waited_for_up_to_the_deadline(
    no_daemon_needed: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(images, "LOCK_WAIT", 0.2)
    monkeypatch.setattr(images, "ensure_images", lambda *a, **k: pytest.fail("made images without the lock"))
    with open(no_daemon_needed, "a+") as first:
        fcntl.flock(first.fileno(), fcntl.LOCK_EX)
        assert cli.main(["images"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"wheelflow: error: images: another `wheelflow images` has been making the images for more than 0 s "
        f"(lock {no_daemon_needed}); fix: wait for it to end, then run `wheelflow images` again"
    )
