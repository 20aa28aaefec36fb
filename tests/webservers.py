"""Real servers on loopback for the static index tests: nginx serving a directory (or proxying to
S3), and moto's standalone S3 server.

moto is the runnable S3 stand-in: no S3-compatible server binary (MinIO or other) installs on
these machines, and moto's server speaks the S3 REST API over real HTTP to real s3fs/botocore.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from wheelflow.index.localindex import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _wait_until_answers(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=2.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)  # polling for readiness, not standing in for synchronisation
    proc.terminate()
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s: {log.read_text()[-2000:]}")


class Nginx:
    """nginx in the foreground with a config of its own: serves ``root``, or proxies to ``upstream``
    the way a CDN in front of a bucket does (``dir/`` answered from ``dir/index.html``)."""

    def __init__(self, workdir: Path, *, root: Path | None = None, upstream: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.access_log = workdir / "access.log"
        self.error_log = workdir / "error.log"
        workdir.mkdir(parents=True, exist_ok=True)
        if upstream is not None:
            parts = urlsplit(upstream)
            prefix = parts.path.rstrip("/")
            location = (
                f"location / {{ rewrite ^(.*)/$ {prefix}$1/index.html break; rewrite ^(.*)$ {prefix}$1 break; "
                f"proxy_pass {parts.scheme}://{parts.netloc}; proxy_set_header Host $proxy_host; }}"
            )
        else:
            location = f"location / {{ root {root}; index index.html; }}"
        # As root, workers would drop to nobody and could not read pytest's 0700 tmp directories.
        user = "user root;" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(f"""
{user}
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 64; }}
http {{
    types {{ text/html html; application/octet-stream whl gz metadata; }}
    default_type application/octet-stream;
    client_body_temp_path {workdir}/body; proxy_temp_path {workdir}/proxy; fastcgi_temp_path {workdir}/fcgi;
    uwsgi_temp_path {workdir}/uwsgi; scgi_temp_path {workdir}/scgi;
    log_format plain '$request_method $request_uri $status';
    access_log {self.access_log} plain;
    server {{
        listen 127.0.0.1:{self.port};
        {location}
    }}
}}
""")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request so far (nginx writes each line when it answers)."""
        if not self.access_log.exists():
            return []
        rows = []
        for line in self.access_log.read_text().splitlines():
            method, path, status = line.rsplit(" ", 2)
            rows.append((method, path, int(status)))
        return rows

    def clear_log(self) -> None:
        self.access_log.write_text("")

    def __enter__(self) -> Nginx:
        log = self.workdir / "stderr.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_until_answers(self.url + "/", self.proc, self.error_log if self.error_log.exists() else log)
        self.clear_log()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            self.proc.wait(timeout=30)


class MotoS3:
    """moto's standalone S3 server on a free loopback port (see the module docstring for why moto)."""

    key, secret = "wheelflow-test-key", "wheelflow-test-secret-never-logged"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self) -> dict:
        return {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.url, "region_name": "eu-west-1"},
        }

    def make_public_bucket(self, name: str) -> None:
        """A bucket anyone may read (a public index), written only with the keys."""
        import json

        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="eu-west-1",
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
        )
        client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{name}/*"}
            ],
        }
        client.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))

    def __enter__(self) -> MotoS3:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "moto.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_until_answers(self.url + "/", self.proc, log)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
