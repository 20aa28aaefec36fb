"""The install command a release ends with (issue 34, item 3): what a user pastes."""

from __future__ import annotations

import zipfile
from pathlib import Path

from wheelflow.core.report import ReleaseReport
from wheelflow.proof.installchecks import needs_dependencies, user_install_command


def wheel(path: Path, *requires: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        lines = [
            "Metadata-Version: 2.1",
            "Name: tiny-pkg",
            "Version: 1.0.0",
            *(f"Requires-Dist: {r}" for r in requires),
        ]
        zf.writestr("tiny_pkg-1.0.0.dist-info/METADATA", "\n".join(lines) + "\n")
    return path


def test_the_dependency_index_is_added_only_where_the_release_requires_other_projects(tmp_path: Path) -> None:
    alone = wheel(tmp_path / "tiny_pkg-1.0.0-py3-none-any.whl", 'pytest; extra == "test"')
    assert not needs_dependencies([alone, tmp_path / "tiny_pkg-1.0.0.tar.gz"])
    local = "http://127.0.0.1:4301/simple/"
    assert user_install_command("tiny-pkg", "1.0.0", local, "https://deps.example/simple/", False) == (
        "pip install --index-url http://127.0.0.1:4301/simple/ tiny-pkg==1.0.0"
    )
    (tmp_path / "other").mkdir()
    assert needs_dependencies([wheel(tmp_path / "other" / "tiny_pkg-1.0.0-py3-none-any.whl", "numpy>=2")])
    assert user_install_command("tiny-pkg", "1.0.0", local, "https://deps.example/simple/", True) == (
        "pip install --index-url http://127.0.0.1:4301/simple/ --extra-index-url https://deps.example/simple/ "
        "tiny-pkg==1.0.0"
    )
    # dependencies = "none": nothing to add; the target is the dependency index itself: nothing either
    assert "--extra-index-url" not in user_install_command("tiny-pkg", "1.0.0", local, None, True)
    assert "--extra-index-url" not in user_install_command("tiny-pkg", "1.0.0", local, local, True)


def test_the_report_ends_with_the_install_command_once_released() -> None:
    report = ReleaseReport(project="p", name="tiny-pkg", version="1.0.0", ok=True)
    report.install.append("pip install --index-url http://127.0.0.1:4301/simple/ tiny-pkg==1.0.0")
    assert (
        report.markdown()
        .rstrip()
        .endswith("## Install\n\n```\npip install --index-url http://127.0.0.1:4301/simple/ tiny-pkg==1.0.0\n```")
    )
    assert report.to_json()["install"] == report.install
    report.ok = False  # a failed release offers nothing to install
    assert "## Install" not in report.markdown()
