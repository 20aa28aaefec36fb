"""Total deadlines: an upload attempt and an alert end by their deadline whatever the server does, and a
stop request (SIGTERM, SIGINT) ends uploads in flight and the child processes of the run.

The servers are real sockets on loopback (tests/stalling.py). Each call runs in a guard thread whose
join timeout only keeps a broken build from hanging the suite: nothing asserts how long it took.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from stalling import StallingServer
from wheelcraft import make_wheel

from wheelflow.core import cancel
from wheelflow.core.deadline import Deadline
from wheelflow.core.distributions import sha256_of
from wheelflow.core.errors import UploadError, retries_exhausted
from wheelflow.index.uploading import publish_file
from wheelflow.ops.alerts import Alert, Channel, alert_timeout, configured_channels, send_alert

GUARD = 120  # seconds: only a broken deadline gets near it


def guarded(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, its exception re-raised; fails if it has not returned within GUARD s."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive(), f"{fn.__name__} was still running after the {GUARD} s guard"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture(autouse=True)
def no_stop_left_over():
    cancel.reset()
    yield
    cancel.reset()


@pytest.mark.parametrize("mode", ["silent", "drip"])
@pytest.mark.case(
    "fault",
    "the upload endpoint takes the POST and never answers, or answers one byte every few seconds",
    "the attempt ends by the target's upload-timeout: read back, retried, then one line naming the target, "
    "the deadline and upload-timeout",
)
def test_an_upload_attempt_ends_by_its_deadline_whatever_the_index_does(tmp_path: Path, mode: str) -> None:
    wheel = make_wheel(tmp_path)
    read_back: list[str] = []

    def read_served():
        read_back.append("read")
        return []  # the file did not land

    with StallingServer(mode, interval=0.5) as server:
        with pytest.raises(UploadError) as raised:
            guarded(
                publish_file,
                wheel,
                sha256_of(wheel),
                server.url + "legacy/",
                None,
                read_served,
                log=lambda line: None,
                timeout=1,
                target="staging",
            )
        assert server.requests == 1  # the POST arrived: only the deadline ended the attempt
    error = raised.value
    message = str(error)
    assert "\n" not in message
    assert "no complete answer within the upload deadline (1 s)" in message
    assert "raise upload-timeout (now 1 s) of [tool.wheelflow.targets.staging]" in message
    assert error.transient  # the file's fate is unknown: the index was read back, and the upload is retried
    assert read_back == ["read"]
    # after the last retry, the fix still says what to change
    assert "upload-timeout" in str(retries_exhausted(error, 5)).split("; fix: ", 1)[1]


@pytest.mark.case(
    "fault",
    "the run is asked to stop (SIGTERM) while an upload waits for an index that never answers",
    "the attempt ends at once, not retried, saying it was stopped",
)
def test_a_stop_request_ends_an_upload_in_flight(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path)
    with StallingServer("silent") as server:
        threading.Thread(target=lambda: (server.wait_for_request(), cancel.request_stop("SIGTERM received"))).start()
        with pytest.raises(UploadError) as raised:
            guarded(
                publish_file, wheel, sha256_of(wheel), server.url, None, lambda: [], log=print, timeout=3600
            )  # an hour: only the stop ends it
    assert str(raised.value) == f"upload of {wheel.name} stopped: SIGTERM received"
    assert not raised.value.transient


@pytest.mark.case(
    "fault",
    "an alert webhook drips one byte every few seconds (or never answers)",
    "the alert gives up at its total deadline (WHEELFLOW_ALERT_TIMEOUT): the failure hook is not held",
)
@pytest.mark.parametrize("mode", ["silent", "drip"])
def test_an_alert_ends_by_its_deadline_whatever_the_receiver_does(mode: str) -> None:
    alert = Alert(event="release-failed", project="p", version="1", summary="release of p 1 failed")
    lines: list[str] = []
    with StallingServer(mode, interval=0.5) as server:
        channels = configured_channels({"WHEELFLOW_ALERT_WEBHOOK": server.url, "WHEELFLOW_ALERT_TIMEOUT": "1"})
        timeout = alert_timeout({"WHEELFLOW_ALERT_TIMEOUT": "1"})
        delivered = guarded(send_alert, alert, channels, log=lines.append, deadline=Deadline.after(timeout))
        assert server.requests >= 1
    assert delivered == 0
    assert lines == ["alert 'release-failed' delivered to 0 of 1 channel(s); 1 failed (the alert deadline passed)"]


def test_every_channel_is_tried_at_once_within_one_deadline() -> None:
    """Two stalling receivers do not take two deadlines: they share one."""
    alert = Alert(event="e", project="p", version=None, summary="s")
    with StallingServer("silent") as first, StallingServer("silent") as second:
        channels = [Channel("webhook", first.url), Channel("webhook", second.url)]
        guarded(send_alert, alert, channels, log=lambda line: None, deadline=Deadline.after(1))
        first.wait_for_request()
        second.wait_for_request()


def test_a_bad_alert_timeout_is_said_and_the_default_used() -> None:
    said: list[str] = []
    assert alert_timeout({"WHEELFLOW_ALERT_TIMEOUT": "nan"}, log=said.append) == 30.0
    assert "WHEELFLOW_ALERT_TIMEOUT" in said[0]
    assert alert_timeout({}) == 30.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # a zombie is dead: it only waits for its parent to read its exit status
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_stop_kills_the_children_with_their_groups_and_spares_a_service(tmp_path: Path) -> None:
    """A step's child in a session of its own, and what it started (a compiler's children), end with a
    stop request; a spared service (the embedded index a rollback still reads) stays."""
    before = set(cancel.descendants())  # what else this test process runs (a Prefect server) stays
    for pid in before:
        cancel.spare(pid)
    marker = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(600)"
    )
    step = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    service = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    cancel.spare(service.pid)
    try:
        for _ in range(600):  # the grandchild writes its pid once it runs
            if marker.exists() and marker.read_text():
                break
            time.sleep(0.05)
        grandchild = int(marker.read_text())
        called: list[str] = []
        with cancel.on_stop(lambda: called.append("callback")):
            assert cancel.request_stop("SIGTERM received")
        assert not cancel.request_stop("SIGINT received")  # once
        assert called == ["callback"]
        assert cancel.requested() == "SIGTERM received"
        assert step.wait(GUARD) == -signal.SIGKILL
        for _ in range(200):
            if not _alive(grandchild):
                break
            time.sleep(0.05)
        assert not _alive(grandchild)
        assert service.poll() is None
    finally:
        for pid in before | {service.pid}:
            cancel.unspare(pid)
        service.kill()
        service.wait()
        step.kill()
        step.wait()
