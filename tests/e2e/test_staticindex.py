"""The static index: written through fsspec, served by a real nginx (or moto's S3 behind nginx), read
by real pip and uv, and by wheelflow's own Simple API reader."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest
from webservers import MotoS3, Nginx
from wheelcraft import make_sdist, make_wheel

from wheelflow.config.staticlayout import check_layout
from wheelflow.core.distributions import describe, parse_filename
from wheelflow.core.errors import StaticIndexError, VerificationError
from wheelflow.index.simple_api import list_project_files
from wheelflow.index.staticindex import StaticIndexWrite, publish_static, rollback_static, subindex_for

UV = Path(sys.executable).with_name("uv")


def installer_env() -> dict[str, str]:
    """No inherited pip/uv configuration, no version check: only the index under test is asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1")
    return env


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def built(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "built"
    out.mkdir()
    return {
        "sm80": make_wheel(out, version="1.0.0+sm80", requires_python=">=3.9"),
        "sm90": make_wheel(out, version="1.0.0+sm90", requires_python=">=3.9"),
        # A newer wheel no interpreter here can run: resolvers must skip it from the page alone.
        "future": make_wheel(out, version="2.0.0+sm90", requires_python=">=3.99"),
        "sdist": make_sdist(out),
    }


@pytest.fixture
def served(tmp_path: Path):
    store = tmp_path / "store"
    with Nginx(tmp_path / "nginx", root=store) as nginx:
        yield store, nginx


def check_served(publication: StaticIndexWrite, client: httpx.Client) -> None:
    """Read every sub-index back at ``public_url`` with the Simple API reader: each file this run
    publishes is listed there with its sha256. Raises VerificationError naming the first that is not."""
    by_name = {f.filename: f for f in publication.files}
    for subindex, filenames in publication.listed.items():
        url = publication.simple_url(subindex)
        projects = {parse_filename(name)[0] for name in filenames}  # type: ignore[index]
        served = {s.filename: s for project in projects for s in list_project_files(client, url, project)}
        for name in filenames:
            found = served.get(name)
            if found is None:
                raise VerificationError(f"{url} does not list {name}; fix: check that public-url serves store-url")
            if found.sha256 != by_name[name].sha256:
                raise VerificationError(
                    f"{url} lists {name} with sha256 {found.sha256}, the built file's is "
                    f"{by_name[name].sha256}; fix: check what else writes to the store"
                )


def test_pip_and_uv_resolve_from_metadata_and_install_the_variant(built, served, tmp_path: Path) -> None:
    store, nginx = served
    pub = publish_static([describe(p) for p in built.values()], store_url=store.as_uri(), public_url=nginx.url)
    page = (store / "sm90" / "tiny-pkg" / "index.html").read_text()
    assert 'data-requires-python="&gt;=3.99"' in page  # HTML-escaped
    sidecar = store / "sm90" / "tiny-pkg" / (built["sm90"].name + ".metadata")
    assert sidecar.read_bytes().startswith(b"Metadata-Version: 2.1\nName: tiny_pkg\nVersion: 1.0.0+sm90")
    digest = hashlib.sha256(sidecar.read_bytes()).hexdigest()
    for attribute in ("data-core-metadata", "data-dist-info-metadata"):  # PEP 714, and PEP 658 for older clients
        assert f'{attribute}="sha256={digest}"' in page
    check_served(pub, httpx.Client())  # wheelflow's own Simple API reader, at the public URL

    index = pub.simple_url("sm90")
    nginx.clear_log()
    resolve = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--no-cache-dir",
            "--quiet",
            "--report",
            "-",
            "--index-url",
            index,
            "tiny-pkg",
        ],
        capture_output=True,
        text=True,
        env=installer_env(),
    )
    assert resolve.returncode == 0, resolve.stderr
    assert '"version": "1.0.0+sm90"' in resolve.stdout
    assert_resolved_from_metadata(nginx, built["sm90"].name)

    nginx.clear_log()
    compiled = subprocess.run(
        [str(UV), "pip", "compile", "--no-cache", "--index-url", index, "-"],
        input="tiny-pkg\n",
        capture_output=True,
        text=True,
        env=installer_env(),
    )
    assert compiled.returncode == 0, compiled.stderr
    assert "tiny-pkg==1.0.0+sm90" in compiled.stdout
    assert_resolved_from_metadata(nginx, built["sm90"].name)

    for installer in ("pip", "uv"):
        env_dir = tmp_path / f"venv-{installer}"
        venv.create(env_dir, with_pip=installer == "pip")
        python = env_dir / "bin" / "python"
        cmd = (
            [str(python), "-m", "pip", "install", "--no-cache-dir", "--quiet"]
            if installer == "pip"
            else [str(UV), "pip", "install", "--no-cache", "--quiet", "--python", str(python)]
        )
        proc = subprocess.run(
            [*cmd, "--index-url", index, "tiny-pkg"], capture_output=True, text=True, env=installer_env()
        )
        assert proc.returncode == 0, proc.stderr
        shown = subprocess.run(
            [
                str(python),
                "-c",
                "import importlib.metadata as m, tiny_pkg; print(m.version('tiny_pkg'), tiny_pkg.answer())",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert shown.stdout.split() == ["1.0.0+sm90", "42"], installer


def assert_resolved_from_metadata(nginx: Nginx, wheel: str) -> None:
    paths = [path for method, path, status in nginx.requests() if status == 200]
    assert any(p.endswith(".whl.metadata") and "1.0.0%2Bsm90" in p for p in paths), paths
    assert not [p for p in paths if p.endswith(".whl")], f"a wheel was downloaded to resolve: {paths}"
    assert not [p for p in paths if "2.0.0" in p], f"Requires-Python >=3.99 was not honoured from the page: {paths}"


def test_publishing_merges_with_what_is_listed_and_rollback_restores_every_byte(tmp_path: Path, served) -> None:
    store, nginx = served
    first = tmp_path / "first"
    first.mkdir()
    old = [describe(make_wheel(first, version="1.0.0+sm90")), describe(make_sdist(first))]
    publish_static(old, store_url=store.as_uri(), public_url=nginx.url)
    before = tree(store)

    second = tmp_path / "second"
    second.mkdir()
    new = [
        describe(make_wheel(second, version="1.1.0+sm90")),
        describe(make_wheel(second, version="1.1.0+sm80")),
        describe(make_sdist(second, version="1.1.0")),
    ]
    pub = publish_static(new, store_url=store.as_uri(), public_url=nginx.url)
    listed = {s.filename for s in _list(nginx.url + "/sm90/")}
    assert listed == {
        "tiny_pkg-1.0.0+sm90-py3-none-any.whl",
        "tiny_pkg-1.1.0+sm90-py3-none-any.whl",
        "tiny_pkg-1.0.0.tar.gz",
        "tiny_pkg-1.1.0.tar.gz",
    }
    assert "sm80" in pub.listed and "tiny_pkg-1.1.0+sm80-py3-none-any.whl" in pub.listed["sm80"]

    rollback_static(pub)
    assert tree(store) == before  # pages byte for byte, this run's files and sidecars gone, the others kept
    assert not (store / "sm80").exists() or not any((store / "sm80").rglob("*.*"))


def _list(simple_url: str):
    from wheelflow.index.simple_api import list_project_files

    with httpx.Client() as client:
        return list_project_files(client, simple_url, "tiny-pkg")


def test_a_rerun_writes_nothing_and_other_bytes_under_a_listed_name_are_refused(tmp_path: Path, built, served) -> None:
    store, nginx = served
    dists = [describe(p) for p in built.values()]
    publish_static(dists, store_url=store.as_uri(), public_url=nginx.url)
    before = tree(store)
    again = publish_static(dists, store_url=store.as_uri(), public_url=nginx.url)
    assert (again.added, again.pages) == ((), ())
    assert tree(store) == before

    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    other = describe(make_wheel(rebuilt, version="1.0.0+sm90", payload_size=10))
    with pytest.raises(StaticIndexError, match=r"already lists tiny_pkg-1.0.0\+sm90-py3-none-any.whl with sha256"):
        publish_static([other], store_url=store.as_uri(), public_url=nginx.url)
    assert tree(store) == before


def test_shared_files_at_the_root_only(tmp_path: Path, built, served) -> None:
    store, nginx = served
    pub = publish_static(
        [describe(built["sm90"]), describe(built["sdist"])],
        store_url=store.as_uri(),
        public_url=nginx.url,
        shared_files="root",
    )
    assert pub.listed == {"": ("tiny_pkg-1.0.0.tar.gz",), "sm90": ("tiny_pkg-1.0.0+sm90-py3-none-any.whl",)}
    assert {s.filename for s in _list(nginx.url + "/sm90/")} == {"tiny_pkg-1.0.0+sm90-py3-none-any.whl"}
    assert {s.filename for s in _list(nginx.url + "/")} == {"tiny_pkg-1.0.0.tar.gz"}
    assert b'<a href="tiny-pkg/">tiny-pkg</a>' in (store / "index.html").read_bytes()


def test_reading_back_catches_a_store_that_the_public_url_does_not_serve(tmp_path: Path, built, served) -> None:
    store, nginx = served
    elsewhere = tmp_path / "elsewhere"
    pub = publish_static([describe(built["sm90"])], store_url=elsewhere.as_uri(), public_url=nginx.url)
    with pytest.raises(VerificationError, match="does not list tiny_pkg-1.0.0"):
        check_served(pub, httpx.Client())


def test_s3_through_s3fs_to_moto_served_behind_nginx(tmp_path: Path, built) -> None:
    """moto's standalone server is the runnable S3 stand-in (no S3-compatible server binary installs here)."""
    import s3fs

    with MotoS3(tmp_path / "moto") as s3:
        s3.make_public_bucket("wheels")
        options = s3.storage_options()
        bucket = s3fs.S3FileSystem(**options, skip_instance_cache=True)
        with Nginx(tmp_path / "cdn", upstream=f"{s3.url}/wheels/whl") as cdn:
            first = publish_static(
                [describe(built["sm80"]), describe(built["sdist"])],
                store_url="s3://wheels/whl",
                public_url=cdn.url,
                storage_options=options,
            )
            before = {p: bucket.cat_file(p) for p in bucket.find("wheels/whl")}
            pub = publish_static(
                [describe(built["sm90"])], store_url="s3://wheels/whl", public_url=cdn.url, storage_options=options
            )
            check_served(first, httpx.Client())
            check_served(pub, httpx.Client())

            target = tmp_path / "venv"
            venv.create(target, with_pip=True)
            proc = subprocess.run(
                [
                    str(target / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--no-cache-dir",
                    "--quiet",
                    "--index-url",
                    pub.simple_url("sm90"),
                    "tiny-pkg",
                ],
                capture_output=True,
                text=True,
                env=installer_env(),
            )
            assert proc.returncode == 0, proc.stderr
            assert ("GET", "/sm90/tiny-pkg/tiny_pkg-1.0.0%2Bsm90-py3-none-any.whl", 200) in cdn.requests()

            rollback_static(pub, storage_options=options)
            bucket.invalidate_cache()
            assert {p: bucket.cat_file(p) for p in bucket.find("wheels/whl")} == before
            assert s3.secret not in repr(pub)

        with pytest.raises(
            StaticIndexError, match=r"s3://no-such-bucket/whl: it does not exist; fix: create the bucket"
        ):
            publish_static(
                [describe(built["sm80"])],
                store_url="s3://no-such-bucket/whl",
                public_url="https://example.invalid/",
                storage_options=options,
            )


def test_urls_with_credentials_and_bad_layouts_are_refused(tmp_path: Path, built) -> None:
    dists = [describe(built["sm90"])]
    with pytest.raises(StaticIndexError, match=r"store-url 's3://\*\*\*@bucket/whl' embeds credentials") as err:
        publish_static(
            dists, store_url="s3://AKIAEXAMPLE:very-secret@bucket/whl", public_url="https://example.invalid/"
        )
    assert "very-secret" not in str(err.value)
    with pytest.raises(StaticIndexError, match="public-url .* embeds credentials"):
        publish_static(dists, store_url=(tmp_path / "s").as_uri(), public_url="https://user:pw@example.invalid/")
    for layout in ("{cuda}", "../{local_version}", "/abs/{local_version}", "static"):
        with pytest.raises(StaticIndexError, match="layout"):
            check_layout(layout)
    with pytest.raises(StaticIndexError, match="shared-files"):
        publish_static(
            dists, store_url=(tmp_path / "s").as_uri(), public_url="https://example.invalid/", shared_files="all"
        )
    assert not (tmp_path / "s").exists()


def test_subindex_for() -> None:
    assert subindex_for("hello_cuda-0.1.0+sm90-cp311-cp311-manylinux_2_34_x86_64.whl", "{local_version}") == "sm90"
    assert subindex_for("torch-2.9.0+cu130-cp311-cp311-linux_x86_64.whl", "whl/{local_version}") == "whl/cu130"
    assert subindex_for("hello_cuda-0.1.0-cp311-cp311-manylinux_2_34_x86_64.whl", "{local_version}") == ""
    assert subindex_for("hello_cuda-0.1.0.tar.gz", "{local_version}") == ""
