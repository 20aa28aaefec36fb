"""The ABI gate on examples/torch-ext's real wheel, built against torch 2.14.1 (CUDA 13.0) from the
wheel cache (tests/torchcache.py: downloaded once per machine when missing) and checked against a
torch 2.14.1 runtime installed the way the gate installs it, dependencies included.

The extension's .so NEEDs libcudart.so.13, which only the nvidia-cuda-runtime wheel has (reached
through torch's RPATH): a runtime without torch's dependencies would refuse this correct wheel.
The wheel is compiled once per module (about a minute of nvcc and g++ on 2 cores); the hard-coded
-gencode variant recompiles only the two .cu files in the same tree (ninja sees their flags change).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torchcache
from conftest import REPO, run_cli

from wheelflow.checks.abi import abi_findings, install_runtime
from wheelflow.checks.devicecode import read_fatbin
from wheelflow.checks.elfsymbols import read_shared_object
from wheelflow.config.gpuarch import parse_archs

CUDA_HOME = Path("/usr/local/cuda")
pytestmark = pytest.mark.skipif(
    not (CUDA_HOME / "bin" / "nvcc").exists(), reason="needs the CUDA toolkit at /usr/local/cuda (no GPU needed)"
)
SO = f"torch_ext/_C{sysconfig.get_config_var('EXT_SUFFIX')}"


def _cache() -> Path:
    try:
        return torchcache.torch_wheels()
    except RuntimeError as exc:
        pytest.fail(f"{exc} (the tests need torch {torchcache.TORCH} and its dependency wheels)")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """torch-ext's wheel for TORCH_CUDA_ARCH_LIST=9.0, and again with its hard-coded -gencode list."""
    _cache()
    root = tmp_path_factory.mktemp("torch-ext")
    python = torchcache.torch_env(root / "venv")
    source = root / "src"
    shutil.copytree(REPO / "examples" / "torch-ext", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    built = {}
    for name, hardcoded in (("declared", "0"), ("hardcoded", "1")):
        out = root / name
        env = {
            **os.environ,
            "TORCH_CUDA_ARCH_LIST": "9.0",
            "CUDA_HOME": str(CUDA_HOME),
            "MAX_JOBS": "1",
            "TORCH_EXT_HARDCODED_GENCODE": hardcoded,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        done = subprocess.run(
            [str(python), "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index", str(source)]
            + ["-w", str(out)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        [built[name]] = out.glob("torch_ext-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch==2.14.1 installed by the ABI gate's own installer, from the wheel cache only: its folder."""
    dest = tmp_path_factory.mktemp("abi-runtime") / "torch-2.14.1"
    install_runtime([f"torch=={torchcache.TORCH}"], dest, torchcache.install_args(_cache()))
    return dest


@pytest.fixture
def runtime(installed: Path) -> list[Path]:
    """The runtime's library folders (reused: the same pins are not installed twice)."""
    return install_runtime([f"torch=={torchcache.TORCH}"], installed)


def test_the_wheel_passes_the_gate_against_its_torch_runtime(
    wheels: dict[str, Path], installed: Path, runtime: list[Path]
) -> None:
    assert abi_findings([wheels["declared"]], parse_archs("9.0"), {"torch-2.14.1": runtime}, arch_policy="exact") == []
    # What made the gate refuse it before: libcudart.so.13 is in the CUDA runtime wheel, not in torch.
    assert installed / "nvidia" / "cu13" / "lib" in runtime
    assert (installed / "nvidia" / "cu13" / "lib" / "libcudart.so.13").is_file()
    assert not (installed / "torch" / "lib" / "libcudart.so.13").exists()
    # torch/lib alone (as `wheelflow check --runtime` is given it) reaches nvidia/cu13/lib through torch's RPATH.
    assert abi_findings([wheels["declared"]], parse_archs("9.0"), {"torch-lib": [installed / "torch" / "lib"]}) == []


def test_the_extension_needs_libcudart_from_the_cuda_runtime_wheel(wheels: dict[str, Path], tmp_path: Path) -> None:
    shutil.unpack_archive(wheels["declared"], tmp_path, "zip")
    needed = read_shared_object(tmp_path / SO).needed
    assert "libcudart.so.13" in needed and "libc10.so" in needed
    assert read_fatbin(tmp_path / SO).sass == {"sm_90"}


def test_a_hard_coded_gencode_list_warns_and_exact_refuses(wheels: dict[str, Path], runtime: list[Path]) -> None:
    [warned] = abi_findings([wheels["hardcoded"]], parse_archs("9.0"), {"torch-2.14.1": runtime})
    assert warned.warning and warned.rule == "gpu-arch"
    assert f"{SO} carries SASS for sm_75, sm_80, sm_86, sm_89, sm_100, sm_120, which the cell does not declare" in (
        warned.message
    )
    assert "likely cause: a hard-coded -gencode in setup.py overrides TORCH_CUDA_ARCH_LIST" in warned.message
    assert "8 device-code targets compiled for 1 declared, about 8× the device-code compile time" in warned.message
    [refused] = abi_findings([wheels["hardcoded"]], parse_archs("9.0"), {"torch-2.14.1": runtime}, arch_policy="exact")
    assert not refused.warning and refused.message.startswith(f"{SO} carries SASS for sm_75")
    # The same through `wheelflow check`, the way a person audits a wheel.
    said = run_cli("check", str(wheels["hardcoded"]), "--gpu-archs", "9.0", "--gpu-archs-policy", "exact", "--json")
    assert said.returncode == 1
    [finding] = json.loads(said.stdout)["findings"]
    assert finding["severity"] == "error" and "hard-coded -gencode" in finding["message"]
