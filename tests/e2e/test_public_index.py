"""`wheelflow verify` against the public index, read-only (its read API answers from these machines).

The index's URL is not written here: wheelflow takes it from pip's own default at run time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from wheelflow.core.distributions import sha256_of

pytestmark = pytest.mark.public_index
RELEASE = "six==1.16.0"  # a real, long-published release with an sdist and a wheel


def test_verify_lists_the_files_with_the_sha256_pip_downloads(tmp_path: Path) -> None:
    result = run_cli("verify", RELEASE, "--index", "pypi", "--no-install", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["name"] == "six" and report["version"] == "1.16.0"
    served = {f["filename"]: f["sha256"] for f in report["files"]}
    assert {"six-1.16.0-py2.py3-none-any.whl", "six-1.16.0.tar.gz"} <= set(served)

    for extra in ([], ["--no-binary", ":all:"]):  # the wheel, then the sdist
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-cache-dir",
                "--isolated",
                "-q",
                "-d",
                str(tmp_path),
                *extra,
                RELEASE,
            ],
            check=True,
            env={"PATH": "/usr/bin:/bin"},
        )
    downloaded = {p.name: sha256_of(p) for p in tmp_path.iterdir()}
    assert len(downloaded) == 2
    for filename, sha256 in downloaded.items():
        assert served[filename] == sha256


def test_verify_fails_when_an_expected_file_is_not_served() -> None:
    missing = "six-1.16.0-cp399-cp399-linux_x86_64.whl"
    result = run_cli(
        "verify",
        RELEASE,
        "--index",
        "pypi",
        "--no-install",
        "--expect",
        missing,
        "--expect",
        "six-1.16.0.tar.gz",
        "--timeout",
        "2",
        "--json",
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert {f["filename"]: f["status"] for f in report["files"]} == {missing: "missing", "six-1.16.0.tar.gz": "served"}
    assert f"wheelflow: verify failed: {missing} is not served" in result.stderr
