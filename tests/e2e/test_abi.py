"""The ABI gate on real binaries: nvcc-compiled device code, g++-built libraries with real sonames.

Everything is compiled here once per session (nvcc ~10 s, g++ well under a second); nothing is
mocked. The CUDA driver is the one thing this machine lacks: tests that need it say so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from wheelcraft import make_wheel

from wheelflow.checks.abi import abi_findings, compat_grid, gpu_arch_rows, install_runtime, library_dirs
from wheelflow.checks.devicecode import device_code, read_fatbin
from wheelflow.config.gpuarch import declared_archs, parse_archs
from wheelflow.core.errors import CheckError, RuntimeInstallError, SpecError

NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="needs the CUDA toolkit's nvcc (no GPU needed)")
TAG = "cp311-cp311-linux_x86_64"

KERNEL = r"""
__global__ void saxpy(int n, float a, const float *x, float *y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}
extern "C" void launch(int n, float a, const float *x, float *y) { saxpy<<<(n + 255) / 256, 256>>>(n, a, x, y); }
"""
LIB_V1 = "namespace c10 { int foo(int x) { return x + 1; } int bar() { return 2; } }\n"
LIB_V2 = "namespace c10 { int bar() { return 2; } }\n"  # the same soname, foo(int) gone: a newer torch
# Like a real extension it calls the interpreter, which it does not link: python provides PyLong_*.
EXTENSION = r"""
#include <string>
namespace c10 { int foo(int x); int bar(); }
extern "C" void *PyLong_FromLong(long);
extern "C" void *PyInit__ext(void) { std::string s(3, 'x'); return PyLong_FromLong(c10::foo(c10::bar()) + s.size()); }
"""


def _gxx(out: Path, source: str, *args: str) -> Path:
    src = out.with_suffix(".cpp")
    src.write_text(source)
    subprocess.run(["g++", "-shared", "-fPIC", "-o", str(out), str(src), *args], check=True)
    return out


@pytest.fixture(scope="session")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The kernel compiled for sm_80 SASS only, for sm_80 SASS plus compute_80 PTX, and with two
    -gencode flags (sm_80 and sm_90 SASS), as a setup.py with a hard-coded list does."""
    if NVCC is None:
        pytest.skip("needs the CUDA toolkit's nvcc (no GPU needed)")
    root = tmp_path_factory.mktemp("kernels")
    (root / "saxpy.cu").write_text(KERNEL)
    built = {}
    gencodes = {
        "sm80": ["-gencode=arch=compute_80,code=sm_80"],
        "sm80_ptx": ["-gencode=arch=compute_80,code=[sm_80,compute_80]"],
        "sm80_sm90": ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"],
    }
    for name, flags in gencodes.items():
        built[name] = root / f"{name}.so"
        subprocess.run(
            [NVCC, "-shared", "-Xcompiler", "-fPIC", *flags, "-o", str(built[name]), str(root / "saxpy.cu")],
            check=True,
        )
    return built


@pytest.fixture(scope="session")
def c10(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """libc10.so in two versions (v1 exports c10::foo(int), v2 does not) and an extension linked against v1."""
    root = tmp_path_factory.mktemp("c10")
    for version, source in (("v1", LIB_V1), ("v2", LIB_V2)):
        (root / version).mkdir()
        _gxx(root / version / "libc10.so", source, "-Wl,-soname,libc10.so")
    _gxx(root / "_ext.so", EXTENSION, f"-L{root / 'v1'}", "-lc10")
    return {"v1": root / "v1", "v2": root / "v2", "ext": root / "_ext.so"}


def _wheel(directory: Path, **files: Path) -> Path:
    """A platform wheel holding ``files`` (member name -> compiled file) under the package dir."""
    return make_wheel(
        directory,
        "gpu_pkg",
        "1.0.0",
        TAG,
        extra_files={f"gpu_pkg/{name}": path.read_bytes() for name, path in files.items()},
    )


# ---- declared architectures ----


def test_declarations_read_both_spellings() -> None:
    torch_style = parse_archs("8.0;9.0+PTX")
    assert torch_style.sass == {"sm_80", "sm_90"} and torch_style.ptx == {"compute_90"}
    listed = parse_archs(["sm_80", "sm_90a", "compute_90"])
    assert listed.sass == {"sm_80", "sm_90a"} and listed.ptx == {"compute_90"}
    assert declared_archs(None, {"TORCH_CUDA_ARCH_LIST": "8.0 8.6"}).sass == {"sm_80", "sm_86"}
    assert declared_archs(["sm_90"], {"TORCH_CUDA_ARCH_LIST": "8.0"}).sass == {"sm_90"}  # the spec key wins
    assert declared_archs(None, {}) is None


def test_a_bad_declaration_names_the_key_and_the_value() -> None:
    with pytest.raises(SpecError, match=r"matrix\.gpu-archs: 'Hopper' is not a GPU architecture; fix: write sm_80"):
        parse_archs(["sm_80", "Hopper"], key="tool.wheelflow.matrix.gpu-archs")
    with pytest.raises(SpecError, match="env.TORCH_CUDA_ARCH_LIST"):
        declared_archs(None, {"TORCH_CUDA_ARCH_LIST": "9.x"})


# ---- device code ----


@needs_nvcc
def test_the_fatbin_reader_finds_what_nvcc_compiled(kernels: dict[str, Path], c10: dict[str, Path]) -> None:
    assert read_fatbin(kernels["sm80"]).sass == {"sm_80"} and not read_fatbin(kernels["sm80"]).ptx
    assert read_fatbin(kernels["sm80_ptx"]).ptx == {"compute_80"}
    assert not read_fatbin(c10["ext"])  # host code only


@needs_nvcc
def test_the_fatbin_reader_agrees_with_cuobjdump(kernels: dict[str, Path], tmp_path: Path) -> None:
    # cuobjdump comes from NVIDIA's own wheel (a test dependency): the reference the reader must match.
    cuobjdump = Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cu13" / "bin" / "cuobjdump"
    if not cuobjdump.exists():
        pytest.skip("nvidia-cuda-cuobjdump is not installed (Linux x86_64 test dependency)")
    (tmp_path / "k.cu").write_text(KERNEL)
    several = tmp_path / "several.so"  # arch-specific SASS, two SMs, PTX for a third
    subprocess.run(
        [
            NVCC,
            "-shared",
            "-Xcompiler",
            "-fPIC",
            "-gencode=arch=compute_90a,code=sm_90a",
            "-gencode=arch=compute_75,code=sm_75",
            "-gencode=arch=compute_120,code=compute_120",
            "-o",
            str(several),
            str(tmp_path / "k.cu"),
        ],
        check=True,
    )
    for path in (*kernels.values(), several):
        assert read_fatbin(path) == device_code(path, cuobjdump), path.name
    assert read_fatbin(several).sass == {"sm_90a", "sm_75"} and read_fatbin(several).ptx == {"compute_120"}


@needs_nvcc
def test_a_missing_architecture_is_refused_naming_file_and_arch(kernels: dict[str, Path], tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, **{"_kernels.so": kernels["sm80"]})
    findings = abi_findings([wheel], parse_archs(["sm_80", "sm_90"]))
    assert [(f.filename, f.rule) for f in findings] == [(wheel.name, "gpu-arch")]
    assert "gpu_pkg/_kernels.so has no device code for sm_90 (it has sm_80)" in findings[0].message
    assert abi_findings([wheel], parse_archs(["sm_80"])) == []


@needs_nvcc
def test_ptx_is_reported_not_refused(kernels: dict[str, Path], tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, **{"_kernels.so": kernels["sm80_ptx"]})
    assert abi_findings([wheel], parse_archs("8.0+PTX")) == []
    assert gpu_arch_rows([wheel]) == [
        {
            "wheel": wheel.name,
            "file": "gpu_pkg/_kernels.so",
            "sass": "sm_80",
            "ptx": "compute_80 (JIT-compiled on newer GPUs)",
        }
    ]
    (tmp_path / "sass").mkdir()
    sass_only = _wheel(tmp_path / "sass", **{"_kernels.so": kernels["sm80"]})
    [finding] = abi_findings([sass_only], parse_archs("8.0+PTX"))
    assert "no device code for compute_80" in finding.message


@needs_nvcc
def test_sass_for_an_undeclared_architecture_warns_or_with_exact_is_refused(
    kernels: dict[str, Path], tmp_path: Path
) -> None:
    wheel = _wheel(tmp_path, **{"_kernels.so": kernels["sm80_sm90"]})
    [warned] = abi_findings([wheel], parse_archs("9.0"))
    assert warned.warning and warned.rule == "gpu-arch"
    assert "gpu_pkg/_kernels.so carries SASS for sm_80, which the cell does not declare (declared: sm_90)" in (
        warned.message
    )
    assert "a hard-coded -gencode in setup.py overrides TORCH_CUDA_ARCH_LIST" in warned.message
    assert "about 2× the device-code compile time" in warned.message
    [refused] = abi_findings([wheel], parse_archs("9.0"), arch_policy="exact")
    assert not refused.warning and 'gpu-archs-policy = "at-least"' in refused.message
    assert abi_findings([wheel], parse_archs("8.0;9.0"), arch_policy="exact") == []  # both declared


def test_extensions_without_device_code_are_refused_when_archs_are_declared(
    c10: dict[str, Path], tmp_path: Path
) -> None:
    wheel = _wheel(tmp_path, **{"_ext.so": c10["ext"]})
    [finding] = abi_findings([wheel], parse_archs(["sm_80"]))
    assert finding.rule == "gpu-arch" and "gpu_pkg/_ext.so contain no GPU device code" in finding.message
    assert abi_findings([wheel], None) == []  # nothing declared: nothing checked
    pure = make_wheel(tmp_path, "pure_pkg")
    assert abi_findings([pure], parse_archs(["sm_80"])) == []  # no extensions at all: nothing to run on a GPU


def test_a_file_that_is_no_zip_is_a_finding_not_a_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "gpu_pkg-1.0.0-cp311-cp311-linux_x86_64.whl"
    broken.write_bytes(b"not a zip")
    [finding] = abi_findings([broken], parse_archs(["sm_80"]), {"torch-v1": []})
    assert (finding.rule, finding.message) == (
        "archive",
        "cannot be read as a wheel (File is not a zip file); fix: rebuild it",
    )
    with pytest.raises(CheckError, match=r"^gpu_pkg-1\.0\.0-cp311-cp311-linux_x86_64\.whl: cannot be read as a wheel"):
        compat_grid(broken, {"torch-v1": []})


# ---- symbols ----


def test_symbols_resolve_against_the_runtime_they_were_built_for(c10: dict[str, Path], tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, **{"_ext.so": c10["ext"]})
    assert abi_findings([wheel], runtimes={"torch-v1": [c10["v1"]]}) == []
    [finding] = abi_findings([wheel], runtimes={"torch-v2": [c10["v2"]]})
    assert finding.rule == "abi-symbol"
    assert (
        "gpu_pkg/_ext.so would not load against torch-v2: undefined symbol c10::foo(int) (_ZN3c103fooEi)"
        in finding.message
    )
    assert "bar" not in finding.message  # v2 still exports c10::bar()


def test_a_library_found_nowhere_is_refused(c10: dict[str, Path], tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, **{"_ext.so": c10["ext"]})
    [finding] = abi_findings([wheel], runtimes={"no-torch": []})
    assert finding.rule == "abi-library" and "needs libc10.so" in finding.message


def test_libraries_shipped_in_the_wheel_are_found_through_origin(c10: dict[str, Path], tmp_path: Path) -> None:
    # auditwheel's layout: the library in gpu_pkg.libs/, the extension's RUNPATH $ORIGIN/../gpu_pkg.libs;
    # the extension under .data/platlib/, which installs beside gpu_pkg.libs/.
    ext = _gxx(tmp_path / "_ext.so", EXTENSION, f"-L{c10['v1']}", "-lc10", "-Wl,-rpath,$ORIGIN/../gpu_pkg.libs")
    wheel = make_wheel(
        tmp_path,
        "gpu_pkg",
        "1.0.0",
        TAG,
        extra_files={
            "gpu_pkg-1.0.0.data/platlib/gpu_pkg/_ext.so": ext.read_bytes(),
            "gpu_pkg.libs/libc10.so": (c10["v1"] / "libc10.so").read_bytes(),
        },
    )
    assert abi_findings([wheel], runtimes={"no-torch": []}) == []


def test_versioned_references_need_their_version(tmp_path: Path) -> None:
    # libfoo 1 exports foo@@FOO_1; libfoo 2 (same soname) only foo@@FOO_2: the old reference must fail.
    for version in ("1", "2"):
        (tmp_path / version).mkdir()
        script = tmp_path / version / "foo.map"
        script.write_text(f"FOO_{version} {{ global: foo; local: *; }};\n")
        _gxx(
            tmp_path / version / "libfoo.so.1",
            'extern "C" int foo() { return 1; }\n',
            "-Wl,-soname,libfoo.so.1",
            f"-Wl,--version-script={script}",
        )
        (tmp_path / version / "libfoo.so").symlink_to("libfoo.so.1")
    ext = _gxx(
        tmp_path / "_ext.so",
        'extern "C" int foo(); extern "C" int PyInit__ext() { return foo(); }\n',
        f"-L{tmp_path / '1'}",
        "-lfoo",
    )
    wheel = _wheel(tmp_path, **{"_ext.so": ext})
    assert abi_findings([wheel], runtimes={"foo-1": [tmp_path / "1"]}) == []
    [finding] = abi_findings([wheel], runtimes={"foo-2": [tmp_path / "2"]})
    assert "undefined symbol foo" in finding.message


def test_the_cuda_driver_is_assumed_where_no_gpu_is(tmp_path: Path) -> None:
    # libcuda.so.1 exists only on GPU machines: a stub stands in at link time, as in CUDA's own stubs/.
    (tmp_path / "stubs").mkdir()
    _gxx(
        tmp_path / "stubs" / "libcuda.so",
        'extern "C" int cuInit(unsigned f) { return f; }\n',
        "-Wl,-soname,libcuda.so.1",
    )
    ext = _gxx(
        tmp_path / "_ext.so",
        'extern "C" int cuInit(unsigned); extern "C" int PyInit__ext() { return cuInit(0); }\n',
        f"-L{tmp_path / 'stubs'}",
        "-lcuda",
    )
    assert abi_findings([_wheel(tmp_path, **{"_ext.so": ext})], runtimes={"system": []}) == []


def test_the_grid_says_which_runtime_the_wheel_loads_against(c10: dict[str, Path], tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, **{"_ext.so": c10["ext"]})
    rows = compat_grid(wheel, {"torch-v1": [c10["v1"]], "torch-v2": [c10["v2"]]})
    assert [(r["runtime"], r["loads"]) for r in rows] == [("torch-v1", "yes"), ("torch-v2", "no")]
    assert rows[0]["why"] == "" and "c10::foo(int)" in rows[1]["why"]


# ---- runtimes ----


def test_a_runtime_is_installed_with_real_pip(c10: dict[str, Path], tmp_path: Path) -> None:
    # A stand-in for a torch wheel: its libc10.so under fake_torch/lib/, installed by pip from a directory.
    dist = tmp_path / "dist"
    dist.mkdir()
    make_wheel(
        dist,
        "fake_torch",
        "2.0.0",
        TAG,
        extra_files={"fake_torch/lib/libc10.so": (c10["v1"] / "libc10.so").read_bytes()},
    )
    pip_args = ["--no-index", "--find-links", str(dist)]
    dirs = install_runtime(["fake_torch==2.0.0"], tmp_path / "rt", pip_args)
    assert dirs == [tmp_path / "rt" / "fake_torch" / "lib"] == library_dirs(tmp_path / "rt")
    wheel = _wheel(tmp_path, **{"_ext.so": c10["ext"]})
    assert abi_findings([wheel], runtimes={"fake-torch-2.0.0": dirs}) == []
    shutil.rmtree(dist)  # installed once: the same pins again are served from the runtime's directory
    assert install_runtime(["fake_torch==2.0.0"], tmp_path / "rt", pip_args) == dirs
    with pytest.raises(RuntimeInstallError, match=r"runtime fake_torch==9\.9: .*fix: check the pins"):
        install_runtime(["fake_torch==9.9"], tmp_path / "rt", pip_args)
    assert not (tmp_path / "rt" / "fake_torch").exists()  # the other runtime's files are gone


def _torch_like(root: Path, c10: dict[str, Path]) -> tuple[Path, Path]:
    """torch's layout in miniature: torch/lib/libc10.so with RPATH $ORIGIN/../../nvidia/cu13/lib, where
    the CUDA runtime wheel puts libcudart.so.13 (a stand-in); an extension that NEEDs both, no RUNPATH."""
    root.mkdir(parents=True)
    cudart = _gxx(
        root / "libcudart.so.13", 'extern "C" int cudaFree(void *p) { return p != 0; }\n', "-Wl,-soname,libcudart.so.13"
    )
    (root / "torch" / "lib").mkdir(parents=True)
    (root / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    _gxx(
        root / "torch" / "lib" / "libc10.so",
        LIB_V1,
        "-Wl,-soname,libc10.so",
        "-Wl,-rpath,$ORIGIN/../../nvidia/cu13/lib",
    )
    shutil.move(cudart, root / "nvidia" / "cu13" / "lib" / "libcudart.so.13")
    ext = _gxx(
        root / "_ext.so",
        EXTENSION.replace("PyInit__ext(void) {", "PyInit__ext(void) { cudaFree(0);").replace(
            'extern "C" void *PyLong', 'extern "C" int cudaFree(void *); extern "C" void *PyLong'
        ),
        f"-L{root / 'torch' / 'lib'}",
        f"-L{root / 'nvidia' / 'cu13' / 'lib'}",
        "-lc10",
        "-l:libcudart.so.13",
    )
    return root / "torch" / "lib", ext


def test_a_runtime_reaches_the_cuda_libraries_its_torch_finds_through_rpath(
    c10: dict[str, Path], tmp_path: Path
) -> None:
    torch_lib, ext = _torch_like(tmp_path / "site-packages", c10)
    wheel = _wheel(tmp_path, **{"_ext.so": ext})
    assert abi_findings([wheel], runtimes={"torch": [torch_lib]}) == []  # torch/lib alone, as --runtime gives it
    (torch_lib.parents[1] / "nvidia" / "cu13" / "lib" / "libcudart.so.13").unlink()  # a runtime without the CUDA wheels
    [finding] = abi_findings([wheel], runtimes={"torch": [torch_lib]})
    assert finding.rule == "abi-library" and "needs libcudart.so.13, found neither" in finding.message
    assert "fix: add the package that ships it to torch's requirements in abi.runtimes" in finding.message
    assert "build-requires" not in finding.message


def test_a_runtime_is_installed_with_the_cuda_library_wheels_its_torch_requires(
    c10: dict[str, Path], tmp_path: Path
) -> None:
    # fake_torch requires fake_cuda_runtime, which ships nvidia/cu13/lib/libcudart.so.13, as torch
    # requires cuda-toolkit[cudart] -> nvidia-cuda-runtime.
    torch_lib, ext = _torch_like(tmp_path / "layout", c10)
    dist = tmp_path / "dist"
    dist.mkdir()
    make_wheel(
        dist,
        "fake_torch",
        "2.0.0",
        TAG,
        requires=["fake_cuda_runtime==13.0"],
        extra_files={"fake_torch/lib/libc10.so": (torch_lib / "libc10.so").read_bytes()},
    )
    make_wheel(
        dist,
        "fake_cuda_runtime",
        "13.0",
        TAG,
        extra_files={
            "nvidia/cu13/lib/libcudart.so.13": (torch_lib.parents[1] / "nvidia/cu13/lib/libcudart.so.13").read_bytes()
        },
    )
    dirs = install_runtime(["fake_torch==2.0.0"], tmp_path / "rt", ["--no-index", "--find-links", str(dist)])
    assert tmp_path / "rt" / "nvidia" / "cu13" / "lib" in dirs
    assert abi_findings([_wheel(tmp_path, **{"_ext.so": ext})], runtimes={"fake-torch": dirs}) == []


# ---- the Prefect task ----


def test_the_check_task_refuses_by_name_and_leaves_its_tables(
    prefect_api: str, c10: dict[str, Path], tmp_path: Path
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from wheelflow.core.distributions import describe
    from wheelflow.tasks.check import check_abi

    dist = describe(_wheel(tmp_path, **{"_ext.so": c10["ext"]}))
    grid = {"torch-v1": [c10["v1"]], "torch-v2": [c10["v2"]]}

    @flow
    def gate(runtime: str) -> None:
        check_abi(dists=[dist], label="py3.11-torch1", archs=None, runtime={runtime: grid[runtime]}, grid=grid)

    passed = gate("torch-v1", return_state=True)
    assert passed.is_completed()
    with pytest.raises(CheckError, match=r"py3\.11-torch1: refused by the ABI gate: .*c10::foo\(int\)"):
        gate("torch-v2")
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[passed.state_details.flow_run_id]))
        )
    [grid_table] = [a for a in artifacts if a.key == "abi-grid-py3-11-torch1"]
    rows = json.loads(grid_table.data) if isinstance(grid_table.data, str) else grid_table.data
    assert [(r["runtime"], r["loads"]) for r in rows] == [("torch-v1", "yes"), ("torch-v2", "no")]


# ---- the torch users get (the install check's environment) ----


def _installed(venv: Path, c10_dir: Path, ext: Path) -> Path:
    """A venv as the install check leaves it: gpu_pkg installed (with its RECORD) beside a torch whose
    lib/ holds ``c10_dir``'s libc10.so."""
    site = venv / "lib" / "python3.11" / "site-packages"
    (site / "gpu_pkg").mkdir(parents=True)
    (site / "torch" / "lib").mkdir(parents=True)
    shutil.copy(ext, site / "gpu_pkg" / "_ext.so")
    shutil.copy(c10_dir / "libc10.so", site / "torch" / "lib" / "libc10.so")
    (site / "gpu_pkg" / "__init__.py").write_text("")
    (site / "gpu_pkg-1.0.0.dist-info").mkdir()
    (site / "gpu_pkg-1.0.0.dist-info" / "RECORD").write_text(
        "gpu_pkg/__init__.py,,\ngpu_pkg/_ext.so,,\ngpu_pkg-1.0.0.dist-info/RECORD,,\n"
    )
    return venv


def test_the_wheel_as_installed_is_checked_against_the_torch_users_get(tmp_path: Path, c10: dict[str, Path]) -> None:
    from wheelflow.proof.verification import users_torch_problem

    wheel = "gpu_pkg-1.0.0-cp311-cp311-linux_x86_64.whl"
    same_abi = _installed(tmp_path / "v1", c10["v1"], c10["ext"])
    assert users_torch_problem(same_abi, "gpu-pkg", wheel, "2.14.0", "2.14.1+cu130 (CUDA 13.0)") is None
    # Users got a torch whose libc10.so dropped c10::foo(int): what they would meet at import.
    other_abi = _installed(tmp_path / "v2", c10["v2"], c10["ext"])
    said = users_torch_problem(other_abi, "gpu-pkg", wheel, "2.14.0", "2.15.0+cu132 (CUDA 13.2)")
    assert said == (
        f"{wheel} would not load with the torch users get (torch 2.15.0+cu132 (CUDA 13.2); built for 2.14.0): "
        "gpu_pkg/_ext.so: undefined symbol c10::foo(int) (_ZN3c103fooEi); fix: pin torch==2.14.0 in the "
        "wheel's metadata, or publish a cell for torch 2.15.0"
    )
