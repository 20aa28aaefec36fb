"""Releases to static targets, end to end: hello-cuda built by the local builder (its wheels repaired by
real auditwheel), written by wheelflow to a static PEP 503 index, served by the embedded loopback server
or by a real nginx, proven by downloading and hashing, installed by real pip and uv."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import venv
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from test_staticindex import UV, installer_env, tree
from webservers import Nginx

from wheelflow.index.staticsite import EmbeddedStaticServer

HELLO = REPO / "examples" / "hello-cuda"
needs_nvcc = pytest.mark.skipif(
    shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists(),
    reason="no CUDA toolkit on this machine: the kernel cannot be compiled",
)


def release_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    result = run_cli("release", *args, "--json", env=env)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def checks(report: dict) -> dict[str, dict]:
    return {c["check"]: c for c in report["checks"]}


def install(index_url: str, installer: str, where: Path) -> str:
    """Install hello-cuda from ``index_url`` with pip or uv into a fresh venv; the version and selftest it reports."""
    venv.create(where, with_pip=installer == "pip")
    python = where / "bin" / "python"
    cmd = (
        [str(python), "-m", "pip", "install", "--no-cache-dir", "--quiet", "--only-binary", ":all:"]
        if installer == "pip"
        else [str(UV), "pip", "install", "--no-cache", "--quiet", "--only-binary", ":all:", "--python", str(python)]
    )
    proc = subprocess.run(
        [*cmd, "--index-url", index_url, "hello-cuda"], capture_output=True, text=True, env=installer_env()
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, hello_cuda; print(m.version('hello-cuda'), hello_cuda.selftest()['ok'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout.strip()


@needs_nvcc
def test_hello_cuda_to_static_demo_serves_variant_sub_indexes_pip_and_uv_install_from(
    home: Path, prefect_api, tmp_path: Path
) -> None:
    code, report, stderr = release_json(str(HELLO), "--to", "static-demo", "--builder", "local")
    assert code == 0, stderr[-3000:]
    cells = {c["cell"]: c for c in report["cells"]}
    for cell in cells.values():  # repaired: a manylinux tag, the wheel as built kept in the report
        assert cell["platform"].startswith("manylinux_") and cell["wheel"].endswith(cell["platform"] + ".whl")
        assert cell["unrepaired_sha256"] and cell["unrepaired_sha256"] != cell["sha256"]
        assert cell["smoke"] == "passed"
    files = {f["filename"]: f for f in report["files"]}
    assert set(files) == {"hello_cuda-0.1.0.tar.gz"} | {c["wheel"] for c in cells.values()}
    assert {(f["target"], f["upload"], f["status"]) for f in files.values()} == {
        ("static-demo", "uploaded", "verified")
    }
    done = checks(report)
    assert done["published to static-demo (static index)"]["status"] == "passed"
    for sub in ("sm80", "sm90"):
        assert done[f"install + smoke on static-demo/{sub}"]["status"] == "passed"
        assert f"+{sub}-" in done[f"install + smoke on static-demo/{sub}"]["detail"]
        users = [
            c for name, c in done.items() if name.startswith("install check on static-demo: ") and f"/{sub}/" in name
        ]
        assert {c["detail"].split()[0] for c in users} == {"pip", "uv"}  # each sub-index, both installers
        assert all(c["status"] == "passed" and f"(variant {sub})" in c["detail"] for c in users), users
    for filename in files:
        assert "downloaded and hashed" in done[f"served {filename} on static-demo"]["detail"]

    # After the release: the store under $WHEELFLOW_HOME, served again the way README says.
    store = home / "static"
    assert (store / "sm90" / "hello-cuda" / "index.html").is_file() and (store / "index.html").is_file()
    with EmbeddedStaticServer(store) as server:
        for installer in ("pip", "uv"):
            got = install(f"{server.url}/sm90/", installer, tmp_path / f"{installer}-sm90")
            assert got == "0.1.0+sm90 True", installer
        assert install(f"{server.url}/sm80/", "uv", tmp_path / "uv-sm80") == "0.1.0+sm80 True"

    # Again: nothing new is written, every file is proven again.
    before = tree(store)
    code, again, stderr = release_json(str(HELLO), "--to", "static-demo", "--builder", "local")
    assert code == 0, stderr[-3000:]
    assert {f["upload"] for f in again["files"]} == {"already present"}
    assert tree(store) == before


@pytest.mark.case(
    "fault",
    "a later target fails after the static index was written",
    "this run's entries are taken out of the current pages (byte-identical to before, as nothing else "
    "published), this run's files deleted",
)
def test_a_failing_later_stage_leaves_the_static_index_byte_identical(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    from conftest import make_project
    from faultproxy import FaultProxy
    from wheelcraft import make_wheel

    from wheelflow.core.distributions import describe
    from wheelflow.index.staticindex import publish_static

    store = tmp_path / "store"
    with Nginx(tmp_path / "nginx", root=store) as nginx, FaultProxy(index.url) as proxy:
        earlier = tmp_path / "earlier"
        earlier.mkdir()
        publish_static([describe(make_wheel(earlier, version="0.9.0"))], store_url=store.as_uri(), public_url=nginx.url)
        before = tree(store)
        project = make_project(
            tmp_path / "proj",
            extra=textwrap.dedent(f"""
            [tool.wheelflow.targets.wheels]
            kind = "static"
            store-url = "{store.as_uri()}"
            public-url = "{nginx.url}"

            [tool.wheelflow.targets.staging]
            index = "{proxy.url}simple/"
            verify-timeout = 2
            """),
        )
        proxy.lag["tiny_pkg-1.0.0-py3-none-any.whl"] = 3600  # staging never lists the wheel: its proof fails
        code, report, stderr = release_json(str(project))
        assert code == 1, stderr[-3000:]
        done = checks(report)
        assert done["install + smoke on wheels"]["status"] == "passed"  # the static stage had finished
        assert "tiny_pkg-1.0.0-py3-none-any.whl is not served" in report["error"]
        assert tree(store) == before  # every page as it was, the 1.0.0 files and sidecar gone
        rolled = {(f["target"], f["filename"]): (f["upload"], f["status"]) for f in report["files"]}
        assert rolled[("wheels", "tiny_pkg-1.0.0-py3-none-any.whl")] == ("rolled back", "removed")
        assert done["rolled back wheels"]["status"] == "passed"


@pytest.mark.case(
    "fault",
    "a release rejected at its approval while others published to the same static store",
    "its rollback takes out only its own entries and files: the others stay listed, installable and byte-proven",
)
def test_a_rejected_release_rolls_back_only_its_own_entries_from_a_shared_store(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    from conftest import make_project
    from test_promotion import finish, paused_run, start_release

    store = tmp_path / "store"

    def wheels_target(name: str, version: str, then_staging: bool) -> Path:
        extra = f'\n[tool.wheelflow.targets.wheels]\nkind = "static"\nstore-url = "{store.as_uri()}"\n'
        extra += f'public-url = "{nginx.url}"\n'
        if then_staging:  # A: the store first, then staging behind an approval nobody gives
            extra += f'\n[tool.wheelflow.targets.staging]\nindex = "{index.simple_url}"\nverify-timeout = 10\n'
        project = make_project(tmp_path / f"{name}-{version}", name=name, version=version, extra=extra)
        text = (project / "pyproject.toml").read_text()
        if then_staging:
            text = text.replace("[tool.wheelflow]\n", '[tool.wheelflow]\napproval = "manual"\napproval-timeout = 600\n')
        (project / "pyproject.toml").write_text(text)
        return project

    with Nginx(tmp_path / "nginx", root=store) as nginx:
        first = wheels_target("tiny-pkg", "1.0.0", then_staging=True)
        proc = start_release(first)
        run_id = paused_run(first, proc)  # A published to the store and waits
        for name, version in (("tiny-pkg", "1.1.0"), ("other-pkg", "2.0.0")):  # A' and B, while A waits
            code, report, stderr = release_json(str(wheels_target(name, version, then_staging=False)))
            assert code == 0, stderr[-3000:]
        assert run_cli("approve", run_id, "--reject", "--reason", "not this one").returncode == 0
        code, report, stderr = finish(proc)
        assert code == 1 and "rejected: not this one" in report["error"], stderr[-3000:]

        listed = (store / "tiny-pkg" / "index.html").read_text()
        assert "tiny_pkg-1.1.0" in listed and "tiny_pkg-1.0.0" not in listed
        assert not list(store.rglob("tiny_pkg-1.0.0*"))  # A's files are gone, not left unlisted
        assert 'href="other-pkg/"' in (store / "index.html").read_text()  # the root page kept B
        for name, version in (("tiny-pkg", "1.1.0"), ("other-pkg", "2.0.0")):
            proven = run_cli("verify", f"{name}=={version}", "--index", nginx.url, "--no-install")
            assert proven.returncode == 0, proven.stderr[-2000:]  # downloaded from nginx and hashed
            where = tmp_path / f"venv-{name}"
            venv.create(where, with_pip=False)
            installed = subprocess.run(
                [str(UV), "pip", "install", "--no-cache", "--python", str(where / "bin" / "python"),
                 "--index-url", nginx.url, f"{name}=={version}"],
                capture_output=True, text=True, env=installer_env(),
            )  # fmt: skip
            assert installed.returncode == 0, installed.stderr[-2000:]


@pytest.mark.case(
    "fault",
    "two releases to one static store at once, the store spelled two ways (a file:// URL and a symlink to it)",
    "one lock: the second waits for the first, then publishes; both projects end listed on the root page",
)
def test_one_store_spelled_two_ways_is_one_lock_and_both_projects_stay_listed(
    tmp_path: Path, home: Path, prefect_api
) -> None:
    import contextvars
    import os
    import sys
    import threading

    from conftest import make_project

    from wheelflow.adapters.prefect_api import held_alone
    from wheelflow.core.distributions import Distribution, sha256_of
    from wheelflow.index.staticindex import publish_static
    from wheelflow.index.staticsite import StaticSite

    store = tmp_path / "x" / "store"
    store.mkdir(parents=True)
    (tmp_path / "link").symlink_to(store)
    with EmbeddedStaticServer(store) as server:
        # B releases to the store through the symlink, spelled as a plain path with a dot segment.
        extra = (
            f'\n[tool.wheelflow.targets.wheels]\nkind = "static"\nstore-url = "{tmp_path}/./link"\n'
            f'public-url = "{server.url}"\n'
        )
        project_b = make_project(tmp_path / "b", name="other-pkg", version="2.0.0", extra=extra)
        # A (this test) publishes first, holding the lock its own spelling names: file:///.../x/store.
        site_a = StaticSite("wheels", store.as_uri(), server.url, "{local_version}", "every-subindex", 10.0)
        sdist_a = tmp_path / "tiny_pkg-1.0.0.tar.gz"
        subprocess.run(
            [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(make_project(tmp_path / "a"))],
            check=True,
            capture_output=True,
        )
        waited = threading.Event()
        lines: list[str] = []
        with held_alone(site_a.lock_name):
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("wheelflow")), "release", str(project_b), "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=os.environ.copy(),
            )

            def read_stderr() -> None:
                for line in proc.stderr:  # type: ignore[union-attr]
                    lines.append(line)
                    if "which holds static-index:" in line:
                        waited.set()

            reader = threading.Thread(target=contextvars.copy_context().run, args=(read_stderr,))
            reader.start()
            while not waited.is_set() and proc.poll() is None:
                waited.wait(1)  # until B says it waits for our lock, or ends (without waiting: two locks)
            assert waited.is_set(), "B did not wait for the store's lock:\n" + "".join(lines)[-3000:]
            publish_static(
                [Distribution(sdist_a, "sdist", sha256_of(sdist_a))], store_url=site_a.store_url, public_url=server.url
            )
        out, _ = proc.communicate(timeout=600)
        reader.join(60)
        assert proc.returncode == 0, "".join(lines)[-3000:]
        root = (store / "index.html").read_text()
        assert 'href="tiny-pkg/"' in root and 'href="other-pkg/"' in root  # neither project's entry was lost
        assert json.loads(out)["ok"] is True
