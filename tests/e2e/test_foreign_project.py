"""A project the user does not control, released as a new user would (issue 16): old releases
verified without waiting for a CDN, dependencies from their own index, devpi staging with bases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import INDEX_PASSWORD, INDEX_USER, git, run_cli
from devpi import PASSWORD as DEVPI_PASSWORD
from devpi import USER as DEVPI_USER
from devpi import DevpiServer
from faultproxy import FaultProxy
from wheelcraft import make_wheel

from wheelflow.index.localindex import PypiServer

MONTH = 30 * 86400


@pytest.mark.case(
    "fault",
    "verify of a month-old release that lacks its sdist",
    "fails at once, saying how old the release is (no upload in flight); --wait waits",
)
def test_a_month_old_release_missing_a_file_fails_verify_at_once(tmp_path: Path, home: Path, index) -> None:
    index.packages.mkdir(parents=True, exist_ok=True)
    wheel = make_wheel(index.packages)
    old = time.time() - MONTH
    os.utime(wheel, (old, old))  # pypiserver's Last-Modified: the upload time of an index without PEP 700

    # A deadline far longer than the test may run: only the release's age can end the wait.
    result = run_cli(
        "verify",
        "tiny-pkg==1.0.0",
        "--index",
        index.simple_url,
        "--expect",
        wheel.name,
        "--expect",
        "tiny_pkg-1.0.0.tar.gz",
        "--no-install",
        "--timeout",
        "3000",
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("wheelflow: verify failed"))
    assert line.startswith(
        "wheelflow: verify failed: tiny_pkg-1.0.0.tar.gz is not served; the release is 30 days old"
    ), line
    assert line.endswith("no upload is in flight; fix: upload it, or pass --wait"), line

    waited = run_cli(
        "verify",
        "tiny-pkg==1.0.0",
        "--index",
        index.simple_url,
        "--expect",
        "tiny_pkg-1.0.0.tar.gz",
        "--no-install",
        "--timeout",
        "2",
        "--wait",
        timeout=120,
    )
    assert waited.returncode == 1, waited.stderr
    assert "wheelflow: verify failed: tiny_pkg-1.0.0.tar.gz is not served\n" in waited.stderr


def test_a_fresh_release_missing_a_file_is_waited_for(tmp_path: Path, home: Path, index) -> None:
    """Right after an upload (a file younger than the deadline) the wait is the index's deadline."""
    index.packages.mkdir(parents=True, exist_ok=True)
    wheel = make_wheel(index.packages)
    result = run_cli(
        "verify",
        "tiny-pkg==1.0.0",
        "--index",
        index.simple_url,
        "--expect",
        wheel.name,
        "--expect",
        "tiny_pkg-1.0.0.tar.gz",
        "--no-install",
        "--timeout",
        "2",
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "wheelflow: verify failed: tiny_pkg-1.0.0.tar.gz is not served\n" in result.stderr
    assert "not served yet" in result.stderr  # it read again until the deadline


def jit_project(root: Path) -> Path:
    """Shaped like a real JIT project: setup.py, the version in a version.py, no long description,
    a pure wheel and an sdist, a dependency that only its own index serves. No [tool.wheelflow]."""
    (root / "jit_pkg").mkdir(parents=True)
    (root / "jit_pkg" / "version.py").write_text('__version__ = "1.2.0"\n')
    (root / "jit_pkg" / "__init__.py").write_text("from .version import __version__\n\ndef answer():\n    return 42\n")
    (root / "setup.py").write_text(
        textwrap.dedent("""
        from setuptools import setup

        version = {}
        exec(open("jit_pkg/version.py").read(), version)
        setup(name="jit-pkg", version=version["__version__"], packages=["jit_pkg"], install_requires=["jit-dep"])
        """)
    )
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "jit-pkg 1.2.0")
    git(root, "tag", "v1.2.0")
    return root


def standalone_spec(path: Path, dependencies: str, staging: tuple[str, str], production: tuple[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        textwrap.dedent(f"""
        name = "jit-pkg"
        smoke = "python -c 'import jit_pkg, jit_dep; assert jit_pkg.answer() == 42, jit_pkg.answer()'"

        [version]
        tag = "v{{version}}"
        file = "jit_pkg/version.py"

        [install]
        dependencies = "{dependencies}"

        [targets.staging]
        index = "{staging[0]}"
        upload-url = "{staging[1]}"
        verify-timeout = 10

        [targets.production]
        index = "{production[0]}"
        upload-url = "{production[1]}"
        verify-timeout = 10
        """)
    )
    return path


def test_a_foreign_jit_project_releases_to_devpi_then_pypiserver_with_its_own_dependency_index(
    tmp_path: Path, home: Path, index, prefect_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    deps_dir = tmp_path / "deps-served"
    deps_dir.mkdir()
    make_wheel(deps_dir, name="jit_dep", version="0.1.0")
    # The dependency index also serves our own name, with other bytes (answer() == 41) and a higher
    # version: installs must never take jit-pkg from there.
    make_wheel(deps_dir, name="jit_pkg", version="1.2.0", tamper=True)
    make_wheel(deps_dir, name="jit_pkg", version="9.9.0", tamper=True)
    with PypiServer(deps_dir, None, log_file=tmp_path / "deps.log") as deps, FaultProxy(deps.url) as proxy:
        deps_simple = proxy.url + "simple/"  # no faults: the proxy only counts what reaches the dependency index
        with DevpiServer(
            tmp_path / "devpi", {"staging": True}, mirrors={"deps": deps_simple}, bases={"staging": "deps"}
        ) as devpi:
            monkeypatch.setenv("WHEELFLOW_STAGING_USERNAME", DEVPI_USER)
            monkeypatch.setenv("WHEELFLOW_STAGING_PASSWORD", DEVPI_PASSWORD)
            monkeypatch.setenv("WHEELFLOW_PRODUCTION_USERNAME", INDEX_USER)
            monkeypatch.setenv("WHEELFLOW_PRODUCTION_PASSWORD", INDEX_PASSWORD)
            project = jit_project(tmp_path / "jit-pkg")
            spec = standalone_spec(
                tmp_path / "specs" / "jit-pkg.toml",
                deps_simple,
                (devpi.simple_url("staging"), devpi.upload_url("staging")),
                (index.simple_url, index.url),
            )

            first = run_cli("release", str(project), "--spec", str(spec), "--json")
            assert first.returncode == 0, first.stderr[-4000:]
            report = json.loads(first.stdout)
            checks = {c["check"]: c for c in report["checks"]}
            assert checks["checked"]["detail"].startswith("passed with warnings: jit_pkg-1.2.0"), checks["checked"]
            assert "`long_description` missing" in checks["checked"]["detail"]
            inherited = checks["inherited jit_pkg-1.2.0-py3-none-any.whl on staging"]
            assert inherited["detail"] == (
                f"{DEVPI_USER}/deps (a base of staging) already serves "
                "jit_pkg-1.2.0-py3-none-any.whl with other bytes: this version exists upstream"
            )
            for target in ("staging", "production"):
                assert checks[f"install + smoke on {target}"]["status"] == "passed"
            assert sorted((f["target"], f["filename"], f["upload"], f["status"]) for f in report["files"]) == [
                (target, filename, "uploaded", "verified")
                for target in ("production", "staging")
                for filename in ("jit_pkg-1.2.0-py3-none-any.whl", "jit_pkg-1.2.0.tar.gz")
            ]
            downloads = [s for s in proxy.seen if s[0] == "GET" and "/packages/jit_dep" in s[1]]
            # One install's reads (uv reads the wheel's metadata by range, then the file: 2 GETs, checked by
            # hand with a single install); the second target's install took jit-dep from uv's cache.
            assert len(downloads) == 2, proxy.seen
            assert not [s for s in proxy.seen if "/packages/jit_pkg" in s[1]], proxy.seen  # our name: never from there

            before = len(proxy.seen)
            again = run_cli("release", str(project), "--spec", str(spec), "--json")
            assert again.returncode == 0, again.stderr[-4000:]
            assert [s for s in proxy.seen[before:] if s[0] == "GET" and "/packages/" in s[1]] == []
            assert "Traceback" not in first.stderr + again.stderr


@pytest.mark.case(
    "bad input",
    "a standalone spec kept outside the project, used by check and verify",
    "its version file is found in the project (--project, or the current directory)",
)
def test_check_and_verify_read_a_standalone_spec_relative_to_the_project(tmp_path: Path, home: Path, index) -> None:
    project = jit_project(tmp_path / "jit-pkg")
    spec = standalone_spec(
        tmp_path / "specs" / "jit-pkg.toml", "none", (index.simple_url, index.url), (index.simple_url, index.url)
    )
    index.packages.mkdir(parents=True, exist_ok=True)
    wheel = make_wheel(index.packages, name="jit_pkg", version="1.2.0")
    exe = str(Path(sys.executable).with_name("wheelflow"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runs = {
        "check --project": ([exe, "check", str(wheel), "--spec", str(spec), "--project", str(project)], elsewhere),
        "check in the project": ([exe, "check", str(wheel), "--spec", str(spec)], project),
        "verify --project": (
            [
                exe,
                "verify",
                "jit-pkg==1.2.0",
                "--index",
                "staging",
                "--spec",
                str(spec),
                "--project",
                str(project),
                "--no-install",
            ],
            elsewhere,
        ),
        "verify in the project": (
            [exe, "verify", "jit-pkg==1.2.0", "--index", "staging", "--spec", str(spec), "--no-install"],
            project,
        ),
    }
    for what, (cmd, cwd) in runs.items():
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (what, result.stderr)
        assert "does not exist" not in result.stderr, what
