"""A real devpi-server on loopback with a user and indexes, made with devpi-client as an admin would."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from wheelflow.index.localindex import free_port

USER, PASSWORD = "releaser", "s3cret-devpi-password-for-tests"


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


class DevpiServer:
    def __init__(
        self,
        root: Path,
        indexes: dict[str, bool],
        *,
        mirrors: dict[str, str] | None = None,
        bases: dict[str, str] | None = None,
    ) -> None:
        """``indexes``: name → volatile (a volatile index allows deleting files, like a staging index);
        ``mirrors``: name → the Simple API URL a mirror index reads; ``bases``: index → the index
        (of this user) it inherits from, as an admin sets bases=root/pypi."""
        self.root, self.indexes = root, indexes
        self.mirrors, self.bases = mirrors or {}, bases or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._proc: subprocess.Popen[bytes] | None = None

    def simple_url(self, index: str) -> str:
        return f"{self.url}{USER}/{index}/+simple/"

    def upload_url(self, index: str) -> str:
        return f"{self.url}{USER}/{index}/"

    def _client(self, *args: str) -> None:
        subprocess.run(
            [_bin("devpi"), "--clientdir", str(self.root / "client"), *args], check=True, capture_output=True
        )

    def __enter__(self) -> DevpiServer:
        server_dir = self.root / "server"
        subprocess.run(
            [_bin("devpi-init"), "--serverdir", str(server_dir), "--no-root-pypi"], check=True, capture_output=True
        )
        log = open(self.root / "devpi.log", "wb")
        self._proc = subprocess.Popen(
            [_bin("devpi-server"), "--serverdir", str(server_dir), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "+api", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"devpi-server did not start: {(self.root / 'devpi.log').read_text()[-2000:]}")
            time.sleep(0.3)  # waiting for a separate process to open its socket
        self._client("use", self.url)
        self._client("user", "-c", USER, f"password={PASSWORD}", "email=releaser@example.invalid")
        self._client("login", USER, "--password", PASSWORD)
        for mirror, url in self.mirrors.items():
            self._client("index", "-c", mirror, "type=mirror", f"mirror_url={url}")
        for index, volatile in self.indexes.items():
            base = f"{USER}/{self.bases[index]}" if index in self.bases else ""
            self._client("index", "-c", index, f"bases={base}", f"volatile={volatile}")
        return self

    def files(self, index: str, name: str) -> list[str]:
        page = httpx.get(self.simple_url(index) + name + "/", timeout=10)
        if page.status_code == 404:
            return []
        import re

        return sorted(set(re.findall(r">([^<]+\.(?:whl|tar\.gz))</a>", page.text)))

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(30)
