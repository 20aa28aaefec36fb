"""examples/torch-ext released as its maintainers would: a setup.py that imports torch at the top, no
pyproject build requirements, the CUDA 13.0 torch wheel from the public index (cached between runs under
~/.cache/wheelflow-tests, never downloaded per test), the local builder and nvcc. No GPU: the smoke test
runs the extension's CPU path, loading the cell's torch and its CUDA runtime libraries."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from githubstub import TOKEN, GitHubStub
from torchcache import TORCH as TORCH_VERSION
from torchcache import torch_wheels

from wheelflow.index.localindex import PypiServer, ensure_htpasswd

NVCC = Path("/usr/local/cuda/bin/nvcc")
pytestmark = [
    pytest.mark.skipif(not NVCC.exists(), reason="needs the CUDA toolkit's nvcc at /usr/local/cuda (no GPU)"),
    pytest.mark.skipif(
        shutil.which("ninja") is None, reason="torch's BuildExtension needs ninja (.ci/run installs it)"
    ),
]


@pytest.fixture(scope="module")
def wheel_cache() -> Path:
    return torch_wheels()


@pytest.fixture(scope="module")
def dependency_index(wheel_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """torch and its CUDA libraries served on loopback from the cache: the post-upload install check
    resolves the release's dependencies there instead of downloading gigabytes from the public index."""
    root = tmp_path_factory.mktemp("deps")
    ensure_htpasswd(root / "htpasswd", "reader", "reader-password")
    with PypiServer(wheel_cache, root / "htpasswd", log_file=root / "pypiserver.log") as server:
        yield server.url + "simple/"


def torch_ext_project(
    root: Path,
    dependency_index: str,
    *,
    version: str = "0.1.0",
    manifest: bool = True,
    torch: str = TORCH_VERSION,
    edit: Callable[[str], str] | None = None,
) -> Path:
    """A git repository of examples/torch-ext (its one cell built for ``torch``), tagged as its spec asks;
    ``edit`` rewrites its pyproject.toml before the tagged commit."""
    project = root / "torch-ext"
    shutil.copytree(REPO / "examples" / "torch-ext", project, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text().replace(f'torch = ["{TORCH_VERSION}"]', f'torch = ["{torch}"]')
    text += f'\n[tool.wheelflow.install]\ndependencies = "{dependency_index}"\n'
    pyproject.write_text(edit(text) if edit is not None else text)
    if not manifest:
        (project / "MANIFEST.in").unlink()
    init = project / "torch_ext" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{version}"'))
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", f"torch-ext {version}"], check=True)
    subprocess.run([*git, "tag", f"torch-ext-v{version}"], check=True)
    return project


def release(project: Path, cache: Path) -> tuple[int, dict, str]:
    # The cache is one more find-links location for pip and uv alike (wheelflow hands pip's
    # configuration to both), as a machine's pip.conf would add it.
    result = run_cli(
        "release", str(project), "--builder", "local", "--json", env={"PIP_FIND_LINKS": str(cache)}, timeout=1800
    )
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


@pytest.mark.case(
    "release",
    "PyTorch CUDA extension (setup.py imports torch, no build requirements)",
    "builds in a prepared environment with the cell's torch; the sdist builds a wheel; smoke names the torch",
)
def test_torch_extension_releases_with_the_documented_keys_only(
    tmp_path: Path, home: Path, prefect_api, wheel_cache: Path, dependency_index: str
) -> None:
    code, report, stderr = release(torch_ext_project(tmp_path, dependency_index), wheel_cache)
    assert code == 0, stderr[-4000:]
    (cell,) = report["cells"]
    assert cell["wheel"].startswith("torch_ext-0.1.0+cu130torch2141-cp311-cp311-")  # the per-torch label
    assert cell["from_sdist"] is True  # the only cell built its wheel from the released sdist
    assert cell["torch"].startswith(f"{TORCH_VERSION}+cu130 (CUDA 13.0)")  # what the smoke test loaded
    assert cell["smoke"] == f"passed (torch {cell['torch']})"
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["sdist builds"]["status"] == "passed"
    assert "torch_ext-0.1.0.tar.gz" in checks["sdist builds"]["detail"]
    # The install from the index, as users get it, loaded the same torch.
    assert f"torch {TORCH_VERSION}+cu130" in checks["install + smoke on local"]["detail"]
    assert all(f["status"] == "verified" for f in report["files"])


@pytest.mark.case(
    "bad input",
    "sdist without the headers a kernel includes (no MANIFEST.in)",
    "refused before upload: names the missing header and MANIFEST.in",
)
def test_an_sdist_that_cannot_build_is_refused_naming_the_missing_header(
    tmp_path: Path, home: Path, prefect_api, wheel_cache: Path, dependency_index: str
) -> None:
    code, report, stderr = release(torch_ext_project(tmp_path, dependency_index, manifest=False), wheel_cache)
    assert code == 1, stderr[-3000:]
    assert "the sdist lacks csrc/torch_ext.h" in report["error"] and "MANIFEST.in" in report["error"]
    assert report["files"] == [] or all(f["upload"] != "uploaded" for f in report["files"])
    # the build's own log (a compiler error, setuptools' traceback) is in the task log above; the
    # last word is wheelflow's one line, then the failed run's UI link
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("see it in the Prefect UI: ")
    last = lines[-2]
    assert last.startswith("wheelflow: release failed: ") and "csrc/torch_ext.h" in last and "MANIFEST.in" in last


def test_the_next_version_recompiles_only_what_changed(
    tmp_path: Path, home: Path, prefect_api, wheel_cache: Path, dependency_index: str
) -> None:
    first = torch_ext_project(tmp_path / "a", dependency_index, version="0.2.0")
    code, report, stderr = release(first, wheel_cache)
    assert code == 0, stderr[-3000:]
    # The next version changes one kernel file; the binding and the other kernel come from the cache.
    second = torch_ext_project(tmp_path / "b", dependency_index, version="0.3.0")
    kernel = second / "csrc" / "saxpy.cu"
    # code, not a comment: the preprocessor drops comments, and ccache would rightly hit
    kernel.write_text(kernel.read_text() + "\n__device__ float next_version_scale(float x) { return 3.0f * x; }\n")
    subprocess.run(["git", "-C", str(second), "tag", "-d", "torch-ext-v0.3.0"], check=True, capture_output=True)
    git = ["git", "-C", str(second), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "commit", "-qam", "touch a kernel"], check=True)
    subprocess.run([*git, "tag", "torch-ext-v0.3.0"], check=True)
    code, again, stderr = release(second, wheel_cache)
    assert code == 0, stderr[-3000:]
    hits, compiles = (int(n) for n in again["cells"][0]["compiler_cache"].split(" compiles hit")[0].split(" of "))
    assert compiles >= 3 and hits == compiles - 1, again["cells"][0]


@pytest.mark.case(
    "release",
    "users resolve another torch than the cell's build torch (cell 2.14.0; torch==2.14.* gives users 2.14.1)",
    'flagged in the report, its checklist and the run page, checked against that torch\'s libraries; abi.users-torch = "same" fails it',
)
def test_users_who_get_another_torch_are_told_and_same_refuses(
    tmp_path: Path, home: Path, prefect_api, wheel_cache: Path, dependency_index: str
) -> None:
    # Two real releases of torch: 2.14.0 shares every nvidia-* wheel with 2.14.1, so the cache holds
    # one more torch wheel (downloaded once per machine). The dependency index serves both; the
    # wheel's Requires-Dist (torch==2.14.*) lets users resolve the newest, 2.14.1.
    torch_wheels("2.14.0")
    project = torch_ext_project(tmp_path, dependency_index, torch="2.14.0")
    code, report, stderr = release(project, wheel_cache)
    assert code == 0, stderr[-4000:]
    (cell,) = report["cells"]
    assert cell["wheel"].startswith("torch_ext-0.1.0+cu130torch2140-") and cell["torch"].startswith("2.14.0+cu130")
    told = "users who `pip install torch-ext` get torch 2.14.1 (CUDA 13.0); this wheel was built for 2.14.0; fix: pin torch==2.14.0"
    (flag,) = report["flags"]
    assert flag.startswith(told) and "publish a cell for torch 2.14.1" in flag
    detail = {c["check"]: c for c in report["checks"]}["install + smoke on local"]["detail"]
    assert "smoke ok; torch 2.14.1+cu130 (CUDA 13.0); warning: " + told in detail
    # The ABI gate's symbol check ran against the libraries of the torch users got (2.14.1 keeps the ABI).
    assert "its shared objects load against torch 2.14.1's libraries as installed" in detail
    # The run page (the release's markdown artifact) shows it above its tables.
    page = run_page(report["flow_run_id"])
    assert page.index(f"> ⚠️ {told}") < page.index("| file | target |")

    # The next version under abi.users-torch = "same": the same torch users get is now a failure.
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[tool.wheelflow.abi]\nusers-torch = "same"\n')
    init = project / "torch_ext" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', '__version__ = "0.1.1"'))
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "commit", "-qam", "users must get the build's torch"], check=True)
    subprocess.run([*git, "tag", "torch-ext-v0.1.1"], check=True)
    code, refused, stderr = release(project, wheel_cache)
    assert code == 1, stderr[-3000:]
    assert told in refused["error"] and 'abi.users-torch = "same" refuses this' in refused["error"]
    assert {c["check"]: c for c in refused["checks"]}["install + smoke on local"]["status"] == "failed"


def run_page(flow_run_id: str) -> str:
    """The release summary artifact of a flow run: its page in the Prefect UI."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return next(a.data for a in artifacts if a.key and a.key.endswith("-summary"))


#: The flash-attention family's guessed name: the cell's CUDA major, torch minor and C++ ABI. GitHub asset
#: names are case-sensitive and setuptools lowercases a local version label (cxx11abiTRUE becomes
#: cxx11abitrue in the wheel's name), so the name guessed here takes the ABI as the axis spells it
#: ({cxx11abi_nodot}: "true"), where flash-attention's setup.py renames its wheels to say TRUE.
TORCH_GUESSED = "{name}-{version}+cu{cuda_major}torch{torch_minor}cxx11abi{cxx11abi_nodot}-{py}-{py}-linux_x86_64.whl"


def flash_attention_shape(stub: GitHubStub) -> Callable[[str], str]:
    """torch-ext's spec as the flash-attention family ships: plain linux_x86_64 wheels (no repair) labelled
    with the CUDA major, torch minor and C++ ABI, on the local index and as assets of a GitHub release."""

    def edit(text: str) -> str:
        axes = f'axes = {{ python = ["3.11"], torch = ["{TORCH_VERSION}"], cuda = ["13.0"] }}'
        assert axes in text and 'local-version = "cu{cuda_nodot}torch{torch_nodot}"' in text
        text = text.replace(axes, axes[:-2] + ', cxx11abi = ["true"] }')
        # local-version renders axes only: the one cell's CUDA major and torch minor are written out
        torch_minor = ".".join(TORCH_VERSION.split(".")[:2])
        text = text.replace(
            'local-version = "cu{cuda_nodot}torch{torch_nodot}"',
            f'local-version = "cu13torch{torch_minor}cxx11abi{{cxx11abi}}"',
        )
        return text + textwrap.dedent(f"""
            [tool.wheelflow.repair]
            enabled = false

            [tool.wheelflow.targets.local]
            index = "local"

            [tool.wheelflow.targets.gh]
            kind = "github-release"
            repository = "octo/torch-ext"
            api-url = "{stub.api_url}"
            uploads-url = "{stub.uploads_url}"
            tag = "torch-ext-v{{version}}"
            asset-url = "{stub.download_url}/{{repository}}/releases/download/torch-ext-v{{version}}/{{wheel}}"
            guessed-name = "{TORCH_GUESSED}"
            artifacts = ["wheel"]
            """)

    return edit


def test_torch_extension_to_a_github_release_in_the_flash_attention_shape(
    tmp_path: Path, home: Path, prefect_api, wheel_cache: Path, dependency_index: str
) -> None:
    """One compile, two targets: the local index gets the sdist and the wheel, the GitHub release (the
    stand-in of tests/githubstub.py) the wheel as an asset at the URL a flash-attention-style setup.py
    guesses; the draft is published only after every proof; pip installs it from the find-links page
    with the cell's torch."""
    with GitHubStub("octo/torch-ext") as stub:
        project = torch_ext_project(tmp_path, dependency_index, edit=flash_attention_shape(stub))
        result = run_cli(
            "release", str(project), "--to", "local", "--to", "gh", "--builder", "local", "--json",
            env={"PIP_FIND_LINKS": str(wheel_cache), "WHEELFLOW_GH_TOKEN": TOKEN}, timeout=1800,
        )  # fmt: skip
        report = json.loads(result.stdout) if result.stdout.strip() else {}
        assert result.returncode == 0, result.stderr[-4000:]
        wheel = f"torch_ext-0.1.0+cu13torch{TORCH_VERSION.rsplit('.', 1)[0]}cxx11abitrue-cp311-cp311-linux_x86_64.whl"
        (cell,) = report["cells"]
        assert cell["wheel"] == wheel
        rows = {(f["filename"], f["target"]): f for f in report["files"]}
        assert {(f["upload"], f["status"]) for f in rows.values()} == {("uploaded", "verified")}
        assert set(rows) == {(wheel, "local"), ("torch_ext-0.1.0.tar.gz", "local"), (wheel, "gh")}
        tag = "torch-ext-v0.1.0"
        assert set(stub.asset_names(tag)) == {wheel, "index.html"}
        assert not stub.release(tag).draft

        # Published only once every asset (and the page) was downloaded through the API and hashed;
        # the users' download host was asked only after.
        seen = list(stub.seen)
        publish = next(i for i, s in enumerate(seen) if s.method == "PATCH")
        proofs = [i for i, s in enumerate(seen) if s.host == "api" and "/releases/assets/" in s.target]
        assert len(proofs) >= 2 and max(proofs) < publish
        assert min(i for i, s in enumerate(seen) if s.host == "download") > publish

        checks = {c["check"]: c for c in report["checks"]}
        (guessed,) = [c for name, c in checks.items() if name.startswith("guessed URL of ")]
        assert guessed["status"] == "passed", guessed
        assert f"{stub.download_url}/octo/torch-ext/releases/download/{tag}/{wheel} serves" in guessed["detail"]
        installs = [c for name, c in checks.items() if name.startswith("install check on gh: ")]
        pip = [c for c in installs if c["detail"].split()[0] == "pip"]
        assert pip and all(c["status"] == "passed" for c in installs), installs
        assert all("--find-links" in name for name in checks if name.startswith("install check on gh: "))
        # From the users' download URLs, with the cell's torch (the smoke test loads it).
        assert checks["install + smoke on gh"]["status"] == "passed"
        assert f"torch {TORCH_VERSION}+cu130" in checks["install + smoke on gh"]["detail"]
        for request in seen:  # the token went to the API and uploads hosts only
            assert TOKEN not in request.target
            assert request.host in ("api", "uploads") or request.authorization is None, request
