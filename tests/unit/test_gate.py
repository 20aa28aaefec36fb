"""The pre-upload gate reads every entry of every archive: names that leave the install folder, links,
compression bombs (found by streaming, in bounded memory), and platform tags the binary does not honour."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from wheelcraft import make_sdist, make_wheel

from wheelflow.builds.sdists import unpack_sdist
from wheelflow.checks.audits import preflight
from wheelflow.core.distributions import describe
from wheelflow.core.errors import BuildError
from wheelflow.core.reproducible import normalise_sdist, normalise_wheel

GiB, MiB = 2**30, 2**20
BOMB_BYTES = GiB  # of zeros: deflate packs them about 1000:1
RSS_BOUND_KIB = 400 * 1024  # the child that reads the bomb stays under this (reading it whole takes GBs)
DIST_INFO = "tiny_pkg-1.0.0.dist-info"


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_with(tmp_path: Path, entries: dict[str, bytes], *, modes: dict[str, int] | None = None) -> Path:
    """A wheel of tiny_pkg holding ``entries`` besides its metadata, each listed in RECORD with its
    right hash (so only the gate's reading of the entries can refuse it); ``modes``: unix modes."""
    files = {
        "tiny_pkg/__init__.py": b"",
        f"{DIST_INFO}/METADATA": b"Metadata-Version: 2.1\nName: tiny-pkg\nVersion: 1.0.0\n",
        f"{DIST_INFO}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        **entries,
    }
    record = "".join(f"{name},{_digest(data)},{len(data)}\n" for name, data in files.items())
    path = tmp_path / "tiny_pkg-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (modes or {}).get(name, stat.S_IFREG | 0o644) << 16
            zf.writestr(info, data)
        zf.writestr(f"{DIST_INFO}/RECORD", record + f"{DIST_INFO}/RECORD,,\n")
    return path


def findings_of(path: Path) -> list[str]:
    """What fails the file (twine's warning about a missing long description does not)."""
    return [str(f) for f in preflight([describe(path)]) if not f.warning]


@pytest.mark.case(
    "bad input",
    "a wheel entry ../../x listed in RECORD with its right hash",
    "refused by the pre-upload gate naming the file, the entry and the fix",
)
def test_a_wheel_entry_climbing_out_is_refused_though_record_lists_it(tmp_path: Path) -> None:
    wheel = wheel_with(tmp_path, {"../../evil.pth": b"import os\n"})
    [finding] = findings_of(wheel)
    assert finding == (
        "tiny_pkg-1.0.0-py3-none-any.whl: [entry-path] entry '../../evil.pth' contains '..': installing it writes "
        "outside the install folder; fix: find what in the build names it so (a data_files, package_data or "
        "extension path that is absolute or climbs out with '..'); every entry must stay inside the install folder"
    )


@pytest.mark.case("bad input", "a wheel entry with an absolute path", "refused by the pre-upload gate naming the entry")
def test_an_absolute_wheel_entry_is_refused(tmp_path: Path) -> None:
    [finding] = findings_of(wheel_with(tmp_path, {"/tmp/abs.pth": b"x\n"}))
    assert "[entry-path] entry '/tmp/abs.pth' is an absolute path" in finding


@pytest.mark.case(
    "bad input", "a wheel entry that is a symbolic link", "refused by the pre-upload gate naming the entry"
)
def test_a_symlink_entry_is_refused(tmp_path: Path) -> None:
    wheel = wheel_with(tmp_path, {"tiny_pkg/passwd": b"/etc/passwd"}, modes={"tiny_pkg/passwd": stat.S_IFLNK | 0o777})
    [finding] = findings_of(wheel)
    assert finding.startswith(
        "tiny_pkg-1.0.0-py3-none-any.whl: [entry-link] entry 'tiny_pkg/passwd' is a symbolic link;"
    )


def test_a_good_wheel_and_sdist_pass_the_gate(tmp_path: Path) -> None:
    assert preflight([describe(make_wheel(tmp_path)), describe(make_sdist(tmp_path))]) == []


# ---- compression bombs: written by streaming, read by streaming ----


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, read in pieces (what tarfile copies a member from)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A wheel and an sdist of about 1 MB that each unpack to 1 GiB of zeros, written in 1 MiB blocks."""
    root = tmp_path_factory.mktemp("bombs")
    wheel = wheel_with(root, {})
    with zipfile.ZipFile(wheel, "a", compresslevel=1) as zf:
        info = zipfile.ZipInfo("tiny_pkg/zeros.bin")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as sink:
            block = bytes(MiB)
            for _ in range(BOMB_BYTES // MiB):
                sink.write(block)
    sdist = root / "tiny_pkg-1.0.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        pkg_info = b"Metadata-Version: 2.1\nName: tiny-pkg\nVersion: 1.0.0\n"
        info = tarfile.TarInfo("tiny_pkg-1.0.0/PKG-INFO")
        info.size = len(pkg_info)
        tf.addfile(info, io.BytesIO(pkg_info))
        info = tarfile.TarInfo("tiny_pkg-1.0.0/zeros.bin")
        info.size = BOMB_BYTES
        tf.addfile(info, _Zeros(BOMB_BYTES))
    assert wheel.stat().st_size < 2 * MiB and sdist.stat().st_size < 2 * MiB
    return {"wheel": wheel, "sdist": sdist}


def in_child(code: str, tmp_path: Path) -> tuple[str, int]:
    """Run ``code`` in a fresh interpreter; its output and its peak RSS in KiB (getrusage of the
    waited-for child, measured by a parent that runs nothing else)."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    measure = (
        "import resource, subprocess, sys; "
        "done = subprocess.run([sys.executable, sys.argv[1]], capture_output=True, text=True); "
        "print(done.stdout.strip() + done.stderr.strip()[-2000:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", measure, str(script)], capture_output=True, text=True, check=True)
    *said, rss = out.stdout.strip().splitlines()
    return "\n".join(said), int(rss)


@pytest.mark.case(
    "bad input",
    "a 1 MB zip-bomb wheel (1 GiB of zeros)",
    "refused by the gate and by normalisation in one line, reading it in bounded memory",
)
def test_a_zip_bomb_wheel_is_refused_in_bounded_memory(bombs: dict[str, Path], tmp_path: Path) -> None:
    wheel = shutil.copy(bombs["wheel"], tmp_path / bombs["wheel"].name)
    said, rss = in_child(
        f"""
        from pathlib import Path
        from wheelflow.checks.audits import preflight
        from wheelflow.core.distributions import describe
        for finding in preflight([describe(Path({str(wheel)!r}))]):
            print(finding)
        """,
        tmp_path,
    )
    assert re.match(
        r"tiny_pkg-1\.0\.0-py3-none-any\.whl: \[archive-size\] tiny_pkg/zeros\.bin unpacks past 10\d\.\d MB, "
        r"more than 100× the archive's 1\.\d MB \(a compression bomb\); fix: ",
        said,
    ), said
    assert len(said.splitlines()) == 1 and rss < RSS_BOUND_KIB

    said, rss = in_child(
        f"""
        from pathlib import Path
        from wheelflow.core.errors import BuildError
        from wheelflow.core.reproducible import normalise_wheel
        try:
            normalise_wheel(Path({str(wheel)!r}), 1772366400)
        except BuildError as exc:
            print(exc)
        """,
        tmp_path,
    )
    assert re.match(r"tiny_pkg-1\.0\.0-py3-none-any\.whl: tiny_pkg/zeros\.bin unpacks past 10\d\.\d MB", said), said
    assert rss < RSS_BOUND_KIB
    assert not list(tmp_path.glob(".*normalising*"))  # nothing half-written left beside it


@pytest.mark.case(
    "bad input",
    "a 1 MB tar.gz-bomb sdist (1 GiB of zeros)",
    "refused by the gate, normalisation and unpacking in one line, in bounded memory",
)
def test_a_tar_gz_bomb_sdist_is_refused_in_bounded_memory(bombs: dict[str, Path], tmp_path: Path) -> None:
    sdist = shutil.copy(bombs["sdist"], tmp_path / bombs["sdist"].name)
    [finding] = findings_of(sdist)
    assert re.match(
        r"tiny_pkg-1\.0\.0\.tar\.gz: \[archive-size\] tiny_pkg-1\.0\.0/zeros\.bin unpacks past 10\d\.\d MB, more "
        r"than 100× the archive's 1\.\d MB \(a compression bomb\)",
        finding,
    ), finding
    with pytest.raises(BuildError, match=r"^tiny_pkg-1\.0\.0\.tar\.gz: tiny_pkg-1\.0\.0/zeros\.bin unpacks past"):
        unpack_sdist(sdist, tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists()
    said, rss = in_child(
        f"""
        from pathlib import Path
        from wheelflow.core.errors import BuildError
        from wheelflow.core.reproducible import normalise_sdist
        try:
            normalise_sdist(Path({str(sdist)!r}), 1772366400)
        except BuildError as exc:
            print(exc)
        """,
        tmp_path,
    )
    assert re.match(r"tiny_pkg-1\.0\.0\.tar\.gz: the tar in it unpacks past 10\d\.\d MB, more than 100×", said), said
    assert rss < RSS_BOUND_KIB


def test_normalising_streams_and_keeps_every_byte(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, payload_size=3 * MiB + 17)
    before = {i.filename: i.CRC for i in zipfile.ZipFile(wheel).infolist()}
    assert normalise_wheel(wheel, 1772366400) is True
    assert {i.filename: i.CRC for i in zipfile.ZipFile(wheel).infolist()} == before
    assert preflight([describe(wheel)]) == []
    sdist = make_sdist(tmp_path)
    normalise_sdist(sdist, 1772366400)
    first = sdist.read_bytes()
    normalise_sdist(sdist, 1772366400)
    assert sdist.read_bytes() == first  # already normal: the same bytes again
    assert preflight([describe(sdist)]) == []


# ---- sdist members ----


def sdist_with(tmp_path: Path, member: tarfile.TarInfo) -> Path:
    path = tmp_path / "tiny_pkg-1.0.0.tar.gz"
    pkg_info = b"Metadata-Version: 2.1\nName: tiny-pkg\nVersion: 1.0.0\n"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("tiny_pkg-1.0.0/PKG-INFO")
        info.size = len(pkg_info)
        tf.addfile(info, io.BytesIO(pkg_info))
        tf.addfile(member, io.BytesIO(b"x") if member.isreg() else None)
    return path


def _member(name: str, *, link: str | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    if link is None:
        info.size = 1
    else:
        info.type, info.linkname = tarfile.SYMTYPE, link
    return info


@pytest.mark.case(
    "bad input",
    "an sdist with a ../, an absolute or an /etc/passwd-link member",
    "one line naming the member when unpacked for the build and at the gate, never a traceback",
)
@pytest.mark.parametrize(
    ("member", "gate_says"),
    [
        (
            _member("tiny_pkg-1.0.0/../../outside.txt"),
            "[entry-path] member 'tiny_pkg-1.0.0/../../outside.txt' contains '..'",
        ),
        (_member("/tmp/tiny_pkg-abs.txt"), "[entry-path] member '/tmp/tiny_pkg-abs.txt' is an absolute path"),
        (
            _member("tiny_pkg-1.0.0/passwd", link="/etc/passwd"),
            "[entry-link] member 'tiny_pkg-1.0.0/passwd' is a link to '/etc/passwd', outside the sdist",
        ),
    ],
)
def test_an_sdist_member_leaving_the_folder_is_one_line(
    tmp_path: Path, member: tarfile.TarInfo, gate_says: str
) -> None:
    sdist = sdist_with(tmp_path, member)
    [finding] = findings_of(sdist)
    assert finding.startswith(f"tiny_pkg-1.0.0.tar.gz: {gate_says}"), finding
    with pytest.raises(BuildError) as err:
        unpack_sdist(sdist, tmp_path / "unpacked")
    assert str(err.value) == (
        f"tiny_pkg-1.0.0.tar.gz: member {member.name!r} leaves the archive; fix: rebuild the sdist"
    )
    assert not Path("/tmp/tiny_pkg-abs.txt").exists() and not (tmp_path / "outside.txt").exists()


def test_an_sdist_link_inside_its_folder_passes_the_gate_and_unpacks(tmp_path: Path) -> None:
    sdist = sdist_with(tmp_path, _member("tiny_pkg-1.0.0/README", link="PKG-INFO"))
    assert findings_of(sdist) == []
    top = unpack_sdist(sdist, tmp_path / "unpacked")  # as pypa/build unpacked it before: the link kept
    assert (top / "README").is_symlink() and (top / "README").read_text().startswith("Metadata-Version")


# ---- platform tags: auditwheel's analysis ----

NEEDS_GLIBC_2_34 = "#include <pthread.h>\nstatic void *run(void *x) { return x; }\nint start(void) { pthread_t t; return pthread_create(&t, 0, run, 0); }\n"


def compiled_wheel(tmp_path: Path, platform: str) -> Path:
    """A cp311 wheel whose extension calls pthread_create, which glibc 2.34 and later version GLIBC_2.34."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no C compiler")  # the CI image installs build-essential
    source = tmp_path / "ext.c"
    source.write_text(NEEDS_GLIBC_2_34)
    library = tmp_path / "_ext.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True)
    glibc = subprocess.run(["ldd", "--version"], capture_output=True, text=True).stdout.splitlines()[0].split()[-1]
    if tuple(int(n) for n in glibc.split(".")[:2]) < (2, 34):
        pytest.skip(f"glibc {glibc} here versions pthread_create older than 2.34")
    tag = f"cp311-cp311-{platform}"
    wheel = make_wheel(tmp_path, tag=tag, extra_files={"tiny_pkg/_ext.so": library.read_bytes()})
    return wheel


@pytest.mark.case(
    "bad input",
    "a manylinux_2_17 wheel whose .so needs GLIBC_2.34",
    "refused by the pre-upload gate naming the .so, the symbol version and the tag auditwheel allows",
)
def test_a_platform_tag_the_binary_does_not_honour_is_refused(tmp_path: Path) -> None:
    wheel = compiled_wheel(tmp_path, "manylinux_2_17_x86_64.manylinux2014_x86_64")
    [found] = [str(f) for f in preflight([describe(wheel)]) if f.rule == "platform-tag"]  # one for both aliases
    assert found == (
        f"{wheel.name}: [platform-tag] tiny_pkg/_ext.so needs GLIBC_2.34 (libc.so.6), more than its tag "
        "manylinux_2_17_x86_64 promises (auditwheel: these symbol versions allow manylinux_2_34_x86_64 at best); "
        "pip installs it on older systems, where the import fails; fix: build it in a manylinux_2_17 image (older "
        "glibc and compilers), or tag it manylinux_2_34_x86_64 (auditwheel repair --plat manylinux_2_34_x86_64)"
    )

    (tmp_path / "honest").mkdir()
    honest = compiled_wheel(tmp_path / "honest", "manylinux_2_34_x86_64")
    assert [f for f in preflight([describe(honest)]) if f.rule == "platform-tag"] == []


def test_check_command_fails_on_a_traversal_entry(tmp_path: Path) -> None:
    from conftest import run_cli

    wheel = wheel_with(tmp_path, {"../../evil.pth": b"import os\n"})
    result = run_cli("check", str(wheel), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and [f["rule"] for f in report["findings"]] == ["entry-path"]
    result = run_cli("check", str(wheel))
    assert result.returncode == 1 and "passed" not in result.stdout
    assert result.stderr.strip().splitlines() == [
        "wheelflow: check: tiny_pkg-1.0.0-py3-none-any.whl: [entry-path] entry '../../evil.pth' contains '..': "
        "installing it writes outside the install folder; fix: find what in the build names it so (a data_files, "
        "package_data or extension path that is absolute or climbs out with '..'); every entry must stay inside the "
        "install folder"
    ]


def test_a_duplicate_entry_and_a_record_that_is_not_csv_are_one_finding_each(tmp_path: Path) -> None:
    wheel = wheel_with(tmp_path, {})
    with zipfile.ZipFile(wheel, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr(f"{DIST_INFO}/RECORD", "tiny_pkg/__init__.py,,0\n")  # a second RECORD: which one counts?
    assert findings_of(wheel) == [
        f"{wheel.name}: [entry-path] entry '{DIST_INFO}/RECORD' appears twice; installers keep one of them; fix: "
        "rebuild it"
    ]
    broken = tmp_path / "broken"
    broken.mkdir()
    wheel = make_wheel(broken)
    with zipfile.ZipFile(wheel) as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist()}
    entries[f"{DIST_INFO}/RECORD"] = b"tiny_pkg/__init__.py," + b"x" * 200_000 + b",1\n"  # over csv's field limit
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    [finding] = findings_of(wheel)
    assert finding.startswith(f"{wheel.name}: [record] {DIST_INFO}/RECORD is not valid CSV ("), finding


@pytest.mark.case(
    "bad input",
    "a wheel whose zip directory understates an entry's unpacked size",
    "refused: the gate reads the bytes themselves, never the sizes the archive declares",
)
def test_an_entry_whose_declared_size_lies_is_refused(tmp_path: Path) -> None:
    wheel = wheel_with(tmp_path, {})
    with zipfile.ZipFile(wheel, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tiny_pkg/zeros.bin", bytes(8 * MiB))
    data = bytearray(wheel.read_bytes())
    entry = data.rindex(b"PK\x01\x02")  # the last central directory record: zeros.bin's
    assert data[entry + 46 : entry + 46 + 18] == b"tiny_pkg/zeros.bin"
    data[entry + 24 : entry + 28] = (100).to_bytes(4, "little")  # "100 bytes unpacked"
    wheel.write_bytes(bytes(data))
    assert zipfile.ZipFile(wheel).getinfo("tiny_pkg/zeros.bin").file_size == 100
    [finding] = findings_of(wheel)
    assert finding.startswith(f"{wheel.name}: [archive] cannot be read (Bad CRC-32 for file 'tiny_pkg/zeros.bin')")
