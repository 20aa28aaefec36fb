"""Archives and binaries that do not depend on where, when or under which umask they were built."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from wheelflow.core import sandbox
from wheelflow.core.reproducible import BUILD_ENV_AS, normalise_wheel, prefix_map_env

COMMIT_EPOCH = 1772366400  # 2026-03-01T12:00:00Z


def test_a_rewritten_wheel_keeps_a_correct_record(tmp_path: Path) -> None:
    wheel = tmp_path / "tiny_pkg-1.0.0-py3-none-any.whl"
    files = {"tiny_pkg/__init__.py": b"x = 1\n", "tiny_pkg/run.sh": b"#!/bin/sh\n"}
    record = (
        "".join(
            f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
            f"{len(data)}\n"
            for name, data in files.items()
        )
        + "tiny_pkg-1.0.0.dist-info/RECORD,,\n"
    )
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for (name, data), mode in zip(files.items(), (0o664, 0o775)):
            info = zipfile.ZipInfo(name, date_time=(2030, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, data)
        zf.writestr("tiny_pkg-1.0.0.dist-info/RECORD", record)

    assert normalise_wheel(wheel, COMMIT_EPOCH) is True
    assert normalise_wheel(wheel, COMMIT_EPOCH) is False  # already canonical: left alone
    with zipfile.ZipFile(wheel) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        rows = list(csv.reader(io.StringIO(zf.read("tiny_pkg-1.0.0.dist-info/RECORD").decode())))
        for name, digest, size in rows[:-1]:
            data = zf.read(name)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(size) == len(data)
    assert [oct(infos[n].external_attr >> 16) for n in files] == ["0o100644", "0o100755"]
    assert {i.date_time for i in infos.values()} == {(2026, 3, 1, 12, 0, 0)}


def test_a_repaired_wheels_directory_entries_get_the_commit_time_and_stay_directories(tmp_path: Path) -> None:
    """auditwheel's repair writes the wheel again, with directory entries and the time of day: two
    fresh homes repaired the same built wheel into two wheels that differed in entry times only."""
    wheel = tmp_path / "tiny_pkg-1.0.0-cp311-cp311-manylinux_2_34_x86_64.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        folder = zipfile.ZipInfo("tiny_pkg/", date_time=(2026, 12, 7, 7, 4, 52))
        folder.external_attr = (0o40775 << 16) | 0x10
        zf.writestr(folder, b"")
        module = zipfile.ZipInfo("tiny_pkg/_core.so", date_time=(2026, 12, 7, 7, 4, 52))
        module.external_attr = 0o100775 << 16
        zf.writestr(module, b"\x7fELF")

    assert normalise_wheel(wheel, COMMIT_EPOCH) is True
    assert normalise_wheel(wheel, COMMIT_EPOCH) is False
    with zipfile.ZipFile(wheel) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        assert zf.read("tiny_pkg/_core.so") == b"\x7fELF"
    assert infos["tiny_pkg/"].is_dir() and oct(infos["tiny_pkg/"].external_attr >> 16) == "0o40755"
    assert oct(infos["tiny_pkg/_core.so"].external_attr >> 16) == "0o100755"
    assert {i.date_time for i in infos.values()} == {(2026, 3, 1, 12, 0, 0)}


SOURCE = '#include <stdio.h>\nint main(void) { printf("%s\\n", __FILE__); return 0; }\n'
KERNEL = (
    '#include <cstdio>\n__global__ void k(float *x) { x[0] = 1; }\nint main() { std::printf("%s\\n", __FILE__); }\n'
)


def compile_in(directory: Path, compiler: list[str], name: str, text: str, env: dict[str, str]) -> bytes:
    directory.mkdir(parents=True)
    (directory / name).write_text(text)
    # An absolute source path, as setuptools passes it: what the prefix map must rewrite.
    subprocess.run(
        [*compiler, "-c", str(directory / name), "-o", str(directory / "out.o")],
        check=True,
        cwd=directory,
        env=env,
        capture_output=True,
    )
    return (directory / "out.o").read_bytes()


def test_gcc_objects_from_two_directories_are_identical_with_the_prefix_maps(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc on this machine")
    objects = []
    for where in ("first/checkout", "somewhere/else/entirely"):
        directory = tmp_path / where
        flags = prefix_map_env(str(directory), os.environ)["CFLAGS"].split()
        # setuptools passes $CFLAGS to the compiler; here they are given on the command line.
        objects.append(compile_in(directory, [gcc, "-g", "-O2", *flags], "hello.c", SOURCE, dict(os.environ)))
        assert str(directory).encode() not in objects[-1]
    assert objects[0] == objects[1]


HEADER = "static inline const char *where_header(void) { return __FILE__; }\n"


def test_headers_of_a_build_environment_in_two_homes_are_recorded_alike(tmp_path: Path) -> None:
    """torch's headers put their own path in the extension (``__FILE__`` in its INTERNAL ASSERT
    messages), and the prepared build environment lives in the home: two fresh homes built torch-ext
    into two .so files that differed in those paths only."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc on this machine")
    objects = []
    for home in ("home-a", "elsewhere/home-b"):
        build_env = tmp_path / home / "build-envs" / "0123abcd"
        (build_env / "include").mkdir(parents=True)
        (build_env / "include" / "where.h").write_text(HEADER)
        directory = tmp_path / home / "checkout"
        flags = prefix_map_env(str(directory), os.environ, build_env=str(build_env))["CFLAGS"].split()
        source = '#include "where.h"\nconst char *where(void) { return where_header(); }\n'
        objects.append(
            compile_in(directory, [gcc, "-O2", f"-I{build_env}/include", *flags], "ext.c", source, dict(os.environ))
        )
        assert str(build_env).encode() not in objects[-1]
        assert f"{BUILD_ENV_AS}/include/where.h".encode() in objects[-1]
    assert objects[0] == objects[1]


def test_nvcc_records_no_build_directory_with_the_prefix_maps(tmp_path: Path) -> None:
    """nvcc reads NVCC_APPEND_FLAGS itself. Its objects still differ between two runs: the host
    object's file symbol names nvcc's temporary file, which carries nvcc's process id."""
    nvcc = shutil.which("nvcc") or next((p for p in ["/usr/local/cuda/bin/nvcc"] if Path(p).exists()), None)
    if nvcc is None:
        pytest.skip("no CUDA toolkit on this machine")
    directory = tmp_path / "some" / "checkout"
    env = {**os.environ, **prefix_map_env(str(directory), os.environ)}
    compiled = compile_in(directory, [nvcc, "-g", "-O2", "-arch=sm_80"], "kernel.cu", KERNEL, env)
    assert b"kernel.cu" in compiled and str(directory).encode() not in compiled


def test_nvcc_debug_objects_from_two_sandboxed_builds_are_identical(tmp_path: Path) -> None:
    """A debug build (``-g``) keeps the path of nvcc's temporary file (``$TMPDIR/tmpxft_<pid>_…``)
    in the object. Under bwrap each build sees its private temporary folder at one path, and nvcc
    starts under the same PID in its namespace: two builds at two paths give the same object."""
    nvcc = shutil.which("nvcc") or next((p for p in ["/usr/local/cuda/bin/nvcc"] if Path(p).exists()), None)
    if nvcc is None:
        pytest.skip("no CUDA toolkit on this machine")
    if sandbox.protection() != sandbox.BWRAP:
        pytest.skip("bwrap cannot make namespaces here")
    objects = []
    for where in ("first/checkout", "somewhere/else/entirely"):
        directory = tmp_path / where
        directory.mkdir(parents=True)
        (directory / "kernel.cu").write_text(KERNEL)
        env = {**os.environ, **prefix_map_env(str(directory), os.environ)}
        cmd = [nvcc, "-g", "-O2", "-arch=sm_80", "-c", str(directory / "kernel.cu"), "-o", str(directory / "out.o")]
        result, output = sandbox.run_step_captured(cmd, env=env, cwd=directory, writable=[directory], network=False)
        assert result.code == 0, output
        objects.append((directory / "out.o").read_bytes())
    assert f"{sandbox.SCRATCH_INSIDE}/tmpxft_".encode() in objects[0]
    assert objects[0] == objects[1]
