"""The console command starts over without its secrets before anything heavy is imported (issue 32,
item 2): the exec happens with the standard library and the start-over rules loaded, not the CLI,
Prefect, pydantic or httpx, whose imports took 0.4-0.9 s with the secrets in /proc/PID/environ."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

#: Where the exec is caught: what is imported then, what is executed, with which environment.
CATCH_THE_EXEC = textwrap.dedent("""
    import importlib, json, os, sys

    def caught(path, args, env):
        print(json.dumps({"modules": sorted(sys.modules), "path": path, "args": list(args), "env": dict(env)}))
        sys.stdout.flush()
        os._exit(0)

    os.execve = caught
    module, _, function = sys.argv.pop(1).partition(":")
    getattr(importlib.import_module(module), function)()
    print(json.dumps({"no exec": sorted(sys.modules)}))
    """)
HEAVY = ("prefect", "httpx", "pydantic", "rich", "packaging", "logging", "asyncio")


def console_entry_point() -> str:
    """``module:function`` of the installed ``wheelflow`` command (pyproject's [project.scripts])."""
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="wheelflow")
    return entry.value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the start-over is Linux's")
@pytest.mark.case(
    "secret",
    "`wheelflow monitor` (any command) started with a secret in its environment",
    "the console command executes itself again without it before importing the CLI: at the exec only "
    "the standard library and wheelflow.core.startover are loaded",
)
@pytest.mark.parametrize("command", [["monitor", "--repo", "x"], ["release", "."], ["schema"]])
def test_the_console_command_starts_over_before_heavy_imports(tmp_path: Path, command: list[str]) -> None:
    script = tmp_path / "catch.py"
    script.write_text(CATCH_THE_EXEC)
    secret = f"wf-secret-{uuid.uuid4().hex}"
    env = {**os.environ, "WHEELFLOW_STAGING_PASSWORD": secret}
    env.pop("WHEELFLOW_SECRETS_FD", None)
    result = subprocess.run(
        [sys.executable, str(script), console_entry_point(), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    caught = json.loads(result.stdout)
    assert "no exec" not in caught, "the console command did not start over"
    loaded = caught["modules"]
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    assert [m for m in loaded if m.startswith("wheelflow")] == [
        "wheelflow",
        "wheelflow.core",
        "wheelflow.core.startover",
        "wheelflow.launcher",
    ]
    # The same command again, through the same interpreter; the secret waits in a pipe, not in the environment.
    assert caught["path"] == sys.executable and caught["args"] == [
        sys.executable,
        str(script),
        console_entry_point(),
        *command,
    ]
    assert secret not in json.dumps(caught["env"]) and "WHEELFLOW_STAGING_PASSWORD" not in caught["env"]
    assert caught["env"]["WHEELFLOW_SECRETS_FD"].isdigit()


def test_the_entry_point_and_python_dash_m_reach_the_cli_with_the_secrets_in_memory(tmp_path: Path) -> None:
    """A real start-over: the new process holds the secret in memory (wheelflow's readers find it),
    masks it, and its own start environment does not show it."""
    importlib.import_module("wheelflow.launcher")  # the entry point exists
    probe = textwrap.dedent("""
        import json, sys
        import wheelflow.cli
        from wheelflow.core import secretenv
        from wheelflow.core.redaction import redact

        def main(argv=None):
            secretenv.hide_secrets(sys.argv[1:])  # as wheelflow.cli.main does first: takes them from the pipe
            start = open("/proc/self/environ", "rb").read()
            held = secretenv.environ().get("WHEELFLOW_STAGING_PASSWORD")
            print(json.dumps({"held": held, "masked": redact(f"x {held} y"), "in_start": held.encode() in start}))
            return 0

        wheelflow.cli.main = main
        """)
    (tmp_path / "sitecustomize.py").write_text(probe)  # in each process: wheelflow.cli.main replaced by the probe
    secret = f"wf-secret-{uuid.uuid4().hex}"
    env = {**os.environ, "WHEELFLOW_STAGING_PASSWORD": secret, "PYTHONPATH": str(tmp_path)}
    env.pop("WHEELFLOW_SECRETS_FD", None)
    for command in (
        [str(Path(sys.executable).with_name("wheelflow")), "monitor"],
        [sys.executable, "-m", "wheelflow", "schema"],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads(result.stdout)
        assert report == {"held": secret, "masked": "x *** y", "in_start": False}


@pytest.mark.case(
    "secret",
    "`wheelflow setup --git-token-env GIT_TOKEN` with the token in a secret-named variable",
    "found after the start-over (held in memory), not reported as unset",
)
def test_setup_finds_its_token_variable_after_the_start_over(tmp_path: Path) -> None:
    env = {**os.environ, "MY_GIT_TOKEN": "ghp-token-for-setup", "WHEELFLOW_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    wheelflow = str(Path(sys.executable).with_name("wheelflow"))
    argv = [wheelflow, "setup", "--code-repository", "https://127.0.0.1:9/w.git", "--code-ref", "main"]
    result = subprocess.run([*argv, "--git-token-env", "MY_GIT_TOKEN"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "MY_GIT_TOKEN is not set" not in result.stderr and "PREFECT_API_URL" in result.stderr, result.stderr


def test_serve_hands_the_held_secrets_down_to_its_children_only(tmp_path: Path) -> None:
    """`serve` runs each flow run as a child with its environment: the child finds the credentials
    there (as under a worker), while serve's own start environment stays without them."""
    probe = textwrap.dedent("""
        import json, subprocess, sys
        import wheelflow.cli
        from wheelflow.core import secretenv

        def main(argv=None):
            secretenv.hide_secrets(sys.argv[1:])
            secretenv.hand_down_to_children()
            child = subprocess.run(
                [sys.executable, "-c", "import os; print(os.environ.get('WHEELFLOW_STAGING_PASSWORD'))"],
                capture_output=True, text=True,
            ).stdout.strip()
            own = open("/proc/self/environ", "rb").read()
            print(json.dumps({"child": child, "own": b"WHEELFLOW_STAGING_PASSWORD" in own}))
            return 0

        wheelflow.cli.main = main
        """)
    (tmp_path / "sitecustomize.py").write_text(probe)
    secret = f"wf-secret-{uuid.uuid4().hex}"
    env = {**os.environ, "WHEELFLOW_STAGING_PASSWORD": secret, "PYTHONPATH": str(tmp_path)}
    env.pop("WHEELFLOW_SECRETS_FD", None)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("wheelflow")), "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == {"child": secret, "own": False}
