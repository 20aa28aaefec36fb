"""The wheel matrix built in Docker: a real dockerd, images from `wheelflow images`, nvcc mounted in."""

from __future__ import annotations

import json
import re
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from wheelflow.builds.builders.docker import MANAGED_LABEL, ROLE_LABEL, RUN_LABEL, DockerBuilder
from wheelflow.config.matrix import Cell
from wheelflow.core.errors import InfrastructureError

HELLO = REPO / "examples" / "hello-cuda"
pytestmark = pytest.mark.skipif(
    not Path("/usr/local/cuda/bin/nvcc").exists(),
    reason="no CUDA toolkit at /usr/local/cuda to mount into the build containers",
)


def hello_spec(
    tmp_path: Path, *, pythons: list[str], archs: list[str], extra: str = "", images: str = "wheelflow"
) -> Path:
    """hello-cuda's own spec with another matrix (a standalone spec, as for a project you don't control)."""
    path = tmp_path / "hello-matrix.toml"
    path.write_text(
        textwrap.dedent(f"""
        name = "hello-cuda"
        artifacts = ["sdist", "wheel"]
        smoke = "python -c \\"import hello_cuda, sys; r = hello_cuda.selftest(); print(r); sys.exit(0 if r['ok'] and r['with_cuda'] else 1)\\""

        [version]
        tag = "hello-cuda-v{{version}}"
        file = "src/hello_cuda/_version.py"
        require-tag = false  # released from wheelflow's own, untagged, commits

        [matrix]
        axes = {{ python = {json.dumps(pythons)}, arch = {json.dumps(archs)} }}
        image = "{images}/builder:py{{python}}"
        runtime-image = "{images}/runtime:py{{python}}"
        env = {{ HELLO_CUDA_ARCHS = "{{arch}}" }}
        local-version = "sm{{arch}}"
        """)
        + textwrap.dedent(extra)
    )
    return path


def release(
    spec: Path, *extra: str, env: dict[str, str] | None = None, builder: str | None = "docker"
) -> tuple[int, dict, str]:
    chosen = ("--builder", builder) if builder else ()
    result = run_cli("release", str(HELLO), "--spec", str(spec), *chosen, *extra, "--json", env=env)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def leftover_containers(client, root: Path, role: str | None = None) -> list:
    """wheelflow's containers (of ``role``) that this test's builds made: those mounting a folder under
    ``root`` (the test's temporary folder, which holds its home and work folders). Tests run in
    parallel (``-n``): another test's containers, running meanwhile, are not this one's leftovers."""
    labels = [f"{MANAGED_LABEL}=true", *([f"{ROLE_LABEL}={role}"] if role else [])]
    return [
        container
        for container in client.containers.list(all=True, filters={"label": labels})
        if any(Path(mount.get("Source", "/")).is_relative_to(root) for mount in container.attrs.get("Mounts", []))
    ]


def test_two_pythons_build_in_containers_with_the_kernel_and_a_rerun_is_all_cached(
    tmp_path: Path, home: Path, prefect_api, docker_images
) -> None:
    spec = hello_spec(tmp_path, pythons=["3.11", "3.13"], archs=["90"])
    code, report, stderr = release(spec)
    assert code == 0, stderr[-4000:]
    assert report["builder"] == "docker"
    cells = {c["cell"]: c for c in report["cells"]}
    assert set(cells) == {"py3.11-arch90", "py3.13-arch90"}
    for name, cell in cells.items():
        assert (cell["state"], cell["cached"], cell["smoke"], cell["attempts"]) == ("built", False, "passed", 1), name
    # Repaired in the cell's own image (its auditwheel): a manylinux tag, the wheel as built kept in the report.
    for name, abi in (("py3.11-arch90", "cp311"), ("py3.13-arch90", "cp313")):
        assert re.fullmatch(
            rf"hello_cuda-0\.1\.0\+sm90-{abi}-{abi}-manylinux_\d+_\d+_x86_64\.whl", cells[name]["wheel"]
        )
        assert (
            cells[name]["platform"].startswith("manylinux_")
            and cells[name]["unrepaired_sha256"] != cells[name]["sha256"]
        )
    for cell in cells.values():
        with zipfile.ZipFile(home / "index" / "packages" / cell["wheel"]) as zf:
            (ext,) = [n for n in zf.namelist() if n.endswith(".so")]
            device_code = zf.read(ext)
        assert b"saxpy_kernel" in device_code and b"sm_90" in device_code  # compiled by nvcc in the container
    assert all(f["status"] == "verified" for f in report["files"]) and len(report["files"]) == 3
    assert leftover_containers(docker_images, tmp_path) == []

    since = int(time.time()) - 1
    code, again, stderr = release(spec)
    until = int(time.time()) + 1
    assert code == 0, stderr[-4000:]
    assert [(c["cell"], c["cached"], c["sha256"]) for c in again["cells"]] == [
        (c["cell"], True, c["sha256"]) for c in report["cells"]
    ]
    builds = list(
        docker_images.events(
            since=since,
            until=until,
            decode=True,
            filters={
                "type": "container",
                "event": "create",
                "label": [f"{ROLE_LABEL}=build", f"{RUN_LABEL}={again['flow_run_id']}"],  # this release's
            },
        )
    )
    assert builds == []  # cached cells start no build container
    assert leftover_containers(docker_images, tmp_path) == []


def test_a_failing_cell_fails_the_release_by_name_while_the_other_completes(
    tmp_path: Path, home: Path, prefect_api, docker_images
) -> None:
    spec = hello_spec(tmp_path, pythons=["3.11"], archs=["90", "bogus"])  # nvcc rejects compute_bogus
    code, report, _ = release(spec)
    assert code == 1
    cells = {c["cell"]: c for c in report["cells"]}
    assert cells["py3.11-arch90"]["state"] == "built" and cells["py3.11-arch90"]["wheel"]
    failed = cells["py3.11-archbogus"]
    assert failed["state"] == "failed" and failed["attempts"] == 1  # a compile error is not retried
    assert "cell py3.11-archbogus: build failed (exit 1)" in failed["error"]
    assert report["error"].startswith("1 of 2 cells failed: py3.11-archbogus: build failed")
    assert not (home / "index" / "packages").exists() or not any((home / "index" / "packages").iterdir())
    assert leftover_containers(docker_images, tmp_path) == []


def test_a_build_stopped_by_its_timeout_leaves_no_container(
    tmp_path: Path, home: Path, prefect_api, docker_images
) -> None:
    spec = hello_spec(tmp_path, pythons=["3.11"], archs=["90"], extra="timeout = 2\n")
    code, report, _ = release(spec)
    assert code == 1
    (cell,) = report["cells"]
    assert cell["state"] == "failed"
    assert cell["error"] == (
        "cell py3.11-arch90: build stopped by its 2 s timeout and its container removed; fix: raise matrix.timeout"
    )
    assert leftover_containers(docker_images, tmp_path) == []


def test_a_stopped_daemon_is_a_clear_error_after_retries_and_no_success(
    tmp_path: Path, home: Path, prefect_api, docker_images
) -> None:
    # The client sees a stopped daemon exactly as a socket nobody listens on; stopping the real
    # dockerd here would take it from the tests that run beside this one.
    spec = hello_spec(tmp_path, pythons=["3.11"], archs=["90"])
    code, report, _ = release(spec, env={"DOCKER_HOST": f"unix://{tmp_path}/stopped-dockerd.sock"})
    assert code == 1 and not report["ok"]
    (cell,) = report["cells"]
    assert cell["state"] == "failed" and cell["attempts"] == 3  # infrastructure errors are retried
    assert "the Docker daemon does not answer" in cell["error"]
    assert "fix: start dockerd (or set DOCKER_HOST), or use --builder local" in cell["error"]


def test_a_missing_image_says_how_to_get_it(docker_images) -> None:
    cell = Cell(name="py9.9", values={"python": "9.9"}, image="wheelflow/builder:py9.9")
    with pytest.raises(InfrastructureError) as err:
        DockerBuilder().identity(cell)
    assert str(err.value) == (
        "cell py9.9: image wheelflow/builder:py9.9 is not on this runner; "
        "fix: run `wheelflow images`, or build/pull that image"
    )
    assert err.value.transient


def test_gpu_cells_smoke_with_a_gpu_or_say_they_were_skipped(
    tmp_path: Path, home: Path, prefect_api, docker_images
) -> None:
    spec = hello_spec(tmp_path, pythons=["3.11"], archs=["90"], extra="gpu = true\n")
    code, report, stderr = release(spec)
    assert code == 0, stderr[-3000:]
    (cell,) = report["cells"]
    # Whether this machine has a GPU, told by the kernel driver's device node, not by the code under test.
    expected = "passed" if Path("/dev/nvidiactl").exists() else "skipped: no GPU on this runner"
    assert cell["smoke"] == expected
    smoke_check = next(c for c in report["checks"] if c["check"] == "smoke test of every wheel")
    assert expected in smoke_check["detail"]


@pytest.mark.case(
    "fault",
    "the Docker daemon stops answering in the middle of a cell's build",
    "the cell fails after its retries with the daemon named and the fix; the release fails, nothing is uploaded",
)
def test_a_daemon_lost_mid_build_fails_the_release_clearly(
    tmp_path: Path, home: Path, prefect_api, docker_images
) -> None:
    import subprocess
    import sys
    import uuid

    from faultproxy import UnixSocketRelay

    # The release talks to the real dockerd through a relay that is cut mid-build: to the client it
    # is the daemon going away, while the real one stays up for the other tests.
    relay = UnixSocketRelay(str(tmp_path / "dockerd.sock"), "/var/run/docker.sock")
    spec = hello_spec(
        tmp_path, pythons=["3.11"], archs=["90"], extra=f'\n[build]\nenv = {{ NONCE = "{uuid.uuid4().hex}" }}\n'
    )  # no cached cell
    exe = str(Path(sys.executable).with_name("wheelflow"))
    proc = subprocess.Popen(
        [exe, "release", str(HELLO), "--spec", str(spec), "--builder", "docker", "--json"],
        env={**__import__("os").environ, "DOCKER_HOST": f"unix://{relay.path}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not leftover_containers(docker_images, tmp_path, role="build"):  # this release's, running
            assert proc.poll() is None and time.monotonic() < deadline, "no build container started"
            time.sleep(0.2)  # polling the real daemon for the build container, bounded by the deadline
        relay.cut()
        out, _ = proc.communicate(timeout=600)
    finally:
        for container in leftover_containers(docker_images, tmp_path):  # the cut-off release could not remove it
            container.remove(force=True)
    report = json.loads(out)
    assert proc.returncode == 1 and not report["ok"]
    (cell,) = report["cells"]
    assert cell["state"] == "failed" and cell["attempts"] == 3
    assert "the Docker daemon does not answer" in cell["error"]
    # Nothing reached publishing: no file was routed to a target, no upload step ran.
    assert report["files"] == [] and not [c for c in report["checks"] if c["check"].startswith("uploaded")]
    assert report["error"].startswith("1 of 1 cells failed: py3.11-arch90: ")


# A daemon without wheelflow's images: the spec names images that exist nowhere (the shared daemon
# keeps its images for the other tests; see shared/README).
@pytest.mark.case(
    "bad input",
    "Docker answers but the matrix's images were never built, no builder chosen",
    "built with the local builder, saying so in a warning and in the report; exit 0",
)
def test_without_the_images_the_default_builder_is_local_and_says_so(
    tmp_path: Path, home: Path, prefect_api, docker_images
) -> None:
    spec = hello_spec(tmp_path, pythons=["3.11"], archs=["90"], images="wheelflow-never-built")
    code, report, stderr = release(spec, builder=None)
    assert code == 0, stderr[-3000:]
    assert report["builder"] == "local"
    note = next(c for c in report["checks"] if c["check"] == "builder")
    assert note["detail"].startswith(
        "local: docker images missing (wheelflow-never-built/builder:py3.11, "
        "wheelflow-never-built/runtime:py3.11): built with the local builder"
    )


@pytest.mark.case(
    "bad input",
    "--builder docker where the matrix's images were never built",
    "refused before anything is built, naming the image and `wheelflow images`",
)
def test_an_explicit_docker_builder_without_its_image_fails_before_building(
    tmp_path: Path, home: Path, prefect_api, docker_images
) -> None:
    spec = hello_spec(tmp_path, pythons=["3.11"], archs=["90"], images="wheelflow-never-built")
    code, report, _ = release(spec)
    assert code == 1
    assert report["error"] == (
        "cell py3.11-arch90 cannot be built by the docker builder: image "
        "wheelflow-never-built/builder:py3.11 is not on this runner; fix: run `wheelflow images`, "
        "or build/pull that image, or use --builder local"
    )
    assert not [c for c in report["checks"] if c["check"].startswith("built")]  # not even the sdist


SLOW_COMPILE_SETUP = """
import subprocess
from setuptools import setup
from setuptools.command.build_py import build_py


class compile_then_build_py(build_py):  # only the wheel's build compiles, not the backend's probes
    def run(self):
        subprocess.run(["tools/nvcc", "-c", "/tmp/src/csrc/a.cu", "-o", "a.o"], check=True)
        super().run()


setup(name="slowcompile", version="0.1.0", py_modules=["slowcompile"], cmdclass={"build_py": compile_then_build_py})
"""
# a compiler that prints nothing and works until the test lets it finish (through the /out mount)
FAKE_NVCC = "#!/bin/sh\ntouch /out/started\nwhile [ ! -e /out/release ]; do sleep 0.1; done\n"


def test_docker_progress_lines_name_the_unit_compiling_in_the_container(tmp_path: Path, docker_images) -> None:
    source, out = tmp_path / "slowcompile", tmp_path / "out"
    (source / "tools").mkdir(parents=True)
    (source / "csrc").mkdir()
    out.mkdir()
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (source / "setup.py").write_text(SLOW_COMPILE_SETUP)
    (source / "slowcompile.py").write_text("")
    (source / "csrc" / "a.cu").write_text("__global__ void k() {}\n")
    (source / "tools" / "nvcc").write_text(FAKE_NVCC)
    (source / "tools" / "nvcc").chmod(0o755)
    cell = Cell(name="py3.11", values={"python": "3.11"}, image="wheelflow/builder:py3.11", timeout=600)
    lines: list[str] = []
    done: list[BaseException | None] = []

    def build() -> None:
        try:
            DockerBuilder(progress_every=0.5).build(cell, source, out, {}, lines.append, {"org.wheelflow.run": "t"})
            done.append(None)
        except BaseException as exc:  # handed to the test's thread
            done.append(exc)

    builder = threading.Thread(target=build)
    builder.start()
    wanted = re.compile(r"cell py3\.11: building for \d+ s, compiling csrc/a\.cu; 0 units done")
    try:
        deadline = time.monotonic() + 480
        while not any(wanted.fullmatch(line) for batch in list(lines) for line in batch.splitlines()):
            assert not done and time.monotonic() < deadline, "\n".join(lines)[-3000:]
            time.sleep(0.1)  # polling the build's log for the progress line, bounded by the deadline
    finally:
        (out / "release").touch()
        builder.join(120)
    assert done == [None], "\n".join(lines)[-3000:]
    assert (out / "started").exists() and list(out.glob("slowcompile-0.1.0-*.whl"))
    assert leftover_containers(docker_images, tmp_path) == []
