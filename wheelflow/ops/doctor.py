"""``wheelflow doctor``: what a worker machine lacks for the team path, each with its fix.

The checks are plain: every probe of the machine or the Prefect server is a callable passed in
(:class:`Probes`), so the verdicts are tested without a server; the CLI passes the real ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wheelflow.builds.buildenv import NO_COMPILER_CACHE_FIX
from wheelflow.core.sandbox import BWRAP, protection_label

POOLS = ("wheelflow-control", "wheelflow-gpu")
CODE_VARIABLES = ("wheelflow_code_repository", "wheelflow_code_ref")
GIT_TOKEN_BLOCK = "wheelflow-git-token"
MIN_FREE_GIB = 10.0


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True  # False: only some workers need it (a GPU worker builds, a control worker uploads)

    def line(self) -> str:
        mark = "ok" if self.ok else "missing" if self.required else "warning"
        return f"{mark}: {self.check}: {self.detail}" + ("" if self.ok else f"; fix: {self.fix}")

    def json(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "required": self.required, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class Probes:
    which: Callable[[str], str | None]  # an executable's path on PATH, or None
    docker_answers: Callable[[], bool]
    free_gib: Callable[[], float]  # free space where builds go ($WHEELFLOW_HOME)
    pool_exists: Callable[[str], bool]
    variable: Callable[[str], Any]  # a Prefect Variable's value, None when unset
    secret_block_exists: Callable[[str], bool]
    env: Mapping[str, str]
    server: Callable[[], str | None]  # None when the Prefect server answers, else why not
    sandbox: Callable[[], str]  # what contains build backends here: sandbox.BWRAP or sandbox.SESSION


def diagnose(probes: Probes, pool: str | None = None) -> list[Finding]:
    """Every check, in the order a person fixes them."""
    findings = []
    reason = probes.server()
    api = probes.env.get("PREFECT_API_URL", "")
    findings.append(
        Finding(
            "Prefect server",
            reason is None and bool(api),
            f"{api} answers" if reason is None and api else (reason or "PREFECT_API_URL is not set"),
            "export PREFECT_API_URL=http://SERVER:4200/api (the team's server), and PREFECT_API_KEY if it needs one",
        )
    )
    git = probes.which("git")
    findings.append(Finding("git", git is not None, git or "not on PATH", "install git (apt-get install git)"))
    findings.append(
        Finding(
            "Docker",
            probes.docker_answers(),
            "the daemon answers" if probes.docker_answers() else "no Docker daemon answers",
            "start dockerd and let this user reach /var/run/docker.sock (or release with --builder local)",
            required=False,
        )
    )
    nvcc = probes.which("nvcc")
    cuda = probes.env.get("CUDA_HOME") or (nvcc and nvcc.rsplit("/bin/", 1)[0])
    findings.append(
        Finding(
            "CUDA toolkit",
            bool(nvcc),
            f"nvcc at {nvcc} (CUDA_HOME {cuda})" if nvcc else "nvcc not on PATH",
            "install the CUDA toolkit and put its bin/ on PATH (only GPU workers build CUDA wheels)",
            required=False,
        )
    )
    ccache = probes.which("ccache")
    findings.append(
        Finding(
            "compiler cache",
            ccache is not None,
            f"ccache at {ccache}: a rebuild recompiles only the changed files"
            if ccache
            else "ccache not on PATH: every build compiles every file again",
            NO_COMPILER_CACHE_FIX.removeprefix("fix: "),
            required=False,
        )
    )
    contained = probes.sandbox()
    findings.append(
        Finding(
            "sandbox",
            contained == BWRAP,
            f"build backends, smoke commands and install checks run under {protection_label(contained, network=False)}",
            "install bubblewrap (apt-get install bubblewrap) and let this user make namespaces "
            "(unprivileged user namespaces, or root with its capabilities); without it a process that leaves "
            "a build's session and clears its environment can outlive the build",
            required=False,
        )
    )
    free = probes.free_gib()
    findings.append(
        Finding(
            "free disk",
            free >= MIN_FREE_GIB,
            f"{free:.1f} GiB free for builds",
            f"free at least {MIN_FREE_GIB:.0f} GiB under $WHEELFLOW_HOME, or point WHEELFLOW_HOME elsewhere",
        )
    )
    if reason is not None:
        return findings  # what follows is read from the server
    for name in (pool,) if pool else POOLS:
        findings.append(
            Finding(
                f"work pool {name}",
                probes.pool_exists(name),
                "exists" if probes.pool_exists(name) else "not on the server",
                f"wheelflow setup (or: prefect work-pool create {name} --type process)",
            )
        )
    for name in CODE_VARIABLES:
        value = probes.variable(name)
        findings.append(
            Finding(
                f"Variable {name}",
                bool(value),
                f"{value}" if value else "not set: the workers' pull step cannot clone wheelflow's code",
                "wheelflow setup --code-repository URL --code-ref REF",
            )
        )
    has_token = probes.secret_block_exists(GIT_TOKEN_BLOCK)
    findings.append(
        Finding(
            f"Secret block {GIT_TOKEN_BLOCK}",
            has_token,
            "exists" if has_token else "missing: every run crashes in the pull step (Block not found)",
            "wheelflow setup (an empty token for a public repository; --git-token-env VAR for a private one)",
        )
    )
    credentials = sorted(k for k in probes.env if k.startswith("WHEELFLOW_") and k.endswith("_PASSWORD"))
    findings.append(
        Finding(
            "index credentials",
            bool(credentials),
            f"{', '.join(credentials)} set" if credentials else "no WHEELFLOW_<TARGET>_PASSWORD in the environment",
            "export WHEELFLOW_<TARGET>_USERNAME/_PASSWORD on control workers, or set the target's "
            "credentials to a Prefect Secret block in the spec",
            required=False,
        )
    )
    return findings


def missing(findings: list[Finding]) -> list[Finding]:
    """The findings that stop a worker from running wheelflow's deployments."""
    return [f for f in findings if f.required and not f.ok]
