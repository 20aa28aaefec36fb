"""Git credentials never travel in URLs or environments: a private repository on a real git server
(git http-backend behind Basic auth, on loopback) is cloned with credentials from the environment,
and the token shows in no process's command line or start environment (git's children included),
no file of the clone, no error."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import git
from gitserver import AuthGitServer

from wheelflow.core.errors import GitError, SpecError
from wheelflow.source.checkout import checkout

USER, TOKEN = "releaser", "ghp-t0ken-for-the-private-repo-5ecret"


def _private_repo(root: Path) -> str:
    """A bare repository ``project.git`` under ``root`` with one tagged commit; returns its path."""
    work = root / "work"
    work.mkdir(parents=True)
    (work / "pyproject.toml").write_text('[project]\nname = "private-pkg"\nversion = "1.0.0"\n')
    git(work, "init", "-q", "-b", "main")
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "release")
    git(work, "tag", "v1.0.0")
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / "project.git")], check=True)
    return "project.git"


@pytest.fixture
def server(tmp_path: Path):
    repos = tmp_path / "repos"
    name = _private_repo(repos)
    with AuthGitServer(repos, USER, TOKEN) as srv:
        srv.repo_url = srv.url + name  # type: ignore[attr-defined]
        yield srv


@pytest.fixture
def git_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME whose git configuration stores every credential it is given (credential.helper=store):
    wheelflow must switch helpers off so that nothing lands in ~/.git-credentials."""
    home = tmp_path / "user-home"
    home.mkdir()
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    monkeypatch.setenv("HOME", str(home))
    return home


def processes_showing(secret: str) -> tuple[list[str], list[str]]:
    """Every process's command line now, and those whose command line or start environment
    (/proc/PID/environ, as any process of the same user reads it) shows ``secret``."""
    seen, showing = [], []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        seen.append(cmdline)
        if secret.encode() in environ or secret in cmdline:
            showing.append(cmdline)
    return seen, showing


class EnvironmentSampler:
    """Reads every process's start environment while git waits for the server's authorised answer
    (``server.on_authorised``): git and all its children are alive then."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.showing: list[str] = []

    def __call__(self) -> None:
        seen, showing = processes_showing(TOKEN)
        self.seen += seen
        self.showing += showing


class CommandLines:
    """Samples every process's command line (/proc/*/cmdline), as `ps` shows them, in a thread."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.rounds = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                try:
                    self.seen.add((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:  # not a process, or it ended meanwhile
                    pass
            with self._changed:
                self.rounds += 1
                self._changed.notify_all()

    def wait_for_full_round(self) -> None:
        """Until one whole round of sampling has run from now (the caller's processes are in it)."""
        with self._changed:
            start = self.rounds
            assert self._changed.wait_for(lambda: self.rounds >= start + 2, timeout=30)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.case(
    "secret",
    "a private git repository cloned with WHEELFLOW_GIT_USERNAME/PASSWORD",
    "cloned through a credential helper reading an inherited pipe: the token in no command line, "
    "start environment (git-remote-http, index-pack included), .git/config or credential store",
)
def test_private_repository_is_cloned_with_credentials_from_the_environment_only(
    tmp_path: Path, server, git_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHEELFLOW_GIT_USERNAME", USER)
    monkeypatch.setenv("WHEELFLOW_GIT_PASSWORD", TOKEN)
    environments = EnvironmentSampler()
    with CommandLines() as ps:
        # While git waits for each authorised answer, ps takes a full round and every start
        # environment is read.
        server.on_authorised = lambda: (ps.wait_for_full_round(), environments())
        clone = checkout(server.repo_url, "v1.0.0", tmp_path / "wheelflow-home")

    assert (clone / "pyproject.toml").read_text().startswith("[project]")
    assert server.refused >= 1 and server.authorised >= 1  # the repository is private: auth was needed
    assert [c for c in ps.seen if TOKEN in c] == []
    assert environments.showing == []
    assert any("git-remote-http" in c for c in environments.seen), "no git-remote-http was sampled"
    assert any(c.startswith("git") and "/project.git" in c for c in ps.seen), (
        "ps sampled no git process during the clone"
    )
    stored = [p for p in (clone / ".git").rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert stored == []
    assert git(clone, "config", "--get", "remote.origin.url").strip() == server.repo_url
    assert not (git_home / ".git-credentials").exists()

    # A later run fetches into the same checkout, again through the helper.
    server.on_authorised = lambda: None
    authorised = server.authorised
    assert checkout(server.repo_url, "v1.0.0", tmp_path / "wheelflow-home") == clone
    assert server.authorised > authorised


@pytest.mark.parametrize("password", [None, "wrong-password"])
@pytest.mark.case(
    "secret",
    "a private git repository without credentials, or with wrong ones",
    "one-line GitError at once (no prompt), no password in it",
)
def test_missing_or_wrong_credentials_fail_without_prompting(
    tmp_path: Path, server, git_home: Path, monkeypatch: pytest.MonkeyPatch, password: str | None
) -> None:
    monkeypatch.delenv("WHEELFLOW_GIT_PASSWORD", raising=False)
    if password:
        monkeypatch.setenv("WHEELFLOW_GIT_PASSWORD", password)
    with pytest.raises(GitError) as raised:
        checkout(server.repo_url, None, tmp_path / "wheelflow-home")
    message = str(raised.value)
    assert "cannot clone" in message and "WHEELFLOW_GIT_PASSWORD" in message and "\n" not in message
    assert password is None or password not in message
    assert server.authorised == 0


@pytest.mark.parametrize(
    "url", ["http://releaser:{token}@127.0.0.1:9/project.git", "https://{token}@127.0.0.1:9/project.git"]
)
@pytest.mark.case(
    "secret", "a project git URL with user:token@ in it", "refused (spec error, exit 2) with the fix; token masked"
)
def test_url_with_credentials_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(SpecError) as raised:
        checkout(url.format(token=TOKEN), None, tmp_path / "wheelflow-home")
    message = str(raised.value)
    assert TOKEN not in message and "***@127.0.0.1:9" in message
    assert "WHEELFLOW_GIT_USERNAME" in message and "WHEELFLOW_GIT_PASSWORD" in message
    assert not (tmp_path / "wheelflow-home").exists()  # refused before anything was cloned


def test_ssh_user_name_alone_is_not_a_credential(tmp_path: Path) -> None:
    from wheelflow.source.gitauth import refuse_url_credentials

    refuse_url_credentials("ssh://git@127.0.0.1:9/project.git")
    refuse_url_credentials("git@127.0.0.1:project.git")
    with pytest.raises(SpecError):
        refuse_url_credentials(f"ssh://git:{TOKEN}@127.0.0.1:9/project.git")


def test_git_sees_no_terminal_and_no_secrets_in_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from wheelflow.core.credentials import Credentials
    from wheelflow.source.gitauth import credential_answer, git_command, git_env

    monkeypatch.setenv("WHEELFLOW_STAGING_PASSWORD", "staging-pw-not-for-git")
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_not-for-git")
    monkeypatch.setenv("WHEELFLOW_GIT_PASSWORD", TOKEN)
    env = git_env()
    assert env["GIT_TERMINAL_PROMPT"] == "0" and "GIT_ASKPASS" not in env
    assert not {"WHEELFLOW_STAGING_PASSWORD", "PREFECT_API_KEY", "WHEELFLOW_GIT_PASSWORD"} & set(env)
    assert TOKEN not in json.dumps(env)
    # git's own credential protocol answers from the pipe, once, and nothing is stored by the helper.
    read, write = os.pipe()
    os.write(write, credential_answer(Credentials(USER, TOKEN)))
    os.close(write)
    try:
        command = git_command(["credential", "fill"], read)
        assert TOKEN not in " ".join(command)
        fill = [
            subprocess.run(
                command,
                input="protocol=http\nhost=127.0.0.1\n\n",
                capture_output=True,
                text=True,
                env=env,
                pass_fds=(read,),
            )
            for _ in range(2)
        ]
    finally:
        os.close(read)
    assert fill[0].returncode == 0 and f"username={USER}\npassword={TOKEN}\n" in fill[0].stdout
    assert fill[1].returncode != 0 and TOKEN not in fill[1].stdout  # read once: the pipe is empty now


@pytest.mark.parametrize("bad", ["line\nbreak", "carriage\rreturn"])
@pytest.mark.case(
    "bad input",
    "WHEELFLOW_GIT_PASSWORD with a line break in it",
    "refused naming the variable: git's credential protocol would read a key of its own in it",
)
def test_a_password_with_a_line_break_is_refused(bad: str) -> None:
    from wheelflow.core.credentials import Credentials
    from wheelflow.source.gitauth import credential_answer

    with pytest.raises(SpecError) as raised:
        credential_answer(Credentials(USER, bad + "\nhost=elsewhere"))
    assert "WHEELFLOW_GIT_PASSWORD" in str(raised.value) and "elsewhere" not in str(raised.value)


@pytest.mark.case(
    "bad input",
    "WHEELFLOW_GIT_PASSWORD of 100 KB",
    "refused naming the variable, before git starts (the pipe would not take it unread)",
)
def test_a_password_too_long_for_the_pipe_is_refused() -> None:
    from wheelflow.core.credentials import Credentials
    from wheelflow.source.gitauth import run_git

    with pytest.raises(SpecError) as raised:
        run_git(["ls-remote", "http://127.0.0.1:9/x.git"], credentials=Credentials(USER, "x" * 100_000))
    assert "WHEELFLOW_GIT_PASSWORD" in str(raised.value) and "x" * 100 not in str(raised.value)


@pytest.mark.case(
    "secret",
    "`wheelflow monitor --repo` a private git repository, with WHEELFLOW_GIT_PASSWORD in its environment",
    "the running monitor (started over) and every git child (git-remote-http, index-pack) hold no "
    "secret in /proc/PID/environ; the tags are read",
)
def test_monitor_and_its_git_children_hold_no_secret_in_their_start_environment(
    tmp_path: Path, server, git_home: Path
) -> None:
    from conftest import run_cli

    environments = EnvironmentSampler()
    server.on_authorised = environments
    result = run_cli(
        "monitor",
        "--repo",
        server.repo_url,
        "--project",
        "private-pkg",
        "--index",
        "http://127.0.0.1:1/simple/",
        "--json",
        env={
            "WHEELFLOW_GIT_USERNAME": USER,
            "WHEELFLOW_GIT_PASSWORD": TOKEN,
            "WHEELFLOW_HOME": str(tmp_path / "home"),
            "HOME": str(git_home),
        },
    )
    assert server.authorised >= 1, result.stderr[-2000:]  # the credentials reached git
    assert TOKEN not in result.stdout + result.stderr
    monitors = [c for c in environments.seen if " monitor --repo " in c]
    assert monitors, "the monitor was not running while git fetched"
    assert any("git-remote-http" in c for c in environments.seen)
    assert environments.showing == []
    assert "Traceback" not in result.stderr


@pytest.mark.case(
    "secret",
    "release PATH or trigger --param project= is a git URL with a token in it",
    "exit 2 before any flow run exists: the token is in no parameter, output or error",
)
def test_release_of_a_url_with_credentials_is_refused_with_exit_2(tmp_path: Path) -> None:
    from conftest import run_cli

    result = run_cli("release", "https://releaser:ghp-secret-token-1234@127.0.0.1:9/p.git", "--json")
    assert result.returncode == 2
    assert "ghp-secret-token-1234" not in result.stdout + result.stderr
    assert "WHEELFLOW_GIT_PASSWORD" in result.stderr and json.loads(result.stdout)["ok"] is False


@pytest.mark.case(
    "secret",
    "a worker's pull step clones wheelflow's code from a private repository with the token block",
    "the token in no command line (Prefect's git_clone puts it in git's -c url...insteadOf) and no start environment",
)
def test_the_pull_step_s_clone_keeps_the_token_out_of_git_s_command_line(tmp_path: Path, git_home: Path) -> None:
    from wheelflow.source.checkout import clone_code
    from wheelflow.source.gitauth import TOKEN_USERNAME

    repos = tmp_path / "repos"
    name = _private_repo(repos)
    with AuthGitServer(repos, TOKEN_USERNAME, TOKEN) as srv:
        environments = EnvironmentSampler()
        srv.on_authorised = environments
        workdir = tmp_path / "worker"
        workdir.mkdir()
        clone = clone_code(srv.url + name, "v1.0.0", TOKEN, workdir)
        assert clone == workdir / "project-v1.0.0"
        assert (clone / "pyproject.toml").read_text().startswith("[project]")
        authorised = srv.authorised
        assert clone_code(srv.url + name, "v1.0.0", TOKEN, workdir) == clone  # a later run fetches again
        assert srv.authorised > authorised
        with pytest.raises(GitError) as missing:  # a ref that does not exist: git's reason, the token masked
            clone_code(srv.url + name, "mian", TOKEN, workdir)
    assert str(missing.value).startswith(f"Failed to clone repository '{srv.url + name}': git clone failed: ")
    assert "mian" in str(missing.value) and TOKEN not in str(missing.value)
    assert any(c.startswith("git") and "project.git" in c for c in environments.seen)
    assert environments.showing == []
    stored = [p for p in (clone / ".git").rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert stored == [] and not (git_home / ".git-credentials").exists()
