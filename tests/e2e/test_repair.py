"""The repair step on real wheels: hello-cuda compiled with nvcc, and a C extension that links the
CUDA runtime dynamically; real auditwheel and patchelf. Nothing here needs a GPU: repair reads ELF files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from wheelcraft import make_wheel

from wheelflow.builds.repair import repair_wheel
from wheelflow.checks.audits import audit_files, audit_target
from wheelflow.config.repairoptions import RepairOptions
from wheelflow.config.spec import IndexTarget
from wheelflow.core.distributions import describe, sha256_of
from wheelflow.core.errors import RepairError
from wheelflow.index.indexes import limits_for

REPO = Path(__file__).resolve().parents[2]
CUDA = Path("/usr/local/cuda")
CUDA_LIB = next(
    (p for p in (CUDA / "lib64", CUDA / "targets" / "x86_64-linux" / "lib") if (p / "libcudart.so").exists()), None
)
needs_nvcc = pytest.mark.skipif(
    not (CUDA / "bin" / "nvcc").exists() or CUDA_LIB is None,
    reason="needs the CUDA toolkit at /usr/local/cuda (nvcc and libcudart.so)",
)
PYPI = limits_for(IndexTarget(name="pypi", index="pypi"))


def build_wheel(project: Path, out: Path, env: dict[str, str] | None = None) -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(project)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return next(out.glob("*.whl"))


def needed(wheel: Path, member_suffix: str = ".so") -> list[str]:
    """DT_NEEDED of the wheel's extension module, read with pyelftools."""
    import io

    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(member_suffix) and ".libs/" not in n)
        elf = ELFFile(io.BytesIO(zf.read(name)))
        return [
            tag.needed
            for section in elf.iter_sections()
            if isinstance(section, DynamicSection)
            for tag in section.iter_tags()
            if tag.entry.d_tag == "DT_NEEDED"
        ]


@pytest.fixture(scope="module")
def hello_cuda_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hello-cuda")
    # A plain version (no +local label), as for the public index; one architecture keeps nvcc quick.
    env = {"HELLO_CUDA_ARCHS": "90", "WHEELFLOW_LOCAL_VERSION": ""}
    return build_wheel(REPO / "examples" / "hello-cuda", out, env)


@needs_nvcc
def test_hello_cuda_gets_a_manylinux_tag_and_passes_the_public_index_audits(
    hello_cuda_wheel: Path, tmp_path: Path
) -> None:
    built = hello_cuda_wheel
    assert built.name.endswith("-linux_x86_64.whl")
    refused = audit_target([describe(built)], PYPI, "pypi")
    assert [f.rule for f in refused] == ["platform-tag"]  # the audit tells the two apart

    result = repair_wheel(built, tmp_path / "repaired")
    assert result.repaired and result.platform.startswith("manylinux_") and result.platform.endswith("_x86_64")
    assert result.path.name == built.name.replace("linux_x86_64", result.platform)
    assert result.original_filename == built.name and result.original_sha256 == sha256_of(built)
    assert audit_target([describe(result.path)], PYPI, "pypi") == []
    assert audit_files([result.path]) == []  # RECORD rewritten consistently by the repair
    # nvcc linked cudart statically: the module needs no CUDA library, and nothing was vendored.
    assert not [n for n in needed(result.path) if n.startswith("libcuda")]
    assert not [n for n in zipfile.ZipFile(result.path).namelist() if ".libs/" in n]


@pytest.fixture(scope="module")
def shared_cudart_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A C extension linked against libcudart.so (the runtime as torch's extensions link it)."""
    project = tmp_path_factory.mktemp("uses-cudart")
    (project / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "uses-cudart"
        version = "1.0.0"
    """)
    )
    (project / "setup.py").write_text(
        textwrap.dedent(f"""
        from setuptools import Extension, setup
        setup(ext_modules=[Extension("uses_cudart", sources=["uses_cudart.c"], include_dirs=["{CUDA}/include"],
                                     library_dirs=["{CUDA_LIB}"], libraries=["cudart"])])
    """)
    )
    (project / "uses_cudart.c").write_text(
        textwrap.dedent("""
        #include <Python.h>
        #include <cuda_runtime_api.h>
        static PyObject *count(PyObject *self, PyObject *args) {
            int n = 0;
            return PyLong_FromLong(cudaGetDeviceCount(&n) == cudaSuccess ? n : -1);
        }
        static PyMethodDef methods[] = {{"count", count, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
        static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "uses_cudart", NULL, -1, methods};
        PyMODINIT_FUNC PyInit_uses_cudart(void) { return PyModule_Create(&module); }
    """)
    )
    return build_wheel(project, tmp_path_factory.mktemp("uses-cudart-out"))


@needs_nvcc
def test_the_cuda_runtime_is_never_vendored(
    shared_cudart_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert any(n.startswith("libcudart.so") for n in needed(shared_cudart_wheel))
    # auditwheel can find libcudart here, so only the exclusion keeps it out of the wheel.
    monkeypatch.setenv("LD_LIBRARY_PATH", str(CUDA_LIB))

    result = repair_wheel(shared_cudart_wheel, tmp_path / "default")
    assert result.platform.startswith("manylinux") and "linux_x86_64" not in result.platform.split(".")
    assert not [n for n in zipfile.ZipFile(result.path).namelist() if "libcudart" in n]
    assert any(n.startswith("libcudart.so") for n in needed(result.path))  # still loaded from the user's system

    # The same repair without the exclusions, through a custom command: libcudart is grafted in.
    auditwheel = shlex_path(Path(sys.executable).with_name("auditwheel"))
    plain = repair_wheel(
        shared_cudart_wheel,
        tmp_path / "custom",
        RepairOptions(command=f"{auditwheel} repair -w {{dest_dir}} {{wheel}}"),
    )
    assert [n for n in zipfile.ZipFile(plain.path).namelist() if "libcudart" in n]


def shlex_path(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def test_a_pure_wheel_passes_through_and_bad_commands_are_one_line_errors(tmp_path: Path) -> None:
    pure = make_wheel(tmp_path)
    kept = repair_wheel(pure, tmp_path / "out")
    assert (kept.path, kept.repaired, kept.platform) == (pure, False, "any")

    binary = make_wheel(tmp_path, tag="cp311-cp311-linux_x86_64")
    with pytest.raises(RepairError, match=r"repair.command 'fix-it \{wheel\}' must use \{dest_dir\}"):
        repair_wheel(binary, tmp_path / "out", RepairOptions(command="fix-it {wheel}"))
    with pytest.raises(RepairError, match=r"failed \(0 wheels in \{dest_dir\}, expected 1\)"):
        repair_wheel(binary, tmp_path / "out", RepairOptions(command="true {wheel} {dest_dir}"))
    with pytest.raises(RepairError, match=r"failed \(exit 3\): broken; fix:"):
        repair_wheel(binary, tmp_path / "out", RepairOptions(command="echo broken >&2; exit 3 # {wheel} {dest_dir}"))
    copied = repair_wheel(binary, tmp_path / "out", RepairOptions(command="cp {wheel} {dest_dir}/"))
    assert (
        copied.repaired and copied.path.parent == tmp_path / "out" and copied.path.read_bytes() == binary.read_bytes()
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [binary.name]  # no temporary directories left
