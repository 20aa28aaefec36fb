"""The asset-url and guessed-name templates: the URL a project's setup.py guesses for one matrix cell."""

from __future__ import annotations

import pytest

from wheelflow.config.assetnames import (
    ASSET_URL_KEY,
    DEFAULT_ASSET_URL,
    FLASH_ATTENTION_GUESSED_NAME,
    GUESSED_NAME_KEY,
    check_repository,
    check_template,
    guessed_url,
    render,
)
from wheelflow.core.errors import ExitCode, SpecError

CELL = {"python": "3.12", "cuda": "12.8", "torch": "2.7.1", "cxx11abi": "true"}
RELEASE = {"repository": "Dao-AILab/flash-attention", "version": "2.8.3", "project": "flash-attn"}


def test_the_flash_attention_shape_renders_the_name_its_setup_py_guesses() -> None:
    name = render(FLASH_ATTENTION_GUESSED_NAME, GUESSED_NAME_KEY, CELL, **RELEASE)
    assert name == "flash_attn-2.8.3+cu12torch2.7cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"
    assert guessed_url(DEFAULT_ASSET_URL, FLASH_ATTENTION_GUESSED_NAME, {**CELL, "cxx11abi": "FALSE"}, **RELEASE) == (
        "https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.3/"
        "flash_attn-2.8.3+cu12torch2.7cxx11abiFALSE-cp312-cp312-linux_x86_64.whl"
    )


def test_axes_and_their_nodot_forms_are_placeholders_like_in_the_matrix() -> None:
    assert render("{name}-{version}+cu{cuda_nodot}-{py}.whl", GUESSED_NAME_KEY, CELL, **RELEASE) == (
        "flash_attn-2.8.3+cu128-cp312.whl"
    )
    assert render("{wheel}", ASSET_URL_KEY, CELL, wheel="x.whl", **RELEASE) == "x.whl"
    assert check_template(DEFAULT_ASSET_URL, ASSET_URL_KEY, ["python"]) == ["repository", "version", "wheel"]


@pytest.mark.case(
    "bad input",
    "a guessed-name template names an unknown placeholder ({torh_minor})",
    "exit 2, one line naming the key, the placeholder and 'did you mean {torch_minor}?'",
)
def test_an_unknown_placeholder_is_refused_with_did_you_mean() -> None:
    with pytest.raises(SpecError) as refused:
        render("{name}-{version}+torch{torh_minor}.whl", GUESSED_NAME_KEY, CELL, **RELEASE)
    message = str(refused.value)
    assert message.startswith(
        "spec error: guessed-name: template '{name}-{version}+torch{torh_minor}.whl' names unknown placeholder "
        "{torh_minor}; fix: did you mean {torch_minor}? known placeholders: {repository}, {version}"
    )
    assert "\n" not in message and refused.value.exit_code == ExitCode.BAD_INPUT


@pytest.mark.case(
    "bad input",
    "a guessed-name template uses {cuda_major} but the matrix has no cuda axis",
    "exit 2, one line naming the axis it comes from and how to add it",
)
def test_a_derived_placeholder_without_its_axis_names_the_axis() -> None:
    with pytest.raises(SpecError) as refused:
        check_template(FLASH_ATTENTION_GUESSED_NAME, GUESSED_NAME_KEY, ["python", "torch", "cxx11abi"])
    assert str(refused.value) == (
        "spec error: guessed-name: template '{name}-{version}+cu{cuda_major}torch{torch_minor}cxx11abi{cx'... "
        "(94 characters) names {cuda_major}, which comes from the 'cuda' axis, and the matrix has none; fix: add a "
        "cuda axis to [tool.wheelflow.matrix] axes, or write the value into the template"
    )


@pytest.mark.case(
    "bad input",
    "an asset-url template with a format spec or conversion ({version:>99999})",
    "exit 2, one line: fields are plain names",
)
def test_a_format_spec_is_refused() -> None:
    with pytest.raises(SpecError) as refused:
        check_template("{version:>99999}", ASSET_URL_KEY, [])
    assert "fields are plain names" in str(refused.value) and str(refused.value).startswith("spec error: asset-url:")


@pytest.mark.case(
    "bad input",
    "a cxx11abi axis value that is neither true nor false ('maybe')",
    "exit 2, one line naming the axis and the values it takes",
)
def test_a_cxx11abi_value_that_is_no_boolean_is_refused() -> None:
    with pytest.raises(SpecError) as refused:
        render(FLASH_ATTENTION_GUESSED_NAME, GUESSED_NAME_KEY, {**CELL, "cxx11abi": "maybe"}, **RELEASE)
    assert str(refused.value) == (
        "spec error: guessed-name (axis cxx11abi): value 'maybe' is neither true nor false; "
        'fix: give the cxx11abi axis values such as ["TRUE", "FALSE"]'
    )


@pytest.mark.case(
    "bad input",
    "a GitHub repository that is not OWNER/REPO ('octo', 'a/b/c', 'octo/..')",
    "exit 2, one line naming the key and an example",
)
def test_a_repository_that_is_not_owner_slash_repo_is_refused() -> None:
    assert check_repository("Dao-AILab/flash-attention", "repository") == "Dao-AILab/flash-attention"
    for bad in ("octo", "octo/flash/extra", "octo/..", "-octo/flash", "octo/fl ash", 3):
        with pytest.raises(SpecError) as refused:
            check_repository(bad, "targets.github.repository")
        assert str(refused.value) == (
            f"spec error: targets.github.repository: {str(bad)!r} is not a GitHub OWNER/REPO; "
            'fix: write e.g. repository = "Dao-AILab/flash-attention"'
        )
        assert refused.value.exit_code == ExitCode.BAD_INPUT
