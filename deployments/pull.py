"""prefect.yaml's pull step: a worker fetches wheelflow's flows from the repository and ref in the
Prefect Variables, with the token in the Secret block, as Prefect's git_clone step would, but clones
them itself (the token reaches git through a credential helper, never git's command line, where
Prefect's step puts it) and so that a missing Variable or block, or a clone that fails, ends the run with a state
message saying which and how to fix it. With Prefect's own step and templates, such a run crashed
with "process exited with status code 1" and the reason was only in the worker's stdout.

In the process that runs the flow, the clone then becomes the wheelflow that run imports, all of it:
put first on ``sys.path`` in its installed shape, with every ``wheelflow`` module imported so far (this
step's own, from the worker's installed copy) forgotten. Only the entrypoint file came from the clone
before, and every ``wheelflow.*`` import from the worker's installed copy: a run mixed two versions."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from wheelflow.core.errors import WheelflowError
from wheelflow.core.redaction import register_secret
from wheelflow.ops.doctor import CODE_VARIABLES, GIT_TOKEN_BLOCK
from wheelflow.source.checkout import clone_code

SETUP = "run `wheelflow setup --code-repository URL --code-ref REF` against this server"


class PullStepFailed(WheelflowError):
    """The worker could not fetch wheelflow's code: the run ends before its first task."""


def clone_wheelflow(
    repository_variable: str = CODE_VARIABLES[0],
    ref_variable: str = CODE_VARIABLES[1],
    token_block: str = GIT_TOKEN_BLOCK,
) -> dict[str, Any]:
    """Clone wheelflow's code for this flow run; returns what git_clone would (``directory``). When it
    cannot, the run is marked Crashed with the reason before the process exits."""
    from wheelflow.adapters.prefect_api import crash_before_start

    try:
        output, ref, token = _fetch_code(repository_variable, ref_variable, token_block)
        run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
        if run_id:  # the process that runs the flow (not a test or a tool calling the step)
            try:
                _run_pulled_code(Path(output["directory"]).resolve(), ref, token, run_id)
            except OSError as exc:
                raise PullStepFailed(f"cannot make the code pulled at {ref!r} importable: {exc}") from exc
        return output
    except PullStepFailed as exc:
        message = f"crashed before its first task: {exc}"
        run_id = os.environ.get("PREFECT__FLOW_RUN_ID")  # set in the process that runs the flow
        if run_id:
            crash_before_start(run_id, message)
        raise PullStepFailed(message) from None


def _fetch_code(repository_variable: str, ref_variable: str, token_block: str) -> tuple[dict[str, Any], str, str]:
    """A clone at the Variables' repository and ref with the block's token (what git_clone would return:
    ``directory``; the ref; the token); PullStepFailed naming what is missing or what git said, and the fix."""
    from wheelflow.adapters.prefect_api import read_secret, read_variable

    repository, ref = read_variable(repository_variable), read_variable(ref_variable)
    for name, value in ((repository_variable, repository), (ref_variable, ref)):
        if not value:
            raise PullStepFailed(f"the Prefect Variable {name} is not set; fix: {SETUP}")
    try:
        token = str(read_secret(token_block) or "")
    except WheelflowError:
        raise PullStepFailed(
            f"the Secret block {token_block} does not exist; fix: {SETUP} (it makes an empty one for a public "
            "repository; --git-token-env VAR for a private one)"
        ) from None
    register_secret(token)  # masked in every message and log line from here on, whatever git prints
    try:
        directory = clone_code(str(repository), str(ref), token or None, Path.cwd())
        return {"directory": str(directory.relative_to(Path.cwd()))}, str(ref), token
    except Exception as exc:
        problem = " ".join(str(exc).split()) or type(exc).__name__
        raise PullStepFailed(
            f"cannot fetch wheelflow's code at {ref!r}: {problem}; fix: check the Variables {repository_variable} "
            f"and {ref_variable} (a tag or branch of that repository) and the token in {token_block}"
        ) from exc


def _installed_folders(mapped: list[str]) -> dict[str, Path]:
    """The worker's installed wheelflow, package by package (an editable install keeps the mapped
    subpackages where the checkout has them)."""
    import wheelflow

    root = Path(wheelflow.__file__).resolve().parent
    folders = {"wheelflow": root}
    for name in mapped:
        spec = importlib.util.find_spec(name)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if locations and Path(locations[0]).resolve() != root / name.split(".", 1)[1]:
            folders[name] = Path(locations[0]).resolve()
    return folders


def _run_pulled_code(clone: Path, ref: str, token: str, run_id: str) -> None:
    """Make the clone the wheelflow this process imports, record its commit and ref for the report, and
    say in the run's log which code runs and whether the worker's installed copy differs."""
    from wheelflow import __version__ as installed_version
    from wheelflow.adapters.prefect_api import log_to_flow_run
    from wheelflow.core.codeversion import (
        CODE_COMMIT_ENV,
        CODE_REF_ENV,
        describe_code,
        package_dirs,
        running_wheelflow,
        source_digest,
        stage_importable,
    )

    pulled = package_dirs(clone)
    if not pulled:
        raise PullStepFailed(
            f"the repository at {ref!r} holds no wheelflow package (no wheelflow/__init__.py); fix: point the "
            "Variable wheelflow_code_repository at wheelflow's repository"
        )
    installed = _installed_folders([name for name in pulled if name != "wheelflow"])
    differs = source_digest(installed) != source_digest(pulled)
    commit = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    staged = stage_importable(clone)
    os.environ[CODE_COMMIT_ENV], os.environ[CODE_REF_ENV] = commit or "unknown", ref
    sys.path.insert(0, str(staged))
    for name in [m for m in sys.modules if m == "wheelflow" or m.startswith("wheelflow.")]:
        del sys.modules[name]  # imported from the installed copy so far (this step's own modules)
    importlib.invalidate_caches()

    from wheelflow.core.redaction import register_secret  # the pulled one, from here on

    register_secret(token)
    running = describe_code(running_wheelflow())
    installed_at = installed["wheelflow"].parent
    if differs:
        line = (
            f"wheelflow: this run uses the code it pulled, {running}; this worker's installed wheelflow "
            f"{installed_version} ({installed_at}) differs from it: only this run's code follows the Variable "
            "wheelflow_code_ref (install the same version on the worker to make its own commands match)"
        )
    else:
        line = f"wheelflow: this run uses the code it pulled, {running}, the same as this worker's installed copy"
    print(line, flush=True)
    log_to_flow_run(run_id, line, level=30 if differs else 20)
