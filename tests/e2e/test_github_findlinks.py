"""What users of a GitHub-releases project run, against the stand-in GitHub (tests/githubstub.py; GitHub
itself cannot be reached from these machines, the stand-in follows REST API version 2022-11-28):
``pip install --find-links PAGE`` and ``uv pip install --find-links PAGE`` from a page published as a
release asset, and the URL a project's setup.py guesses for one cell, proven to serve that cell's bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from githubstub import TOKEN, GitHubStub
from wheelcraft import make_wheel

from wheelflow.config.assetnames import guessed_url
from wheelflow.core.deadline import Deadline
from wheelflow.core.errors import ReleaseAssetError
from wheelflow.index.findlinks import PAGE_NAME, Link, find_links_page
from wheelflow.index.githubreleases import GitHubReleases, file_sha256

UV = Path(sys.executable).with_name("uv")
REPO = "octo/tiny"
VERSION = "1.0.0"
GUESSED_NAME = "{name}-{version}+cu{cuda_major}-py3-none-any.whl"


def installer_env() -> dict[str, str]:
    """No inherited pip/uv configuration, no version check: only the page under test is asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1")
    return env


@pytest.fixture
def published(tmp_path: Path):
    """Two variant wheels and their find-links page as assets of a release published after all three."""
    built = tmp_path / "built"
    built.mkdir()
    wheels = {cuda: make_wheel(built, version=f"{VERSION}+cu{cuda}") for cuda in ("12", "13")}
    with GitHubStub(REPO) as stub:
        gh = GitHubReleases(
            REPO, TOKEN, api_url=stub.api_url, uploads_url=stub.uploads_url, deadline=Deadline.after(300)
        )
        release, _ = gh.draft_for_tag(f"v{VERSION}")
        assets = [gh.upload(release, path).asset for path in wheels.values()]
        page = tmp_path / PAGE_NAME
        page.write_bytes(
            find_links_page(
                f"tiny-pkg {VERSION}", [Link(a.name, a.browser_download_url, a.digest or "") for a in assets]
            )
        )
        page_asset = gh.upload(release, page).asset
        for asset, path in zip([*assets, page_asset], [*wheels.values(), page], strict=True):
            gh.prove(asset, file_sha256(path))
        gh.publish(release)
        yield stub, gh, wheels, page_asset.browser_download_url
        for seen in stub.seen:
            assert TOKEN not in seen.target and (seen.host in ("api", "uploads") or seen.authorization is None)


def test_pip_and_uv_install_the_asked_variant_from_the_find_links_page(published, tmp_path: Path) -> None:
    stub, _gh, _wheels, page_url = published
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
            [*cmd, "--no-index", "--find-links", page_url, f"tiny-pkg=={VERSION}+cu13"],
            capture_output=True,
            text=True,
            env=installer_env(),
        )
        assert proc.returncode == 0, proc.stderr
        shown = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('tiny_pkg'))"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert shown.stdout.split() == [f"{VERSION}+cu13"], installer
    downloads = [s.target for s in stub.seen if s.host == "download"]
    assert any(t.endswith("%2Bcu13-py3-none-any.whl") for t in downloads)
    assert not any(t.endswith("%2Bcu12-py3-none-any.whl") for t in downloads)


@pytest.mark.case(
    "fault",
    "GitHub release: the URL a project's setup.py guesses for a cell answers 404 (no such asset)",
    "one line naming the URL users would have gotten a 404 from, with the fix",
)
def test_each_cells_guessed_url_serves_that_cells_bytes_and_a_miss_names_the_url(published) -> None:
    stub, gh, wheels, _page = published
    asset_url = stub.download_url + "/{repository}/releases/download/v{version}/{wheel}"
    for cuda, path in wheels.items():
        url = guessed_url(
            asset_url, GUESSED_NAME, {"cuda": f"{cuda}.0"}, repository=REPO, version=VERSION, project="tiny-pkg"
        )
        assert gh.download_url_sha256(url) == file_sha256(path)
    missing = guessed_url(
        asset_url, GUESSED_NAME, {"cuda": "11.8"}, repository=REPO, version=VERSION, project="tiny-pkg"
    )
    with pytest.raises(ReleaseAssetError) as missed:
        gh.download_url_sha256(missing)
    message = str(missed.value)
    assert message.startswith(f"cannot download {missing}: HTTP 404; fix:") and "\n" not in message
