"""A token in a URL's query (``?token=``) or fragment (``#token=``) is never printed (issue 32, item 2):
index URLs that carry one are refused in one line with the fix (exit 2, also under --json), git URLs
too, and every message masks it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_project, run_cli

from wheelflow.config.spec import load_spec
from wheelflow.core.errors import SpecError
from wheelflow.core.redaction import redact, redact_url

TOKEN = "SEKRIT-9f3a7c"


@pytest.mark.case(
    "secret",
    "`verify x==1 --index 'http://h/simple/?token=…'` (or `#token=…`), with and without --json",
    "refused, exit 2, in one line with the fix; the token in no output",
)
@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("where", ["?token=", "#token=", "?x=1&access_token="])
def test_an_index_url_with_a_token_in_its_query_or_fragment_is_refused(home: Path, where: str, as_json: bool) -> None:
    url = f"http://127.0.0.1:1/simple/{where}{TOKEN}"
    result = run_cli("verify", "x==1", "--index", url, *(["--json"] if as_json else []), timeout=120)
    assert result.returncode == 2
    assert TOKEN not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--index" in lines[0] and "carries a credential in the" in lines[0]
    assert "fix: give the Simple API URL alone" in lines[0] and "credentials" in lines[0]
    if as_json:
        answer = json.loads(result.stdout)
        assert answer["ok"] is False and answer["exit_code"] == 2


@pytest.mark.case(
    "bad input",
    "`verify --index` a Simple API URL with a query that is no credential (?x=1)",
    "refused, exit 2: the project's path cannot follow a query",
)
def test_an_index_url_with_any_query_is_refused(home: Path) -> None:
    result = run_cli("verify", "x==1", "--index", "http://127.0.0.1:1/simple/?x=1", "--json", timeout=120)
    assert result.returncode == 2 and "has a query or fragment" in json.loads(result.stdout)["error"]


@pytest.mark.case(
    "secret",
    "a spec target whose index URL carries ?token=… or #token=…",
    "spec error naming the key, the token not echoed",
)
@pytest.mark.parametrize("where", ["?token=", "#token="])
def test_a_target_index_with_a_token_in_its_query_is_refused(tmp_path: Path, where: str) -> None:
    project = make_project(
        tmp_path / "p", extra=f'\n[tool.wheelflow.targets.prod]\nindex = "https://127.0.0.1:9/simple/{where}{TOKEN}"\n'
    )
    with pytest.raises(SpecError) as err:
        load_spec(project)
    assert "targets.prod.index" in str(err.value) and "carries a credential" in str(err.value)
    assert TOKEN not in str(err.value)


@pytest.mark.case(
    "secret",
    "`release` or `monitor --repo` a git URL with #token=… in its fragment",
    "refused, exit 2, the token in no output",
)
@pytest.mark.parametrize("command", ["release", "monitor"])
def test_a_git_url_with_a_token_in_its_fragment_is_refused(home: Path, command: str) -> None:
    url = f"https://127.0.0.1:9/p.git#token={TOKEN}"
    argv = [url] if command == "release" else ["--repo", url, "--project", "p", "--index", "http://127.0.0.1:1/simple/"]
    result = run_cli(command, *argv, "--json", timeout=120)
    assert result.returncode == 2
    assert TOKEN not in result.stdout + result.stderr
    assert "a credential in the fragment" in result.stderr


@pytest.mark.parametrize(
    "text",
    [
        f"cannot read https://h/simple/#token={TOKEN}",
        f"git says: fatal: https://h/p.git#access_token={TOKEN} not found",
        f"https://h/simple/?x=1&token={TOKEN}#frag",
    ],
)
def test_query_and_fragment_tokens_are_masked_in_every_message(text: str) -> None:
    assert TOKEN not in redact(text)
    url = next(word for word in text.split() if "://" in word)
    assert TOKEN not in redact_url(url) and redact_url(url).startswith("https://h/")
