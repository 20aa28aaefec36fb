"""Craft real wheels and sdists byte by byte, so each audit rule can be broken on purpose."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path


def _metadata(
    name: str, version: str, requires: list[str], requires_python: str | None = None, description: bool = True
) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        "Summary: crafted by wheelflow's tests",
        *(["Description-Content-Type: text/markdown"] if description else []),
        *[f"Requires-Dist: {r}" for r in requires],
        *([f"Requires-Python: {requires_python}"] if requires_python else []),
    ]
    return "\n".join(lines) + ("\n\n# crafted\n\nA package made by the tests.\n" if description else "\n")


def make_wheel(
    directory: Path,
    name: str = "tiny_pkg",
    version: str = "1.0.0",
    tag: str = "py3-none-any",
    *,
    meta_version: str | None = None,
    requires: list[str] = (),
    filename: str | None = None,
    tamper: bool = False,
    payload_size: int = 0,
    requires_python: str | None = None,
    extra_files: dict[str, bytes] | None = None,
    description: bool = True,
) -> Path:
    """A wheel with a correct RECORD, unless ``tamper`` edits a file after RECORD was written.
    ``extra_files``: more members (e.g. compiled extensions), by path inside the wheel; ``description``
    False: METADATA without a long description (twine check warns)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"def answer():\n    return 42\n",
        f"{dist_info}/METADATA": _metadata(
            name, meta_version or version, list(requires), requires_python, description
        ).encode(),
        f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: wheelcraft\nRoot-Is-Purelib: true\nTag: {tag}\n".encode(),
    }
    if payload_size:
        files[f"{name}/payload.bin"] = bytes(payload_size)
    files.update(extra_files or {})
    record = io.StringIO()
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write(f"{path},sha256={digest},{len(data)}\n")
    record.write(f"{dist_info}/RECORD,,\n")
    if tamper:
        files[f"{name}/__init__.py"] = b"def answer():\n    return 41\n"
    path = directory / (filename or f"{name}-{version}-{tag}.whl")
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(f"{dist_info}/RECORD", record.getvalue())
    return path


def make_sdist(directory: Path, name: str = "tiny_pkg", version: str = "1.0.0", *, filename: str | None = None) -> Path:
    path = directory / (filename or f"{name}-{version}.tar.gz")
    root = path.name[: -len(".tar.gz")]
    with tarfile.open(path, "w:gz") as tf:
        for member, data in {
            f"{root}/PKG-INFO": _metadata(name, version, []).encode(),
            f"{root}/setup.py": b"raise SystemExit('crafted')\n",
        }.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
