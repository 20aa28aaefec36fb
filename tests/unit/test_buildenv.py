"""Build environments for torch extensions, the installer configuration both installers share, the
released sdist as a source, and what a long or killed build says."""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path

import pytest

from wheelflow.builds.buildenv import (
    LEGACY_REQUIRES,
    BuildSetup,
    CompilerCache,
    build_system_requires,
    missing_module,
    missing_module_fix,
    requirements_for,
)
from wheelflow.builds.builders import Progress, ended_by, torch_mismatch
from wheelflow.builds.sdists import missing_from_sdist, unpack_sdist
from wheelflow.config.spec import parse_spec
from wheelflow.core.errors import BuildError, SpecError
from wheelflow.core.installerconfig import InstallerConfig, parse_pip_config_list

PIP_CONFIG = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/somewhere/else'
"""


def test_pip_configuration_reaches_uv_too() -> None:
    # uv reads no pip.conf: without this, a build made by pip and a smoke test made by uv resolve
    # different torch versions on a machine whose pip configuration caps torch
    config = parse_pip_config_list(PIP_CONFIG)
    assert config.extra_index_urls == ("file:///opt/pypi/simple", "file:///opt/pypi-more/simple")
    assert config.find_links == ("/opt/wheels",)  # the PIP_FIND_LINKS variable wins over the file
    assert config.constraints == ("/etc/xdg/pip/constraints.txt",)
    uv = config.uv_env()
    assert uv["UV_CONSTRAINT"] == "/etc/xdg/pip/constraints.txt"
    assert uv["UV_EXTRA_INDEX_URL"] == "file:///opt/pypi/simple file:///opt/pypi-more/simple"
    assert uv["UV_FIND_LINKS"] == "/opt/wheels" and uv["UV_NO_CONFIG"] == "1"
    pip = config.pip_env()
    assert pip["PIP_CONSTRAINT"] == "/etc/xdg/pip/constraints.txt" and pip["PIP_FIND_LINKS"] == "/opt/wheels"


def test_the_cells_pins_become_one_more_constraint_file(tmp_path: Path) -> None:
    config = InstallerConfig(constraints=("/etc/c.txt",)).with_pins(["torch==2.14.1"], tmp_path)
    first, pins = config.uv_env()["UV_CONSTRAINT"].split(" ")
    assert first == "/etc/c.txt" and Path(pins).read_text() == "torch==2.14.1\n"


def test_build_requirements_fall_back_to_pep_517s_default(tmp_path: Path) -> None:
    assert build_system_requires(tmp_path) == LEGACY_REQUIRES  # no pyproject.toml (setup.py only)
    (tmp_path / "pyproject.toml").write_text('[tool.wheelflow]\nname = "x"\n')
    assert build_system_requires(tmp_path) == LEGACY_REQUIRES  # a pyproject without [build-system]
    (tmp_path / "pyproject.toml").write_text('[build-system]\nrequires = ["scikit-build-core>=0.10"]\n')
    setup = BuildSetup(requires=("torch==2.14.1",), isolation=False)
    assert requirements_for(tmp_path, setup) == ("scikit-build-core>=0.10", "torch==2.14.1", "build")


def test_a_build_that_cannot_import_torch_names_the_keys_that_fix_it() -> None:
    tail = [
        '  File "setup.py", line 3, in <module>',
        "    import torch",
        "ModuleNotFoundError: No module named 'torch'",
    ]
    assert missing_module(tail) == "torch"
    fix = missing_module_fix("torch")
    assert "[tool.wheelflow.build] requires" in fix and "isolation = false" in fix and "torch=={torch}" in fix


def test_the_smoke_torch_must_be_the_build_torch() -> None:
    assert torch_mismatch("2.14.1", "2.14.1+cu130 (CUDA 13.0)") is None  # the metadata has no local label
    assert torch_mismatch(None, "2.15.0+cu132 (CUDA 13.2)") is None  # nothing known about the build
    message = torch_mismatch("2.14.1", "2.15.0+cu132 (CUDA 13.2)")
    assert "loaded torch 2.15.0+cu132" in message and "built against torch 2.14.1" in message


def test_a_killed_build_says_by_which_signal_after_how_long() -> None:
    assert ended_by(-15, 41.6) == "killed by signal 15 (SIGTERM) after 42 s"
    assert ended_by(1, 3.0) == "exit 1"


def test_progress_names_the_elapsed_time_and_the_compile_unit() -> None:
    now = [100.0]
    lines: list[str] = []
    progress = Progress("cell py3.11", lines.append, every=30, clock=lambda: now[0])
    progress.line(
        "[2/3] /usr/local/cuda/bin/nvcc --generate-dependencies-with-compile -c "
        "/tmp/wheelflow-src-k2j3/csrc/saxpy.cu -o /tmp/wheelflow-src-k2j3/build/saxpy.o"
    )
    now[0] += 600
    assert progress.report() == "cell py3.11: building for 600 s, compiling csrc/saxpy.cu"


def test_progress_speaks_while_the_build_is_silent() -> None:
    said = threading.Event()
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        said.set()

    with Progress("cell a", log, every=0.01):
        assert said.wait(10)  # a compile that prints nothing for minutes still shows progress
    assert lines[0].startswith("cell a: building for ")


def test_compiler_cache_hit_rate_is_read_from_its_stats_log(tmp_path: Path) -> None:
    log = tmp_path / "stats.log"
    log.write_text("# csrc/a.cu\ndirect_cache_hit\n# csrc/b.cu\ncache_miss\n# csrc/c.cpp\npreprocessed_cache_hit\n")
    assert CompilerCache(tmp_path, tmp_path, log).hit_rate() == (2, 3)


def _sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    return path


def test_the_files_an_sdist_lacks_are_named_headers_first(tmp_path: Path) -> None:
    project = tmp_path / "project"
    for name in ("setup.py", "csrc/ext.h", "csrc/ext.cu", "README.md", "tests/test_x.py"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x")
    sdist = _sdist(tmp_path / "ext-1.0.tar.gz", {"ext-1.0/setup.py": "x", "ext-1.0/csrc/ext.cu": "x"})
    unpacked = unpack_sdist(sdist, tmp_path / "unpacked")
    assert unpacked.name == "ext-1.0" and (unpacked / "csrc" / "ext.cu").is_file()
    tracked = ["setup.py", "csrc/ext.h", "csrc/ext.cu", "README.md", "tests/test_x.py"]
    assert missing_from_sdist(project, unpacked, tracked) == ["csrc/ext.h", "README.md"]


def test_an_sdist_member_leaving_the_archive_is_refused(tmp_path: Path) -> None:
    sdist = _sdist(tmp_path / "evil-1.0.tar.gz", {"evil-1.0/../../outside.txt": "x"})
    with pytest.raises(BuildError, match="leaves the archive"):
        unpack_sdist(sdist, tmp_path / "unpacked")
    assert not (tmp_path / "outside.txt").exists()


MATRIX = {"axes": {"python": ["3.11"], "torch": ["2.14.1"]}}


def test_build_requires_render_per_cell(tmp_path: Path) -> None:
    spec = parse_spec(
        {"name": "x", "matrix": MATRIX, "build": {"requires": ["torch=={torch}"], "isolation": False}}, tmp_path
    )
    from wheelflow.builds.buildenv import build_setup
    from wheelflow.core.installerconfig import InstallerConfig

    cell = spec.matrix.cells[0]
    setup = build_setup(
        spec.build_requires, spec.build_isolation, cell, compiler_cache=True, installer=InstallerConfig()
    )
    assert (setup.requires, setup.isolation, setup.pins, setup.prepared) == (
        ("torch==2.14.1",),
        False,
        cell.build_requires,
        True,
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        ({"requires": ["torch=={tourch}"]}, "tool.wheelflow.build.requires"),
        ({"sdist-cell": "py3.12"}, "tool.wheelflow.build.sdist-cell: 'py3.12' is not a cell of the matrix"),
        ({"isolation": "no"}, "tool.wheelflow.build.isolation"),
    ],
)
def test_bad_build_keys_are_refused_naming_the_key(tmp_path: Path, build: dict, message: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec({"name": "x", "matrix": MATRIX, "build": build}, tmp_path)
    assert message in str(raised.value)


def test_missing_files_are_named_headers_then_kernels_then_python_then_the_rest(tmp_path: Path) -> None:
    project = tmp_path / "project"
    tracked = ["MANIFEST.in", "a_helpers.py", "csrc/attn.cu", "csrc/zz.cuh", "csrc/ops.cpp", "include/api.h"]
    for name in tracked:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x")
    unpacked = unpack_sdist(_sdist(tmp_path / "ext-1.0.tar.gz", {"ext-1.0/setup.py": "x"}), tmp_path / "unpacked")
    assert missing_from_sdist(project, unpacked, tracked) == [
        "csrc/zz.cuh",
        "include/api.h",
        "csrc/attn.cu",
        "csrc/ops.cpp",
        "a_helpers.py",
        "MANIFEST.in",
    ]
