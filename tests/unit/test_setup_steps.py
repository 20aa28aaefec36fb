"""`wheelflow setup` checks every input before it changes the server, and a step that fails after
others changed it names the step, the error and each change made so far (it used to exit 2, "nothing
was done", after creating the pools, the Variables and the Secret block). With a real server:
tests/e2e/test_setup.py and tests/e2e/test_team_path.py."""

from __future__ import annotations

import pytest

from wheelflow.cli import main
from wheelflow.cli.setup import ServerChanges, SetupIncomplete
from wheelflow.core.errors import ExitCode


def test_a_step_that_fails_names_itself_the_error_and_every_change_made_before_it() -> None:
    changes = ServerChanges()
    assert changes.step("work pool wheelflow-control", lambda: True) is True
    changes.changed += ["work pool wheelflow-control created", "Variable wheelflow_code_ref set"]

    def refused() -> None:
        raise RuntimeError("the server answered 503")

    with pytest.raises(SetupIncomplete) as failed:
        changes.step("registering the deployments", refused)
    assert str(failed.value) == (
        "setup stopped at registering the deployments: the server answered 503; already changed on the server: "
        "work pool wheelflow-control created; Variable wheelflow_code_ref set; fix: run setup again once the "
        "cause is fixed (it changes only what differs)"
    )
    assert failed.value.exit_code == ExitCode.FAILED  # not 2: something was done


@pytest.mark.case(
    "bad input",
    "setup with a token variable that is not set, or an empty code ref",
    "exit 2, one line naming the option and the fix, before the server is asked anything",
)
@pytest.mark.parametrize(
    "args, option",
    [
        (["--git-token-env", "WHEELFLOW_TEST_NO_SUCH_TOKEN"], "--git-token-env"),
        (["--code-ref", " "], "--code-ref"),
    ],
)
def test_setup_refuses_bad_input_before_it_asks_the_server_anything(
    args: list[str], option: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home
) -> None:
    monkeypatch.delenv("WHEELFLOW_TEST_NO_SUCH_TOKEN", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens there: never reached
    code = main(["setup", "--code-repository", "https://git.example/team/wheelflow.git", *args])
    err = capsys.readouterr().err
    assert code == ExitCode.BAD_INPUT, err
    assert f"spec error: {option}:" in err and "fix:" in err and "Traceback" not in err
