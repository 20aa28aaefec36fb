"""``kind = "github-release"`` as the spec reads it: its keys, defaults and templates checked when the
spec is loaded (before any build), and its token read from the environment or a Secret block."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_project

from wheelflow.config.assetnames import DEFAULT_API_URL, DEFAULT_ASSET_URL, FLASH_ATTENTION_GUESSED_NAME
from wheelflow.config.spec import GitHubReleaseTarget, load_spec
from wheelflow.core.errors import CredentialsError, SpecError
from wheelflow.core.redaction import redact
from wheelflow.index.githubtarget import github_token

MATRIX = """
[tool.wheelflow.matrix]
axes = { python = ["3.11"], cuda = ["12.4"], torch = ["2.6.0"], cxx11abi = ["FALSE"] }
local-version = "cu{cuda_nodot}"
"""


def target_table(*lines: str) -> str:
    return "\n".join(["[tool.wheelflow.targets.gh]", 'kind = "github-release"', *lines]) + "\n"


def spec_error(tmp_path: Path, extra: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(make_project(tmp_path / "p", extra=extra))
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_follow_githubs_public_shape(tmp_path: Path) -> None:
    spec = load_spec(
        make_project(
            tmp_path / "p",
            extra=MATRIX
            + target_table('repository = "octo/flash"', f'guessed-name = "{FLASH_ATTENTION_GUESSED_NAME}"'),
        )
    )
    (target,) = spec.targets
    assert isinstance(target, GitHubReleaseTarget)
    assert (target.api_url, target.asset_url, target.tag, target.credentials) == (
        DEFAULT_API_URL,
        DEFAULT_ASSET_URL,
        "v{version}",
        "env",
    )
    assert target.page_name == "index.html" and target.add_to_published is False


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(
            [],
            'targets.gh.repository: missing; fix: set repository = "OWNER/REPO"',
            marks=pytest.mark.case(
                "bad input", "github-release target without repository", "one line: set repository = OWNER/REPO"
            ),
            id="missing-repository",
        ),
        pytest.param(
            ['repository = "octo/../admin"'],
            "targets.gh.repository: 'octo/../admin' is not a GitHub OWNER/REPO; fix:",
            marks=pytest.mark.case(
                "bad input",
                "github-release repository with '..' or a third segment (would name another API resource)",
                "one line naming repository and the OWNER/REPO form",
            ),
            id="repository-path",
        ),
        pytest.param(
            ['repository = "octo/flash"', 'guessed-name = "{name}-{version}+cu{cuda_mayor}.whl"'],
            "targets.gh.guessed-name: template '{name}-{version}+cu{cuda_mayor}.whl' names unknown placeholder "
            "{cuda_mayor}; fix: did you mean {cuda_major}?",
            marks=pytest.mark.case(
                "bad input",
                "github-release guessed-name with a misspelt placeholder",
                "refused when the spec is read, with did-you-mean and the known placeholders",
            ),
            id="guessed-name-typo",
        ),
        pytest.param(
            ['repository = "octo/flash"', 'asset-url = "https://dl.example/{repository}/{wheel}-{sm}"'],
            "targets.gh.asset-url: template 'https://dl.example/{repository}/{wheel}-{sm}' names unknown placeholder {sm}",
            marks=pytest.mark.case(
                "bad input", "github-release asset-url naming no matrix axis", "refused when the spec is read"
            ),
            id="asset-url-unknown",
        ),
        pytest.param(
            ['repository = "octo/flash"', 'credentials = "none"'],
            "targets.gh.credentials: GitHub needs a token to create a draft and upload assets; fix: remove it and "
            "export WHEELFLOW_GH_TOKEN",
            marks=pytest.mark.case(
                "bad input", "github-release target with credentials = none", "one line naming WHEELFLOW_<TARGET>_TOKEN"
            ),
            id="no-credentials",
        ),
        pytest.param(
            ['repository = "octo/flash"', 'token = "ghp_x"'],
            "targets.gh.token: credentials never go in the spec; fix: remove it and set WHEELFLOW_GH_TOKEN, or",
            marks=pytest.mark.case(
                "secret", "a GitHub token written into the spec", "refused, naming WHEELFLOW_<TARGET>_TOKEN instead"
            ),
            id="token-in-spec",
        ),
        pytest.param(
            ['repository = "octo/flash"', 'api-url = "https://user:pw@ghe.example/api/v3"'],
            "targets.gh.api-url: 'https://***@ghe.example/api/v3' is not a plain http(s) URL",
            marks=pytest.mark.case(
                "secret", "github-release api-url embedding credentials", "refused, the password redacted"
            ),
            id="api-url-credentials",
        ),
        pytest.param(
            ['repository = "octo/flash"', 'tag = "release"'],
            "targets.gh.tag: template 'release' must name {version} once",
            marks=pytest.mark.case("bad input", "github-release tag without {version}", "one line with an example"),
            id="tag-without-version",
        ),
    ],
)
def test_bad_github_release_keys_are_one_line_naming_the_key(tmp_path: Path, lines: list[str], expected: str) -> None:
    message = spec_error(tmp_path, MATRIX + target_table(*lines))
    assert expected in message, message


@pytest.mark.case(
    "bad input",
    "github-release guessed-name naming {torch_minor} while the matrix has no torch axis",
    "one line naming the axis it comes from and how to add it",
)
def test_a_derived_placeholder_needs_its_axis(tmp_path: Path) -> None:
    message = spec_error(
        tmp_path, target_table('repository = "octo/flash"', 'guessed-name = "{name}-{version}+torch{torch_minor}.whl"')
    )
    assert "names {torch_minor}, which comes from the 'torch' axis, and the matrix has none" in message


@pytest.mark.case(
    "bad input",
    "github-release target whose WHEELFLOW_<TARGET>_TOKEN is not set",
    "one line naming the variable, refused before any build",
)
def test_the_token_comes_from_the_environment_or_a_secret_block(monkeypatch: pytest.MonkeyPatch) -> None:
    target = GitHubReleaseTarget(name="gh", kind="github-release", repository="octo/flash")
    monkeypatch.delenv("WHEELFLOW_GH_TOKEN", raising=False)
    with pytest.raises(CredentialsError) as missing:
        github_token(target)
    assert "WHEELFLOW_GH_TOKEN is not set; fix: export WHEELFLOW_GH_TOKEN" in str(missing.value)
    monkeypatch.setenv("WHEELFLOW_GH_TOKEN", "ghp_fromTheEnvironment123")
    assert github_token(target) == "ghp_fromTheEnvironment123"
    assert "ghp_fromTheEnvironment123" not in redact("token ghp_fromTheEnvironment123")

    from_block = GitHubReleaseTarget(
        name="gh", kind="github-release", repository="octo/flash", credentials="prefect-secret:gh-token"
    )
    blocks = {"gh-token": '{"token": "ghp_fromABlock456"}'}
    assert github_token(from_block, blocks.__getitem__) == "ghp_fromABlock456"
    assert github_token(from_block, {"gh-token": "ghp_plain789"}.__getitem__) == "ghp_plain789"
    with pytest.raises(CredentialsError) as empty:
        github_token(from_block, {"gh-token": '{"user": "x"}'}.__getitem__)
    assert "must hold the GitHub token" in str(empty.value)
