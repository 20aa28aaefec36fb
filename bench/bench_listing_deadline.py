"""Benchmark: a listing read keeps its deadline through parsing and filtering (issue 27, item 4).

A loopback HTTP server answers a PEP 691 JSON listing of about 20 MB (N files, default 65,000, each
with its sha256 and a long URL). First the whole read is timed without a deadline (how long the
download, the JSON parse and the per-file validation take here); then the same read runs under
deadlines shorter than that, and each reports how long it took to give up. Ratio = time to give up /
deadline; the goal is within 10 % (≤ 1.10).

    python bench/bench_listing_deadline.py [--files 65000] [--deadlines 2,5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from wheelflow.core.deadline import Deadline
from wheelflow.core.errors import IndexReadError
from wheelflow.index.simple_api import list_project_files


def listing(files: int) -> bytes:
    entries = []
    for n in range(files):
        name = f"big_pkg-1.0.{n}-cp311-cp311-manylinux_2_28_x86_64.whl"
        digest = hashlib.sha256(name.encode()).hexdigest()
        entries.append(
            {
                "filename": name,
                "url": f"/files/{digest[:2]}/{digest[2:4]}/{digest}/{name}",
                "hashes": {"sha256": digest},
            }
        )
    return json.dumps({"meta": {"api-version": "1.0"}, "name": "big-pkg", "files": entries}).encode()


def serve(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=65_000)
    parser.add_argument("--deadlines", default="2,5")
    args = parser.parse_args()
    body = listing(args.files)
    server = serve(body)
    url = f"http://127.0.0.1:{server.server_address[1]}/simple/"
    print(f"listing: {args.files} files, {len(body) / 1e6:.1f} MB")
    with httpx.Client() as client:
        start = time.perf_counter()
        files = list_project_files(client, url, "big-pkg", deadline=Deadline.after(600))
        whole = time.perf_counter() - start
        print(f"whole read without a deadline: {whole:.2f} s ({len(files)} files)")
        for limit in (float(x) for x in args.deadlines.split(",")):
            if limit >= whole:
                print(f"deadline {limit:g} s: longer than the whole read, skipped")
                continue
            start = time.perf_counter()
            try:
                list_project_files(client, url, "big-pkg", deadline=Deadline.after(limit))
                outcome = "finished (no deadline error)"
            except IndexReadError as exc:
                outcome = str(exc).split(";")[0][-70:]
            took = time.perf_counter() - start
            print(f"deadline {limit:g} s: gave up after {took:.3f} s, ratio {took / limit:.3f} ({outcome})")
    server.shutdown()


if __name__ == "__main__":
    main()
