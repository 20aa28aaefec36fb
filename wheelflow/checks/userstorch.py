"""The torch a release's users really get, against the torch its wheel was built for.

A wheel's ``Requires-Dist: torch`` is often unpinned (or pinned to a minor, ``torch==2.14.*``): the
install check after upload, done the way users install, then resolves whatever torch the dependency
index serves newest, which need not be the cell's build torch. Extensions built for one torch and
loaded with another are where users meet ``undefined symbol: _ZN3c10...``. These plain functions
compare the two (by release: ``2.14.1`` and ``2.14.1+cu130`` are the same torch) and word the finding
the report, the checklist and the run page show; ``abi.users-torch = "same"`` makes it a refusal.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from wheelflow.core.distributions import Finding

FLAG, SAME = "flag", "same"  # abi.users-torch: a warning (the default), or a failure
RULE = "users-torch"


def torch_release(label: str | None) -> str | None:
    """``2.15.0`` from a torch as wheelflow records it (``2.15.0+cu132 (CUDA 13.2)``, ``2.15.0``), or None."""
    if not label or not label.split():
        return None
    version = label.split()[0]
    try:
        return ".".join(str(part) for part in Version(version).release)
    except InvalidVersion:
        return version.split("+", 1)[0]


def torch_cuda(label: str | None) -> str | None:
    """``13.2`` from ``2.15.0+cu132 (CUDA 13.2)``; None for a CPU torch or a bare version."""
    if label and "(CUDA " in label:
        return label.split("(CUDA ", 1)[1].rstrip(")").strip() or None
    return None


def users_torch_differs(built: str | None, users: str | None) -> bool:
    """Users resolve another torch release than the build's (None on either side: nothing to compare)."""
    built_release, users_release = torch_release(built), torch_release(users)
    return bool(built_release and users_release and built_release != users_release)


def users_torch_finding(
    name: str, wheel: str, built: str | None, users: str | None, policy: str = FLAG
) -> Finding | None:
    """The finding when the torch users get (``users``, as the install check loaded it) is another
    release than ``built`` (the cell's): a warning, or with ``policy`` "same" a refusal; else None."""
    if not users_torch_differs(built, users):
        return None
    built_release, users_release = torch_release(built), torch_release(users)
    cuda = torch_cuda(users)
    got = f"torch {users_release}" + (f" (CUDA {cuda})" if cuda else "")
    said = (
        f"users who `pip install {name}` get {got}; this wheel was built for {built_release}; fix: pin "
        f"torch=={built_release} in the wheel's metadata (the project's install_requires or [project] "
        f"dependencies), or publish a cell for torch {users_release} (a value of the matrix's torch axis)"
    )
    if policy == SAME:
        return Finding(wheel, RULE, f'{said}; abi.users-torch = "same" refuses this ("flag" only warns)')
    return Finding(wheel, RULE, f'{said}; abi.users-torch = "same" makes this a failure', warning=True)
