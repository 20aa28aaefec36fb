"""The embedded local index: a pypiserver that wheelflow starts and stops under $WHEELFLOW_HOME."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from wheelflow.config.spec import Target
from wheelflow.core import cancel
from wheelflow.core.childenv import child_env
from wheelflow.core.credentials import Credentials
from wheelflow.core.home import wheelflow_home
from wheelflow.core.redaction import register_secret
from wheelflow.index.indexes import (
    PRIVATE_VERIFY_TIMEOUT,
    Endpoints,
    endpoints_for_target,
    load_credentials,
    resolve_endpoints,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_htpasswd(path: Path, username: str, password: str) -> None:
    from passlib.apache import HtpasswdFile

    htpasswd = HtpasswdFile(str(path), new=not path.exists())
    if not htpasswd.check_password(username, password):
        htpasswd.set_password(username, password)
        htpasswd.save()


class PypiServer:
    """A pypiserver process on loopback, with htpasswd-protected uploads. Used as a context manager."""

    def __init__(
        self, packages: Path, htpasswd: Path | None = None, *, port: int | None = None, log_file: Path | None = None
    ) -> None:
        self.packages = packages
        self.htpasswd = htpasswd
        self.port = port or free_port()
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def simple_url(self) -> str:
        return self.url + "simple/"

    def start(self, timeout: float = 30.0) -> PypiServer:
        self.packages.mkdir(parents=True, exist_ok=True)
        sibling = Path(sys.executable).with_name("pypi-server")  # the one installed with wheelflow
        executable = str(sibling) if sibling.exists() else shutil.which("pypi-server") or "pypi-server"
        auth = ["-P", str(self.htpasswd), "-a", "update"] if self.htpasswd else ["-P", ".", "-a", "."]
        cmd = [
            executable,
            "run",
            "-p",
            str(self.port),
            "-i",
            "127.0.0.1",
            *auth,
            # simple-dir re-reads the directory on every request: what is on disk is what is served.
            "--backend",
            "simple-dir",
            "--disable-fallback",
            "--hash-algo",
            "sha256",
            str(self.packages),
        ]
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env())
        cancel.spare(self._proc.pid)  # a cancelled release's rollback still reads and removes through it
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pypiserver exited with code {self._proc.returncode}; see {self.log_file}")
            try:
                if httpx.get(self.url + "health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pypiserver did not answer on {self.url} within {timeout:.0f} s")
            time.sleep(delay)  # polling a starting process: there is nothing to wait on but the socket
            delay = min(delay * 2, 0.5)

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc:
            cancel.unspare(self._proc.pid)
        self._proc = None

    def __enter__(self) -> PypiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalIndex:
    """The embedded index: ``$WHEELFLOW_HOME/index/packages`` served by pypiserver while in use."""

    USERNAME = "wheelflow"

    def __init__(self, home: Path | None = None) -> None:
        self.root = (home or wheelflow_home()) / "index"
        self.packages = self.root / "packages"
        self._server: PypiServer | None = None

    def credentials(self) -> Credentials:
        # A random password per home, kept 0600 beside the index: uploads need auth even on loopback.
        path = self.root / "credentials.json"
        if path.exists():
            password = json.loads(path.read_text())["password"]
            register_secret(password)
            return Credentials(self.USERNAME, password)
        self.root.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        register_secret(password)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"username": self.USERNAME, "password": password}, handle)
        return Credentials(self.USERNAME, password)

    def __enter__(self) -> Endpoints:
        creds = self.credentials()
        htpasswd = self.root / "htpasswd"
        ensure_htpasswd(htpasswd, creds.username, creds.password)
        self._server = PypiServer(self.packages, htpasswd, log_file=self.root / "pypiserver.log").start()
        return Endpoints("local", self._server.simple_url, self._server.url, False, PRIVATE_VERIFY_TIMEOUT)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server:
            self._server.stop()
            self._server = None


def credentials_for(
    target: Target, home: Path | None = None, read_secret: Callable[[str], Any] | None = None
) -> Credentials | None:
    """Credentials of a target; the embedded index's own are generated under $WHEELFLOW_HOME. A static
    target has none: its store's options are read (and a missing Secret block refused) here, then dropped."""
    if target.is_static:
        from wheelflow.index.staticsite import storage_options_for  # staticsite builds on this module's neighbours

        storage_options_for(target, read_secret)
        return None
    if target.index == "local":
        return LocalIndex(home).credentials()
    return load_credentials(target, read_secret)


def open_index(index: str | Target, home: Path | None = None) -> contextlib.AbstractContextManager[Endpoints]:
    """The endpoints of an index alias, a Simple API URL or a spec's target, as a context: the
    embedded index (``local``) runs while it is open."""
    target = index if isinstance(index, Target) else None
    if (target.index if target else index) == "local":
        return LocalIndex(home)
    return contextlib.nullcontext(endpoints_for_target(target) if target else resolve_endpoints(index))
