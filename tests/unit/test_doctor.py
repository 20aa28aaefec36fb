"""`wheelflow doctor`'s verdicts: every probe of the machine and the server is passed in, so these
run without either (fakes stand for a worker machine and a Prefect server, which cannot exist here)."""

from __future__ import annotations

from wheelflow.core.sandbox import BWRAP, SESSION
from wheelflow.ops.doctor import Probes, diagnose, missing


def _probes(**changes) -> Probes:
    ready = dict(
        which=lambda name: f"/usr/bin/{name}",
        docker_answers=lambda: True,
        free_gib=lambda: 100.0,
        pool_exists=lambda name: True,
        variable=lambda name: "file:///code.git" if "repository" in name else "main",
        secret_block_exists=lambda name: True,
        env={"PREFECT_API_URL": "http://127.0.0.1:4200/api", "WHEELFLOW_STAGING_PASSWORD": "x"},
        server=lambda: None,
        sandbox=lambda: BWRAP,
    )
    return Probes(**{**ready, **changes})


def test_a_ready_worker_lacks_nothing() -> None:
    findings = diagnose(_probes())
    assert missing(findings) == [] and all(f.ok for f in findings)
    assert "ok: git: /usr/bin/git" in [f.line() for f in findings]


def test_what_the_readme_s_worker_path_lacked_is_named_with_its_fix() -> None:
    """Work pools created and deployed, but no Variables and no Secret block: every run crashed."""
    findings = diagnose(_probes(variable=lambda name: None, secret_block_exists=lambda name: False))
    lines = {f.check: f.line() for f in missing(findings)}
    assert set(lines) == {
        "Variable wheelflow_code_repository",
        "Variable wheelflow_code_ref",
        "Secret block wheelflow-git-token",
    }
    assert lines["Secret block wheelflow-git-token"].startswith(
        "missing: Secret block wheelflow-git-token: missing: every run crashes in the pull step"
    )
    assert "; fix: wheelflow setup" in lines["Secret block wheelflow-git-token"]


def test_a_machine_without_git_disk_or_server_says_so_and_stops_before_server_checks() -> None:
    findings = diagnose(
        _probes(which=lambda name: None, free_gib=lambda: 2.0, server=lambda: "the Prefect server does not answer")
    )
    checks = {f.check for f in missing(findings)}
    assert checks == {"Prefect server", "git", "free disk"}
    assert not any(f.check.startswith("work pool") for f in findings)
    warnings = [f.line() for f in findings if not f.ok and not f.required]
    assert warnings == [
        "warning: CUDA toolkit: nvcc not on PATH; fix: install the CUDA toolkit and put its bin/ on "
        "PATH (only GPU workers build CUDA wheels)",
        "warning: compiler cache: ccache not on PATH: every build compiles every file again; fix: install "
        "ccache (apt-get install ccache) on the machines that compile; the local builder then compiles C, C++ "
        'and nvcc through it ([tool.wheelflow.build] compiler-cache = "auto")',
    ]


def test_one_pool_when_the_worker_serves_one() -> None:
    findings = diagnose(_probes(pool_exists=lambda name: name == "wheelflow-control"), "wheelflow-gpu")
    (lacking,) = missing(findings)
    assert lacking.check == "work pool wheelflow-gpu" and "prefect work-pool create wheelflow-gpu" in lacking.fix


def test_doctor_names_the_protection_build_backends_run_under() -> None:
    contained = {f.check: f for f in diagnose(_probes())}["sandbox"]
    assert contained.ok and "bwrap (pid+net namespace)" in contained.line()
    fallback = {f.check: f for f in diagnose(_probes(sandbox=lambda: SESSION))}["sandbox"]
    assert not fallback.ok and not fallback.required  # a warning: the session kill still applies
    assert "session kill only" in fallback.line() and "apt-get install bubblewrap" in fallback.line()


def test_doctor_says_whether_a_compiler_cache_is_there() -> None:
    there = {f.check: f for f in diagnose(_probes())}["compiler cache"]
    assert there.ok and there.detail.startswith("ccache at /usr/bin/ccache")
