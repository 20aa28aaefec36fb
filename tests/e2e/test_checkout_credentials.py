"""Git credentials never travel in URLs: a private repository on a real git server (git
http-backend behind Basic auth, on loopback) is cloned with credentials from the environment,
and the token shows in no process's command line, no file of the clone, no error."""

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
    "cloned through askpass: the token in no command line, .git/config or credential store",
)
def test_private_repository_is_cloned_with_credentials_from_the_environment_only(
    tmp_path: Path, server, git_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHEELFLOW_GIT_USERNAME", USER)
    monkeypatch.setenv("WHEELFLOW_GIT_PASSWORD", TOKEN)
    with CommandLines() as ps:
        # While git waits for the server's first authorised answer, ps takes a full round.
        server.on_authorised = ps.wait_for_full_round
        clone = checkout(server.repo_url, "v1.0.0", tmp_path / "wheelflow-home")

    assert (clone / "pyproject.toml").read_text().startswith("[project]")
    assert server.refused >= 1 and server.authorised >= 1  # the repository is private: auth was needed
    assert [c for c in ps.seen if TOKEN in c] == []
    assert any(c.startswith("git") and "/project.git" in c for c in ps.seen), (
        "ps sampled no git process during the clone"
    )
    stored = [p for p in (clone / ".git").rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert stored == []
    assert git(clone, "config", "--get", "remote.origin.url").strip() == server.repo_url
    assert not (git_home / ".git-credentials").exists()

    # A later run fetches into the same checkout, again through askpass.
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


def test_git_sees_no_terminal_and_no_inherited_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from wheelflow.core.credentials import Credentials
    from wheelflow.source.gitauth import git_env

    monkeypatch.setenv("WHEELFLOW_STAGING_PASSWORD", "staging-pw-not-for-git")
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_not-for-git")
    plain, with_credentials = git_env(None), git_env(Credentials(USER, TOKEN))
    assert plain["GIT_TERMINAL_PROMPT"] == "0" and "GIT_ASKPASS" not in plain
    assert "WHEELFLOW_STAGING_PASSWORD" not in with_credentials and "PREFECT_API_KEY" not in with_credentials
    assert with_credentials["WHEELFLOW_GIT_PASSWORD"] == TOKEN
    askpass = Path(with_credentials["GIT_ASKPASS"])
    assert TOKEN not in askpass.read_text() and os.access(askpass, os.X_OK)
    answers = [
        subprocess.run([str(askpass), prompt], capture_output=True, text=True, env=with_credentials).stdout
        for prompt in ("Username for 'http://127.0.0.1': ", "Password for 'http://releaser@127.0.0.1': ")
    ]
    assert answers == [f"{USER}\n", f"{TOKEN}\n"]


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
