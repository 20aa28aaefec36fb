"""prefect.yaml's pull step: a worker fetches wheelflow's flows from the repository and ref in the
Prefect Variables, with the token in the Secret block, as Prefect's git_clone step would, but clones
them itself (the token reaches git through a credential helper, never git's command line, where
Prefect's step puts it) and so that a missing Variable or block, or a clone that fails, ends the run with a state
message saying which and how to fix it. With Prefect's own step and templates, such a run crashed
with "process exited with status code 1" and the reason was only in the worker's stdout."""

from __future__ import annotations

import os
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
        return _fetch_code(repository_variable, ref_variable, token_block)
    except PullStepFailed as exc:
        message = f"crashed before its first task: {exc}"
        run_id = os.environ.get("PREFECT__FLOW_RUN_ID")  # set in the process that runs the flow
        if run_id:
            crash_before_start(run_id, message)
        raise PullStepFailed(message) from None


def _fetch_code(repository_variable: str, ref_variable: str, token_block: str) -> dict[str, Any]:
    """A clone at the Variables' repository and ref with the block's token; PullStepFailed naming
    what is missing or what git said, and the fix."""
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
        return {"directory": str(directory.relative_to(Path.cwd()))}
    except Exception as exc:
        problem = " ".join(str(exc).split()) or type(exc).__name__
        raise PullStepFailed(
            f"cannot fetch wheelflow's code at {ref!r}: {problem}; fix: check the Variables {repository_variable} "
            f"and {ref_variable} (a tag or branch of that repository) and the token in {token_block}"
        ) from exc
