"""The torch users get against the torch a wheel was built for (issue 34, item 1): the comparison, the
wording the report, checklist and run page show, the abi.users-torch key, and the report's flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_project

from wheelflow.checks.userstorch import torch_cuda, torch_release, users_torch_differs, users_torch_finding
from wheelflow.config.spec import load_spec
from wheelflow.core.errors import SpecError
from wheelflow.core.report import ReleaseReport

WHEEL = "torch_ext-0.1.0+cu130torch2141-cp311-cp311-manylinux_2_28_x86_64.whl"


def test_torch_releases_compare_without_their_local_label_or_cuda() -> None:
    assert torch_release("2.15.0+cu132 (CUDA 13.2)") == "2.15.0"
    assert torch_release("2.14.1") == "2.14.1"
    assert torch_release("2.13.0+cpu (CPU)") == "2.13.0"
    assert torch_release(None) is None and torch_release("") is None
    assert torch_cuda("2.15.0+cu132 (CUDA 13.2)") == "13.2"
    assert torch_cuda("2.13.0+cpu (CPU)") is None
    assert not users_torch_differs("2.14.1+cu130 (CUDA 13.0)", "2.14.1 (CUDA 13.0)")  # the same torch
    assert not users_torch_differs("2.14.1+cu130 (CUDA 13.0)", "2.14.1+cu128 (CUDA 12.8)")  # CUDA: not the release
    assert users_torch_differs("2.14.1+cu130 (CUDA 13.0)", "2.15.0+cu132 (CUDA 13.2)")
    assert users_torch_differs("2.14.0", "2.14.1+cu130 (CUDA 13.0)")  # a patch release counts
    # Nothing to compare: a project without torch, or a cell that recorded none.
    assert not users_torch_differs(None, "2.15.0+cu132 (CUDA 13.2)")
    assert not users_torch_differs("2.14.1", None)


def test_the_flag_names_what_users_get_what_it_was_built_for_and_the_fix() -> None:
    flag = users_torch_finding("torch-ext", WHEEL, "2.14.1+cu130 (CUDA 13.0)", "2.15.0+cu132 (CUDA 13.2)")
    assert flag is not None and flag.warning and flag.rule == "users-torch" and flag.filename == WHEEL
    assert flag.message == (
        "users who `pip install torch-ext` get torch 2.15.0 (CUDA 13.2); this wheel was built for 2.14.1; "
        "fix: pin torch==2.14.1 in the wheel's metadata (the project's install_requires or [project] "
        "dependencies), or publish a cell for torch 2.15.0 (a value of the matrix's torch axis); "
        'abi.users-torch = "same" makes this a failure'
    )
    assert users_torch_finding("torch-ext", WHEEL, "2.14.1+cu130 (CUDA 13.0)", "2.14.1+cu130 (CUDA 13.0)") is None


def test_users_torch_same_makes_the_flag_a_failure() -> None:
    refused = users_torch_finding("torch-ext", WHEEL, "2.14.0", "2.14.1+cu130 (CUDA 13.0)", "same")
    assert refused is not None and not refused.warning
    assert refused.message.startswith("users who `pip install torch-ext` get torch 2.14.1 (CUDA 13.0); this wheel")
    assert refused.message.endswith('; abi.users-torch = "same" refuses this ("flag" only warns)')


def test_users_torch_is_an_abi_key_that_flags_by_default(tmp_path: Path) -> None:
    assert load_spec(make_project(tmp_path / "default")).abi.users_torch == "flag"
    same = make_project(tmp_path / "same", extra='\n[tool.wheelflow.abi]\nusers-torch = "same"\n')
    assert load_spec(same).abi.users_torch == "same"


@pytest.mark.case("bad input", "abi.users-torch is neither flag nor same", "one line naming the key and the fix")
def test_an_unknown_users_torch_policy_is_refused_naming_the_key(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", extra='\n[tool.wheelflow.abi]\nusers-torch = "warn"\n')
    with pytest.raises(SpecError) as err:
        load_spec(project)
    assert str(err.value) == (
        "spec error: tool.wheelflow.abi.users-torch: unknown users-torch policy 'warn'; "
        'fix: use "flag" (the default: a warning) or "same" (a failure)'
    )


def test_the_report_shows_its_flags_in_json_and_at_the_top_of_the_run_page() -> None:
    report = ReleaseReport("p", "torch-ext", "0.1.0", ok=True)
    report.add("install + smoke on local", True, "installed it")
    flag = "users who `pip install torch-ext` get torch 2.15.0 (CUDA 13.2); this wheel was built for 2.14.1; fix: …"
    report.flags.append(flag)
    assert json.loads(json.dumps(report.to_json()))["flags"] == [flag]
    page = report.markdown()
    assert f"> ⚠️ {flag}" in page
    assert page.index(flag) < page.index("| file | target |")  # above the tables, where a person looks first
    assert "⚠️" not in ReleaseReport("p", "torch-ext", "0.1.0", ok=True).markdown()


def test_the_release_command_prints_each_flag_whole_before_its_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    from wheelflow.cli.release import print_report

    report = ReleaseReport("p", "torch-ext", "0.1.0", ok=True)
    flag = "users who `pip install torch-ext` get torch 2.15.0 (CUDA 13.2); this wheel was built for 2.14.1; fix: [pin]"
    report.flags.append(flag)
    print_report(report.to_json())
    out = capsys.readouterr().out
    assert f"warning: {flag}\n" in out  # whole, with its brackets: no markup
    assert out.index(flag) < out.index("released and verified")
