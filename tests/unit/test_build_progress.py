"""Progress names the compile units running now, read from the build's process tree (issue 34, item 4)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from wheelflow.builds.builders import Progress, compile_unit_of, compile_units_in
from wheelflow.builds.builders.docker import commands_from_top
from wheelflow.builds.builders.local import _stream
from wheelflow.core.sandbox import BWRAP, SESSION, protection

FAKE_NVCC = """#!{python}
# a compiler that says it started, then works until the test lets it finish
import os, sys, time
from pathlib import Path
unit = next(a for a in sys.argv[1:] if a.endswith(".cu"))
flags = Path(os.environ["FAKE_FLAGS"])
name = Path(unit).stem
(flags / f"started-{{name}}").touch()
while not (flags / f"release-{{name}}").exists():
    time.sleep(0.02)  # the fake compile's work
"""


def until(condition, what: str, seconds: float = 60.0):
    """Poll the condition the test waits for (bounded), never a fixed time."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def test_a_compilers_command_line_names_its_unit_and_not_its_temporary_files() -> None:
    assert compile_unit_of(["/usr/local/cuda/bin/nvcc", "-c", "/tmp/wheelflow-src-x1/csrc/a.cu", "-o", "a.o"]) == (
        "csrc/a.cu"
    )
    assert compile_unit_of(["/usr/lib/gcc/x86_64-linux-gnu/12/cc1plus", "-quiet", "csrc/b.cpp", "-o", "/tmp/b.s"]) == (
        "csrc/b.cpp"
    )
    assert compile_unit_of(["/bin/sh", "/wrappers/x86_64-linux-gnu-g++-12", "-c", "c.cc"]) == "c.cc"
    assert compile_unit_of(["cc1plus", "-quiet", "/tmp/tmpxft_0001_00000000-6_a.cudafe1.cpp"]) is None
    assert compile_unit_of(["ninja", "-v", "build.ninja"]) is None
    # gcc 11+ names the source once more, and its extension alone, after the real one (seen in a Docker build)
    cc1 = ["/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "-quiet", "-I", "csrc", "csrc/_core.c", "-quiet", "-dumpdir"]
    cc1 += ["build/temp/csrc/", "-dumpbase", "_core.c", "-dumpbase-ext", ".c", "-fPIC", "-o", "/tmp/ccy3EIqn.s"]
    assert compile_unit_of(cc1) == "csrc/_core.c"
    preprocess = ["cc1plus", "-E", "-include", "cuda_runtime.h", "csrc/saxpy_kernel.cu", "-o", "/tmp/x.ii"]
    preprocess += ["-dumpbase", "tmpxft_00000010_00000000-5_saxpy_kernel.cpp4.cu", "-dumpbase-ext", ".cu"]
    assert compile_unit_of(preprocess) == "csrc/saxpy_kernel.cu"
    assert compile_unit_of(["python3", "setup.py", "bdist_wheel"]) is None


@pytest.mark.parametrize("mode", [SESSION, BWRAP])
def test_progress_names_the_units_compiling_now_from_the_process_tree(tmp_path: Path, mode: str) -> None:
    if mode == BWRAP and protection() != BWRAP:
        pytest.skip("bubblewrap cannot run here")
    bin_dir, flags, work = tmp_path / "bin", tmp_path / "flags", tmp_path / "work"
    for folder in (bin_dir, flags, work):
        folder.mkdir()
    nvcc = bin_dir / "nvcc"
    nvcc.write_text(FAKE_NVCC.format(python=sys.executable))
    nvcc.chmod(0o755)
    lines: list[str] = []
    progress = Progress("cell t", lines.append, every=3600)  # the test asks for the line itself
    # ninja prints nothing until the end: the output names no unit
    build = "nvcc -c csrc/a.cu -o a.o & nvcc -c csrc/b.cu -o b.o & wait"
    result: list[object] = []
    step = threading.Thread(
        target=lambda: result.append(
            _stream(  # the local builder's way to run a build: it hands the PID to the progress
                ["sh", "-c", build],
                {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_FLAGS": str(flags)},
                work,
                lambda text: None,
                600,
                progress,
                writable=[flags],
                mode=mode,
            )
        )
    )
    step.start()
    try:
        until(lambda: (flags / "started-a").exists() and (flags / "started-b").exists(), "both compiles to start")
        assert progress.report().endswith("compiling csrc/a.cu, csrc/b.cu; 0 units done")
        progress.line("[1/2] nvcc -c csrc/a.cu -o a.o")  # ninja's count, where it prints one
        (flags / "release-a").touch()
        until(lambda: progress.sample() == ["csrc/b.cu"], "a.cu's compiler to exit")
        assert progress.report().endswith("compiling csrc/b.cu; 1 of 2 units done")
    finally:
        (flags / "release-a").touch()
        (flags / "release-b").touch()
        step.join(60)
    assert result and result[0][0] == 0  # type: ignore[index]
    assert progress.report().endswith("compiling nothing right now; 2 of 2 units done")


def test_progress_adds_the_compiler_caches_hits_so_far(tmp_path: Path) -> None:
    progress = Progress("cell t", lambda line: None, every=3600, cached=lambda: (2, 5))
    progress.watch(os.getpid())  # this test's own tree: no compiler runs under it
    assert progress.report().endswith("compiling nothing right now; 0 units done, compiler cache: 2 of 5 compiles hit")


def test_one_function_reads_the_units_from_a_process_list_for_both_builders() -> None:
    # A container's processes, as its build copies the source to /tmp/src and compiles there.
    processes = [
        ["/out/.wheelflow-build-env/bin/python", "-m", "build", "--wheel", "/tmp/src"],
        ["/usr/local/cuda/bin/nvcc", "-c", "/tmp/src/csrc/a.cu", "-o", "/tmp/src/build/a.o"],
        ["/usr/local/cuda/bin/cicc", "--orig_src_file_name", "/tmp/src/csrc/a.cu", "/tmp/tmpxft_01_a.cpp1.ii"],
        ["/usr/lib/gcc/x86_64-linux-gnu/12/cc1plus", "-quiet", "csrc/b.cpp", "-o", "/tmp/b.s"],
        ["ninja", "-v"],
    ]
    assert compile_units_in(processes, "/tmp/src") == ["csrc/a.cu", "csrc/b.cpp"]
    assert compile_units_in(processes) == ["/tmp/src/csrc/a.cu", "csrc/b.cpp"]  # no build folder: kept as named


def test_progress_names_the_units_of_a_watched_process_list_and_counts_the_ended_ones_done() -> None:
    running = [
        ["nvcc", "-c", "/tmp/src/csrc/a.cu", "-o", "a.o"],
        ["/bin/sh", "/tmp/src/tools/g++", "-c", "/tmp/src/csrc/b.cpp"],
    ]
    progress = Progress("cell py3.11", lambda line: None, every=3600)
    progress.watch_processes(lambda: list(running), build_dir="/tmp/src")
    progress.line("[1/9] nvcc -c /tmp/src/csrc/a.cu -o a.o")
    assert progress.report().endswith("compiling csrc/a.cu, csrc/b.cpp; 0 of 9 units done")
    running.pop(0)
    assert progress.report().endswith("compiling csrc/b.cpp; 1 of 9 units done")
    running.clear()
    assert progress.report().endswith("compiling nothing right now; 2 of 9 units done")


def test_docker_tops_answer_is_read_as_command_lines() -> None:
    top = {
        "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        "Processes": [
            ["root", "10", "1", "0", "12:30", "?", "00:00:00", "/bin/sh -c cd /src && python -m build"],
            ["root", "11", "10", "9", "12:30", "?", "00:00:03", "/usr/local/cuda/bin/nvcc -c /tmp/src/csrc/a.cu"],
        ],
    }
    assert compile_units_in(commands_from_top(top), "/tmp/src") == ["csrc/a.cu"]
    assert commands_from_top({"Titles": ["PID"], "Processes": [["10"]]}) == []  # no command column: none
