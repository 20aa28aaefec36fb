"""The pre-upload gate in a release: a wheel entry that climbs out (listed in RECORD with its right hash)
stops the release before any upload, and an sdist member that leaves its folder stops the build in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_project, run_cli

# An in-tree PEP 517 backend that builds what a hostile or broken build backend would: a real sdist
# of the project, and a wheel whose RECORD is correct for every entry, the hostile one included.
BACKEND = """
import base64, hashlib, io, os, tarfile, zipfile

HOSTILE = {hostile!r}
NAME, VERSION = "tiny_pkg", "1.0.0"
META = (
    "Metadata-Version: 2.1\\nName: tiny-pkg\\nVersion: 1.0.0\\nSummary: hostile\\n"
    "Description-Content-Type: text/markdown\\n\\n# tiny-pkg\\n"
).encode()


def _digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_sdist(sdist_directory, config_settings=None):
    top = f"{{NAME}}-{{VERSION}}"
    with tarfile.open(os.path.join(sdist_directory, top + ".tar.gz"), "w:gz") as tf:
        for name in ("pyproject.toml", "hostile_backend.py", "README.md", "src/tiny_pkg/__init__.py"):
            tf.add(name, arcname=f"{{top}}/{{name}}")
        extra = {{"PKG-INFO": META}}
        if HOSTILE == "sdist-member":
            extra["../../outside.txt"] = b"written outside the unpack folder"
        for name, data in extra.items():
            info = tarfile.TarInfo(f"{{top}}/{{name}}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return top + ".tar.gz"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    info = f"{{NAME}}-{{VERSION}}.dist-info"
    files = {{
        "tiny_pkg/__init__.py": open("src/tiny_pkg/__init__.py", "rb").read(),
        f"{{info}}/METADATA": META,
        f"{{info}}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: hostile\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }}
    if HOSTILE == "wheel-entry":
        files["../../evil.pth"] = b"import os\\n"
    record = "".join(f"{{n}},{{_digest(d)}},{{len(d)}}\\n" for n, d in files.items()) + f"{{info}}/RECORD,,\\n"
    filename = f"{{NAME}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{{info}}/RECORD", record)
    return filename
"""


def hostile_project(root: Path, index_url: str, hostile: str) -> Path:
    project = make_project(root, index_url=index_url)
    (project / "hostile_backend.py").write_text(BACKEND.format(hostile=hostile))
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        text.replace(
            'requires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"',
            'requires = []\nbuild-backend = "hostile_backend"\nbackend-path = ["."]',
        )
    )
    assert "hostile_backend" in (project / "pyproject.toml").read_text()
    return project


def release_json(project: Path) -> tuple[int, dict, str]:
    result = run_cli("release", str(project), "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


@pytest.mark.case(
    "bad input",
    "a release whose wheel has an entry ../../evil.pth listed in RECORD with its right hash",
    "the release fails at the check step naming the entry; nothing is uploaded",
)
def test_a_wheel_entry_climbing_out_stops_the_release_before_any_upload(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    project = hostile_project(tmp_path / "proj", index.simple_url, "wheel-entry")
    code, report, stderr = release_json(project)
    assert code == 1, stderr[-3000:]
    assert report["error"].startswith(
        "built files fail their checks: tiny_pkg-1.0.0-py3-none-any.whl: [entry-path] entry '../../evil.pth' "
        "contains '..': installing it writes outside the install folder; fix: "
    ), report["error"]
    assert "Traceback" not in stderr
    assert list(index.packages.iterdir()) == []  # refused before the first upload


@pytest.mark.case(
    "bad input",
    "a release whose sdist has a member ../../outside.txt",
    "the build fails in one line naming the member, never OutsideDestinationError",
)
def test_an_sdist_member_leaving_its_folder_stops_the_build_in_one_line(
    tmp_path: Path, home: Path, index, index_credentials, prefect_api
) -> None:
    project = hostile_project(tmp_path / "proj", index.simple_url, "sdist-member")
    code, report, stderr = release_json(project)
    assert code == 1, stderr[-3000:]
    assert (
        "tiny_pkg-1.0.0.tar.gz: member 'tiny_pkg-1.0.0/../../outside.txt' leaves the archive; fix: rebuild the sdist"
        in (report["error"])
    ), report["error"]
    assert "OutsideDestinationError" not in stderr and "Traceback" not in stderr
    assert not list(home.rglob("outside.txt"))
    assert list(index.packages.iterdir()) == []
