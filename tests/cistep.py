"""The example CI workflow's one step (examples/ci/github-actions-release.yml), run as GitHub runs it,
and a tagged project repository such as a tag push would name."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import REPO, git, make_project

WORKFLOW = REPO / "examples" / "ci" / "github-actions-release.yml"


def workflow() -> dict:
    import yaml

    return yaml.safe_load(WORKFLOW.read_text())


def ci_step(**github: str) -> tuple[list[str], dict[str, str]]:
    """The workflow's one `run:` step as a command line and environment: GitHub's bash invocation, the
    step's env with secrets resolved from the current PREFECT_API_URL, and the GITHUB_* variables of a
    tag push."""
    (job,) = workflow()["jobs"].values()
    (step,) = [s for s in job["steps"] if "run" in s]
    assert "${{" not in step["run"]  # expressions are resolved before the shell: the script reads only env
    secrets = {"PREFECT_API_URL": os.environ["PREFECT_API_URL"], "PREFECT_API_KEY": ""}
    env = {
        key: secrets[value.split("secrets.")[1].rstrip(" }")] if "secrets." in str(value) else str(value)
        for key, value in step["env"].items()
    }
    path = os.environ["PATH"]
    return ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], {"PATH": path, **env, **github}


def tagged_repository(root: Path, index, version: str, smoke: str | None = None) -> dict[str, str]:
    """A bare repository at SERVER/owner/ci-pkg.git holding tag v{version}, released to ``index`` as its
    staging target; the GITHUB_* variables of its push."""
    work = make_project(root / "work", name="ci-pkg", version=version, index_url=index.simple_url)
    if smoke:
        text = (work / "pyproject.toml").read_text()
        line = [row for row in text.splitlines() if row.startswith("smoke = ")][0]
        (work / "pyproject.toml").write_text(text.replace(line, f"smoke = {json.dumps(smoke)}"))
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "release")
    git(work, "tag", f"v{version}")
    bare = root / "server" / "owner" / "ci-pkg.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return {
        "GITHUB_SERVER_URL": f"file://{root / 'server'}",
        "GITHUB_REPOSITORY": "owner/ci-pkg",
        "GITHUB_REF_NAME": f"v{version}",
        "GITHUB_REF": f"refs/tags/v{version}",
    }
