"""Numbers, paths, versions and URLs from the command line and the spec: each bad one is one line
naming the field and the fix, exit 2, before anything starts (also under --json)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from conftest import REPO, make_project

from wheelflow.cli import main
from wheelflow.config.spec import load_spec
from wheelflow.core.deadline import Deadline
from wheelflow.core.errors import ExitCode, SpecError
from wheelflow.core.redaction import redact, redact_url
from wheelflow.source.gitauth import refuse_url_credentials


@pytest.fixture
def no_flow_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any flow run started fails the test: bad input must be refused before one exists."""

    def refuse(**_: object) -> None:
        raise AssertionError("a flow run was started for bad input")

    for module, name in (("wheelflow.flows.release", "release"), ("wheelflow.flows.backfill", "backfill")):
        monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(**{name: refuse}))


def one_line(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err + out
    return lines[0], out


TIME_OPTIONS = {
    "verify --timeout": ["verify", "x==1.0", "--index", "http://127.0.0.1:9/simple/", "--timeout"],
    "trigger --timeout": ["trigger", "release", "--wait", "--timeout"],
    "monitor --grace": ["monitor", "--repo", "r", "--project", "p", "--index", "local", "--grace"],
    "automations --running-limit": ["automations", "install", "--running-limit"],
}


@pytest.mark.case(
    "bad input",
    "a time option that is not a finite positive number",
    "exit 2, one line naming the option and the fix, nothing read (also under --json)",
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "1e400", "soon"])
@pytest.mark.parametrize("command", TIME_OPTIONS)
def test_time_options_are_finite_and_positive(
    command: str, value: str, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    argv = TIME_OPTIONS[command]
    if argv[-1] == "--grace" and value == "0":
        pytest.skip("a grace of 0 hours is meaningful: missing at once")
    argv = [*argv[:-1], f"{argv[-1]}={value}"]  # -inf would read as an option otherwise
    option = argv[-1].partition("=")[0]
    assert main(argv) == ExitCode.BAD_INPUT
    line, _ = one_line(capsys)
    assert line.startswith(f"wheelflow: error: usage error: {option}: {value!r} ")
    assert "fix:" in line
    assert main([*argv, "--json"]) == ExitCode.BAD_INPUT
    line, out = one_line(capsys)
    assert json.loads(out) == {"ok": False, "error": line.removeprefix("wheelflow: error: "), "exit_code": 2}


@pytest.mark.case(
    "bad input", "a spec timeout that is not finite", "one line naming the key and the fix; inf and nan refused"
)
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("targets.staging.verify-timeout", "inf"),
        ("targets.staging.verify-timeout", "nan"),
        ("targets.staging.verify-timeout", "-1.0"),
        ("targets.staging.verify-timeout", "1e12"),
        ("approval-timeout", "99999999999"),
        ("matrix.timeout", "inf"),
    ],
)
def test_spec_timeouts_are_finite_and_positive(tmp_path: Path, key: str, value: str) -> None:
    project = make_project(tmp_path / "p", index_url="http://127.0.0.1:9/simple/")
    text = (project / "pyproject.toml").read_text()
    if key.startswith("targets."):
        text = text.replace("verify-timeout = 5", f"verify-timeout = {value}")
    elif key == "matrix.timeout":
        text += f'\n[tool.wheelflow.matrix]\naxes = {{ python = ["3.11"] }}\ntimeout = {value}\n'
    else:
        text = text.replace("[tool.wheelflow]\n", f"[tool.wheelflow]\n{key} = {value}\n")
    (project / "pyproject.toml").write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(project)
    assert f"tool.wheelflow.{key}:" in str(err.value) and "fix:" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_deadline_is_never_infinite() -> None:
    for value in (float("inf"), float("nan"), -1.0):
        with pytest.raises(SpecError, match="timeout"):
            Deadline.after(value)


@pytest.mark.case("bad input", "--spec naming a directory", "exit 2, one line naming --spec and the fix")
@pytest.mark.parametrize("command", ["release", "matrix", "verify"])
def test_spec_option_must_be_a_file(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], home: Path, no_flow_run: None
) -> None:
    argv = {
        "release": ["release", str(REPO / "examples" / "hello-cuda"), "--spec", str(tmp_path)],
        "matrix": ["matrix", str(REPO / "examples" / "hello-cuda"), "--spec", str(tmp_path)],
        "verify": ["verify", "x==1.0", "--index", "staging", "--spec", str(tmp_path)],
    }[command]
    assert main(argv) == ExitCode.BAD_INPUT
    line, _ = one_line(capsys)
    assert f"--spec: '{tmp_path}' is a directory; fix:" in line


def read_only_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home folder that cannot be written: mode 0500, or for root (who writes anywhere) a file system
    that answers wheelflow's write check as a read-only mount would."""
    import os
    import tempfile

    home = tmp_path / "ro-home"
    home.mkdir()
    if os.geteuid() != 0:
        home.chmod(0o500)
    else:

        def read_only(*args: object, **kwargs: object) -> None:
            raise OSError(30, "Read-only file system", str(home / ".write-check-x"))

        monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    return home


@pytest.mark.case(
    "bad input",
    "WHEELFLOW_HOME cannot be written (a file, read-only)",
    "exit 2, one line naming the folder and the fix, before any flow run",
)
@pytest.mark.parametrize("where", ["the home is a file", "the home is under a file", "the home is read-only"])
def test_home_that_cannot_be_written_is_named(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_flow_run: None
) -> None:
    blocker = tmp_path / "blocker"
    if where == "the home is read-only":
        home = read_only_home(tmp_path, monkeypatch)
    else:
        blocker.write_text("")
        home = blocker if where == "the home is a file" else blocker / "home"
    monkeypatch.setenv("WHEELFLOW_HOME", str(home))
    project = make_project(tmp_path / "p")
    assert main(["release", str(project), "--json"]) == ExitCode.BAD_INPUT
    line, out = one_line(capsys)
    assert line.startswith(f"wheelflow: error: cannot write wheelflow's home {home} (")
    assert "fix:" in line and ("WHEELFLOW_HOME" in line)
    assert json.loads(out)["ok"] is False


@pytest.mark.case(
    "bad input",
    "a version option that is not PEP 440",
    "exit 2 naming the option, before any flow run exists",
)
@pytest.mark.parametrize(
    "command", ["release --version '1.0; rm -rf /'", "backfill --versions '1.0.0,$(id)'", "backfill --since latest"]
)
def test_version_is_validated_before_a_flow_run(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], home: Path, no_flow_run: None
) -> None:
    import shlex

    project = make_project(tmp_path / "p")
    words = shlex.split(command)
    argv = [words[0], str(project), *words[1:]]
    assert main(argv) == ExitCode.BAD_INPUT
    line, _ = one_line(capsys)
    option = argv[2]
    assert line.startswith(f"wheelflow: error: usage error: {option}: ")
    assert "is not a PEP 440 version; fix:" in line


CREDENTIAL_URLS = [
    ("https://user:hunter2pass@git.example.invalid/org/r.git", "hunter2pass"),
    ("https://ghp_tok3nvalue@git.example.invalid/org/r.git", "ghp_tok3nvalue"),
    ("git+https://ghp_tok3nvalue@git.example.invalid/org/r.git", "ghp_tok3nvalue"),
    ("git+ssh://git:hunter2pass@git.example.invalid/org/r.git", "hunter2pass"),
    ("https://git.example.invalid/org/r.git?token=qu3rytok3n", "qu3rytok3n"),
    ("https://git.example.invalid/org/r.git?ref=main&access_token=qu3rytok3n", "qu3rytok3n"),
    ("https://git.example.invalid/api/v4/r.git?private_token=qu3rytok3n#frag", "qu3rytok3n"),
    ("ghp_tok3nvalue@git.example.invalid:org/r.git", "ghp_tok3nvalue"),
    ("deploy:hunter2pass@git.example.invalid:org/r.git", "hunter2pass"),
]


@pytest.mark.case(
    "secret",
    "a credential in a git URL (userinfo, query token, scp form, git+ prefix)",
    "refused (exit 2) with the credential masked in the message",
)
@pytest.mark.parametrize("url", dict(CREDENTIAL_URLS))
def test_every_credential_form_in_a_url_is_refused_and_masked(
    url: str, capsys: pytest.CaptureFixture[str], home: Path, no_flow_run: None
) -> None:
    secret = dict(CREDENTIAL_URLS)[url]
    with pytest.raises(SpecError) as err:
        refuse_url_credentials(url)
    assert secret not in str(err.value) and "***" in str(err.value)
    assert secret not in redact_url(url)
    assert secret not in redact(f"fatal: unable to access '{url}': 403")
    assert main(["release", url, "--json"]) == ExitCode.BAD_INPUT
    out, err_text = capsys.readouterr()
    assert secret not in out + err_text and "PATH:" in err_text


@pytest.mark.parametrize(
    "url",
    [
        "git@git.example.invalid:org/r.git",
        "ssh://git@git.example.invalid/org/r.git",
        "https://git.example.invalid/org/r.git?ref=main",
        "/some/local/path",
    ],
)
def test_urls_without_credentials_pass_and_read_the_same(url: str) -> None:
    refuse_url_credentials(url)
    assert redact_url(url) == url
