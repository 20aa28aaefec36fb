"""`wheelflow check`: one-line findings for each crafted mismatch, exit non-zero, nothing uploaded."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import run_cli
from wheelcraft import make_sdist, make_wheel

from wheelflow.core.sizes import parse_size


def check(*args: str) -> tuple[int, list[str], dict]:
    result = run_cli("check", *args, "--json")
    return result.returncode, result.stderr.strip().splitlines(), json.loads(result.stdout)


def test_good_files_pass(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, tag="cp311-cp311-manylinux_2_28_x86_64", requires=["torch==2.5.1"])
    code, lines, report = check(
        str(wheel), str(make_sdist(tmp_path)), "--cell", "python=3.11", "--cell", "torch=2.5.1+cu124"
    )
    assert (code, lines, report["findings"], report["ok"]) == (0, [], [], True)


@pytest.mark.case("bad input", "a wheel whose filename version differs from its metadata", "refused naming the file")
def test_a_wheel_renamed_to_a_variant_keeps_its_old_metadata_version(tmp_path: Path) -> None:
    built = make_wheel(tmp_path)
    renamed = tmp_path / "tiny_pkg-1.0.0+cu130-py3-none-any.whl"
    shutil.move(built, renamed)
    code, lines, report = check(str(renamed))
    assert code == 1
    assert lines == [
        "wheelflow: check: tiny_pkg-1.0.0+cu130-py3-none-any.whl: [metadata-version] METADATA says Version '1.0.0', "
        "the filename says 1.0.0+cu130; pip rejects it as an inconsistent version; fix: rebuild with the version set "
        "(e.g. the local suffix) instead of renaming"
    ]
    assert [f["rule"] for f in report["findings"]] == ["metadata-version"]


def test_a_torch_pin_other_than_the_cells_torch(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, requires=["torch==2.4.0", "numpy>=1.24"])
    code, lines, _ = check(str(wheel), "--cell", "torch=2.5.1")
    assert code == 1
    assert lines == [
        "wheelflow: check: tiny_pkg-1.0.0-py3-none-any.whl: [axis-pin] Requires-Dist 'torch==2.4.0' but the cell built "
        "it against torch 2.5.1; users get ABI errors at import; fix: derive the pin from the build environment"
    ]


def test_a_wheel_tagged_for_another_interpreter_than_the_cells(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, tag="cp310-cp310-manylinux_2_28_x86_64")
    code, lines, _ = check(str(wheel), "--cell", "python=3.11")
    assert code == 1
    assert lines == [
        "wheelflow: check: tiny_pkg-1.0.0-cp310-cp310-manylinux_2_28_x86_64.whl: [python-tag] tags cp310-cp310 do not "
        "match the cell's Python 3.11; fix: build it with that interpreter"
    ]


def test_a_wheel_edited_after_its_record_was_written(tmp_path: Path) -> None:
    code, lines, _ = check(str(make_wheel(tmp_path, tamper=True)))
    assert code == 1
    assert lines == [
        "wheelflow: check: tiny_pkg-1.0.0-py3-none-any.whl: [record] tiny_pkg/__init__.py does not match its RECORD "
        "hash; fix: rebuild instead of editing the wheel"
    ]


def test_a_second_sdist_for_the_same_release(tmp_path: Path) -> None:
    first = make_sdist(tmp_path)
    second = make_sdist(tmp_path, filename="tiny-pkg-1.0.0.tar.gz")
    code, lines, _ = check(str(first), str(second))
    assert code == 1
    assert lines == [
        "wheelflow: check: tiny-pkg-1.0.0.tar.gz: [one-sdist] a second sdist for this version; "
        "indexes accept only one per release"
    ]


@pytest.mark.case(
    "bad input",
    "a +local version or a plain linux_x86_64 wheel for the public index",
    "refused before any upload, with the auditwheel hint",
)
def test_public_target_rules_local_version_and_plain_linux_tag(tmp_path: Path) -> None:
    variant = make_wheel(tmp_path, version="1.0.0+cu130", tag="cp311-cp311-linux_x86_64")
    code, lines, _ = check(str(variant), "--target", "pypi")
    assert code == 1
    assert [line.split("[")[1].split("]")[0] for line in lines] == ["local-version", "platform-tag"]
    assert "auditwheel repair" in lines[1]


def test_project_budget_counts_every_file_of_the_release(tmp_path: Path) -> None:
    spec = tmp_path / "release.toml"
    spec.write_text(
        'name = "tiny-pkg"\n[targets.staging]\nindex = "http://127.0.0.1:1/simple/"\nproject-budget = "50kB"\n'
    )
    files = [
        make_wheel(tmp_path, tag=f"cp3{m}-cp3{m}-manylinux_2_28_x86_64", payload_size=20_000) for m in (10, 11, 12)
    ]
    code, lines, _ = check(*map(str, files), "--spec", str(spec), "--target", "staging")
    assert code == 1
    assert (
        len(lines) == 1
        and "[project-budget] this release adds" in lines[0]
        and "over staging's project budget of 50.0 kB" in lines[0]
    )


@pytest.mark.case("bad input", "a file over the target's size limit", "refused naming the file and the limit")
def test_file_size_limit(tmp_path: Path) -> None:
    spec = tmp_path / "release.toml"
    spec.write_text('name = "tiny-pkg"\n[targets.prod]\nindex = "pypi"\nmax-file-size = "10kB"\n')
    code, lines, _ = check(str(make_wheel(tmp_path, payload_size=50_000)), "--spec", str(spec), "--target", "prod")
    assert code == 1
    assert lines == [
        "wheelflow: check: tiny_pkg-1.0.0-py3-none-any.whl: [file-size] 51.3 kB exceeds prod's limit of "
        "10.0 kB; fix: strip debug symbols, trim CUDA architectures, or ask the index for a larger limit"
    ]


@pytest.mark.parametrize(("text", "size"), [("100MB", 100 * 10**6), ("1 GiB", 2**30), ("512", 512), (2048, 2048)])
def test_sizes_are_read_as_users_write_them(text, size) -> None:
    assert parse_size(text) == size


LONG_NAME = "jit_pkg_with_a_name_long_enough_that_a_narrow_terminal_wraps_it"


@pytest.mark.case(
    "bad input",
    "metadata without a long description (twine check warns)",
    "passed with warnings, the filename quoted whole; checks.strict = true fails it",
)
def test_twine_warnings_are_warnings_unless_checks_are_strict(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, name=LONG_NAME, description=False)
    narrow = {"COLUMNS": "40"}  # the user's terminal: twine's lines must still not wrap the filename
    result = run_cli("check", str(wheel), env=narrow)
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"wheelflow: check: {wheel.name}: [twine-check] warning: "), line
    assert "`long_description` missing; the index accepts this" in line
    assert "passed with warnings" in result.stdout

    spec = tmp_path / "wheelflow.toml"
    spec.write_text(f'name = "{LONG_NAME}"\n\n[checks]\nstrict = true\n')
    strict = run_cli("check", str(wheel), "--spec", str(spec), "--json", env=narrow)
    findings = json.loads(strict.stdout)["findings"]
    assert strict.returncode == 1, strict.stderr
    assert [(f["filename"], f["rule"], f["severity"]) for f in findings] == [(wheel.name, "twine-check", "error")]
    assert "fix: add the metadata, or drop [tool.wheelflow.checks] strict = true" in findings[0]["message"]


def test_twine_output_wrapped_by_its_terminal_is_joined_whole() -> None:
    from wheelflow.core.distributions import twine_messages

    wrapped = (
        "Checking \ndist/jit_pkg-1.2.0-py3-non\n e-any.whl: \x1b[31mFAILED\x1b[0m\n"
        "\x1b[31mERROR   \x1b[0m `long_description` has syntax errors in markup\n"
        "         and would not be rendered.\n"
        "\x1b[33mWARNING \x1b[0m `long_description_content_type` missing.\n"
    )
    assert twine_messages(wrapped) == [
        ("ERROR", "`long_description` has syntax errors in markup and would not be rendered."),
        ("WARNING", "`long_description_content_type` missing."),
    ]


@pytest.mark.case("bad input", "a long description that does not render", "twine check's error fails, strict or not")
def test_twine_errors_still_fail(tmp_path: Path) -> None:
    from wheelflow.core.distributions import twine_check

    bad = _broken_rst_wheel(tmp_path)
    findings = twine_check([bad])
    assert [(f.rule, f.warning) for f in findings] == [("twine-check", False)], findings
    assert "fix: correct the package metadata" in findings[0].message


def _broken_rst_wheel(tmp_path: Path) -> Path:
    bad = make_wheel(tmp_path, name="broken_rst", description=False)
    with zipfile.ZipFile(bad) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    metadata = "broken_rst-1.0.0.dist-info/METADATA"
    members[metadata] = (
        members[metadata].rstrip(b"\n") + b"\nDescription-Content-Type: text/x-rst\n\n.. image::\n\n`unclosed\n"
    )
    with zipfile.ZipFile(bad, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return bad


def test_twine_check_of_many_files_at_once_names_each_finding_with_its_own_file(tmp_path: Path) -> None:
    """One twine process checks a chunk of files; each finding still belongs to its file, also after
    a file that stops twine (no archive at all), whose followers are checked again alone."""
    from wheelflow.core.distributions import twine_check

    good = [make_wheel(tmp_path, version=f"1.0.{n}") for n in range(3)]
    warned = make_wheel(tmp_path, name="no_description", description=False)
    broken = _broken_rst_wheel(tmp_path)
    not_a_zip = tmp_path / "tiny_pkg-9.9.9-py3-none-any.whl"
    not_a_zip.write_bytes(b"not a zip archive")
    files = [good[0], warned, broken, not_a_zip, *good[1:]]
    for chunk in (100, 2):  # all in one process, and chunks that split them
        findings = twine_check(files, chunk=chunk)
        rows = [(f.filename, f.warning) for f in findings]
        assert rows == [(warned.name, True), (broken.name, False), (not_a_zip.name, False)], (chunk, findings)
        assert "`long_description` missing" in findings[0].message
        assert "markup" in findings[1].message, findings[1]
        assert "not a zip file" in findings[2].message
        assert not any(str(tmp_path) in f.message for f in findings)
