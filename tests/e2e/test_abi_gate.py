"""The ABI gate wired into releases, backfills and `wheelflow check`, on real binaries: hello-cuda
compiled by nvcc through the local builder (no GPU: device code is read from the files), libraries
built by g++, pypiserver behind a proxy that counts uploads, the Prefect server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, git, run_cli
from faultproxy import FaultProxy
from test_abi import EXTENSION, LIB_V1, LIB_V2, TAG, _gxx, c10, kernels  # noqa: F401 (session fixtures)
from wheelcraft import make_wheel

from wheelflow.config.spec import parse_spec
from wheelflow.core.errors import SpecError

NVCC = Path("/usr/local/cuda/bin/nvcc")
needs_nvcc = pytest.mark.skipif(not NVCC.exists(), reason="needs the CUDA toolkit's nvcc at /usr/local/cuda (no GPU)")


def hello_history(root: Path, index_url: str, archs: list[str], gpu_archs: str) -> Path:
    """hello-cuda in a git repository of its own, tagged hello-cuda-v0.1.0, its matrix replaced."""
    shutil.copytree(REPO / "examples" / "hello-cuda", root, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    set_matrix(root, index_url, archs, gpu_archs)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "hello-cuda 0.1.0")
    git(root, "tag", "hello-cuda-v0.1.0")
    return root


def set_matrix(root: Path, index_url: str, archs: list[str], gpu_archs: str) -> None:
    pyproject = root / "pyproject.toml"
    text = re.split("# One wheel per CUDA architecture|# The test's matrix", pyproject.read_text())[0]
    pyproject.write_text(
        text
        + textwrap.dedent(f"""
        # The test's matrix
        [tool.wheelflow.matrix]
        axes = {{ python = ["3.11"], arch = {json.dumps(archs)} }}
        env = {{ HELLO_CUDA_ARCHS = "{{arch}}" }}
        local-version = "sm{{arch}}"
        gpu-archs = {gpu_archs}
        timeout = 900

        [tool.wheelflow.targets.staging]
        index = "{index_url}"
        verify-timeout = 10
        """)
    )


@needs_nvcc
@pytest.mark.case(
    "fault",
    "a wheel lacks device code for an architecture its cell declares",
    "refused before any upload, naming the file and sm_90",
)
def test_a_release_whose_wheel_lacks_a_declared_arch_is_refused_before_upload(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    from flows.release import release

    with FaultProxy(index.url) as proxy:
        # HELLO_CUDA_ARCHS=80 compiles sm_80 only; the cell declares sm_80 and sm_90.
        project = hello_history(tmp_path / "hello", proxy.url + "simple/", ["80"], '["sm_80", "sm_90"]')
        state = release(project=str(project), builder="local", return_state=True)
        report = json.loads((home / "reports" / f"{state.state_details.flow_run_id}.json").read_text())
        assert state.is_failed()
        # The wheel was repaired to a manylinux tag (the exact policy depends on this machine's glibc).
        assert re.match(
            r"py3\.11-arch80: refused by the ABI gate: hello_cuda-0\.1\.0\+sm80-cp311-cp311-manylinux_\w+"
            r"_x86_64\.whl: \[gpu-arch\] hello_cuda/_core",
            report["error"],
        ), report["error"]
        assert "has no device code for sm_90 (it has sm_80)" in report["error"]
        assert {c["check"]: c["status"] for c in report["checks"]}["ABI gate"] == "failed"
        assert proxy.seen == []  # refused before the index was even read
        assert list(index.packages.iterdir()) == []


@needs_nvcc
def test_a_backfill_of_a_new_architecture_on_the_hello_cuda_history(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    """The issue's end to end: 0.1.0 released for sm80; the matrix adds arch 90; the backfill builds
    +sm90 from the tag, the ABI gate checks its device code, and it is uploaded and proven."""
    from flows.backfill import backfill
    from flows.release import release

    with FaultProxy(index.url) as proxy:
        simple = proxy.url + "simple/"
        project = hello_history(tmp_path / "hello", simple, ["80"], '["sm_{arch}"]')
        assert release(project=str(project), builder="local", return_state=True).is_completed()
        released = [p for p in proxy.seen if p[0] == "POST"]
        assert len(released) == 2  # the sdist and the +sm80 wheel
        set_matrix(project, simple, ["80", "90"], '["sm_{arch}"]')
        git(project, "commit", "-qam", "matrix: arch 90")
        summary = backfill(project=str(project), builder="local")
    assert [(r["cell"], r["state"]) for r in summary["rows"]] == [
        ("py3.11-arch80", "present"),
        ("py3.11-arch90", "backfilled"),
    ]
    assert len([p for p in proxy.seen if p[0] == "POST"]) == 3  # one upload more: the +sm90 wheel
    assert [p.name for p in index.packages.glob("hello_cuda-0.1.0+sm90-cp311-cp311-manylinux_*_x86_64.whl")]


# ---- `wheelflow check` ----


def test_check_refuses_a_wheel_against_a_runtime_naming_the_demangled_symbol(c10, tmp_path: Path) -> None:  # noqa: F811
    wheel = make_wheel(tmp_path, "gpu_pkg", "1.0.0", TAG, extra_files={"gpu_pkg/_ext.so": c10["ext"].read_bytes()})
    ok = run_cli("check", str(wheel), "--runtime", f"torch-v1={c10['v1']}", "--json")
    assert ok.returncode == 0, ok.stderr
    bad = run_cli(
        "check", str(wheel), "--runtime", f"torch-v1={c10['v1']}", "--runtime", f"torch-v2={c10['v2']}", "--json"
    )
    assert bad.returncode == 1
    result = json.loads(bad.stdout)
    [finding] = result["findings"]
    assert finding["rule"] == "abi-symbol" and "against torch-v2: undefined symbol c10::foo(int)" in finding["message"]
    assert [(r["runtime"], r["loads"]) for r in result["grid"]] == [("torch-v1", "yes"), ("torch-v2", "no")]
    missing = run_cli("check", str(wheel), "--runtime", f"torch-v3={tmp_path / 'nowhere'}")
    assert missing.returncode == 2
    assert "spec error: --runtime: torch-v3:" in missing.stderr and "is not a folder" in missing.stderr


@needs_nvcc
def test_check_refuses_a_missing_architecture_naming_it(kernels, tmp_path: Path) -> None:  # noqa: F811
    wheel = make_wheel(tmp_path, "gpu_pkg", "1.0.0", TAG, extra_files={"gpu_pkg/_k.so": kernels["sm80"].read_bytes()})
    assert run_cli("check", str(wheel), "--gpu-archs", "8.0").returncode == 0
    refused = run_cli("check", str(wheel), "--gpu-archs", "8.0;9.0")
    assert refused.returncode == 1
    assert "gpu_pkg/_k.so has no device code for sm_90 (it has sm_80)" in refused.stderr


@needs_nvcc
def test_check_warns_about_undeclared_sass_and_refuses_it_when_exact(kernels, tmp_path: Path) -> None:  # noqa: F811
    wheel = make_wheel(
        tmp_path, "gpu_pkg", "1.0.0", TAG, extra_files={"gpu_pkg/_k.so": kernels["sm80_sm90"].read_bytes()}
    )
    warned = run_cli("check", str(wheel), "--gpu-archs", "9.0")
    assert warned.returncode == 0, warned.stderr
    assert "[gpu-arch] warning: gpu_pkg/_k.so carries SASS for sm_80, which the cell does not declare" in (
        warned.stderr
    )
    refused = run_cli("check", str(wheel), "--gpu-archs", "9.0", "--gpu-archs-policy", "exact", "--json")
    assert refused.returncode == 1
    [finding] = json.loads(refused.stdout)["findings"]
    assert finding["severity"] == "error" and "carries SASS for sm_80" in finding["message"]


# ---- spec keys ----


def _spec(tmp_path: Path, **tables) -> object:
    return parse_spec({"name": "gpu-pkg", **tables}, tmp_path)


def test_gpu_archs_and_cell_runtimes_render_per_cell(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        matrix={"axes": {"torch": ["2.8.0", "2.9.1"], "arch": ["80", "90"]}, "gpu-archs": "sm_{arch};9.0+PTX"},
        abi={
            "runtimes": {"torch-2.8.0": ["torch==2.8.0"], "torch-2.9.1": ["torch==2.9.1"]},
            "cell-runtime": "torch-{torch}",
            "pip-args": ["--only-binary", ":all:"],
        },
    )
    first = spec.matrix.cells[0]
    assert first.gpu_archs == "sm_80;9.0+PTX" and spec.cell_runtime(first.values) == "torch-2.8.0"
    listed = _spec(tmp_path, matrix={"axes": {"arch": ["80"]}, "gpu-archs": ["sm_{arch}", "compute_90"]})
    assert listed.matrix.cells[0].gpu_archs == ("sm_80", "compute_90")


@pytest.mark.case(
    "bad input",
    "abi.cell-runtime renders to a runtime abi.runtimes lacks, or gpu-archs is no arch",
    "spec error naming the key, the cell and the fix",
)
def test_bad_abi_keys_name_the_key_and_the_cell(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError,
        match=r"^spec error: tool\.wheelflow\.abi\.cell-runtime: renders to 'torch-2\.9\.1' "
        r"for torch2\.9\.1, which abi\.runtimes does not define; fix: add torch-2\.9\.1",
    ):
        _spec(
            tmp_path,
            matrix={"axes": {"torch": ["2.9.1"]}},
            abi={"runtimes": {"torch-2.8.0": ["torch==2.8.0"]}, "cell-runtime": "torch-{torch}"},
        )
    with pytest.raises(
        SpecError,
        match=r"^spec error: tool\.wheelflow\.matrix\.gpu-archs: renders to 'Hopper' for "
        r"archHopper: 'Hopper' is not a GPU architecture; fix: write sm_80",
    ):
        _spec(tmp_path, matrix={"axes": {"arch": ["Hopper"]}, "gpu-archs": "{arch}"})
    with pytest.raises(
        SpecError,
        match=r"^spec error: tool\.wheelflow\.abi\.cell-runtime: template 'torch-\{cuda\}' "
        r"names unknown axis 'cuda'",
    ):
        _spec(
            tmp_path,
            matrix={"axes": {"torch": ["2.9.1"]}},
            abi={"runtimes": {"torch-2.9.1": ["torch==2.9.1"]}, "cell-runtime": "torch-{cuda}"},
        )
