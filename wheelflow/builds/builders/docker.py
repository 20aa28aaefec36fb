"""The Docker builder: one container per cell, from the cell's pinned image, with the Docker SDK.

The source is mounted read-only and copied inside; the wheel comes out through a bind mount; the
requirements are installed by a container with network, and the compile runs in one without
(``build.network = true`` keeps the image's own isolated build, with network);
container output is streamed line by line to the task log; every 30 s a progress line names the compile
units running in the build container at that moment (read from its processes, as the local builder
does, not from its buffered output). Every container carries wheelflow's
labels, is removed after success, failure or timeout, and ``remove_containers`` clears whatever a
cancelled run left behind.
"""

from __future__ import annotations

import shlex
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wheelflow.builds.buildenv import (
    BACKEND_ASKS_MORE,
    BACKEND_REQUIRES_PROBE,
    PLANNED_OTHER,
    PLANNED_VERSION_PROBE,
    BuildSetup,
    backend_requires,
    planned_line,
    refuse_other_version,
    requirements_for,
)
from wheelflow.builds.builders import (
    FAILED,
    PASSED,
    SKIPPED,
    BatchedLog,
    Log,
    Progress,
    SmokeResult,
    SmokeSetup,
    commands_under,
)
from wheelflow.builds.building import first_error_line
from wheelflow.builds.repair import RepairedWheel, repair_command, repair_wheel, shown
from wheelflow.config.matrix import Cell
from wheelflow.config.repairoptions import RepairOptions
from wheelflow.config.spec import HOST_CA_BUNDLE, DockerOptions
from wheelflow.core.childenv import container_env
from wheelflow.core.errors import BuildError, CellUnbuildable, InfrastructureError
from wheelflow.core.redaction import LineRedactor
from wheelflow.core.reproducible import prefix_map_env

MANAGED_LABEL = "org.wheelflow.managed"
# The build in two containers (build.network = false): requirements installed with network into an
# environment under /out, the compile in a container without network. The second first asks the
# backend what more it needs and stops with BACKEND_ASKS_MORE, naming it in BACKEND_REQUIRES, when
# that is not installed yet.
BUILD_ENV = "/out/.wheelflow-build-env"
BACKEND_REQUIRES = ".wheelflow-backend-requires"  # in the cell's output folder, /out in the container
PLANNED_VERSION = ".wheelflow-planned-version"  # the version the build will produce, ditto
OFFLINE_REQUIREMENTS = (
    f"set -eu; /opt/wheelflow/bin/python -m venv {BUILD_ENV} && "
    f"{BUILD_ENV}/bin/pip install --quiet --disable-pip-version-check -r /out/.wheelflow-build-requirements.txt"
)
OFFLINE_BUILD = (
    "set -eu; mkdir -p /tmp/src; cd /src && tar --exclude=./.git --exclude=./build --exclude=./dist "
    "--exclude=./.wheelflow -cf - . | tar -C /tmp/src -xf - && "
    f"{BUILD_ENV}/bin/python -c {shlex.quote(BACKEND_REQUIRES_PROBE)} /tmp/src wheel > /out/{BACKEND_REQUIRES} && "
    # the version the build will produce, before the compile: another one than WHEELFLOW_VERSION stops
    # here (a probe that fails otherwise leaves the verdict to the build and the checks of its files)
    f"{{ {BUILD_ENV}/bin/python -c {shlex.quote(PLANNED_VERSION_PROBE)} /tmp/src /tmp/.wheelflow-metadata "
    f'"${{WHEELFLOW_VERSION:-}}" > /out/{PLANNED_VERSION} || [ $? -ne {PLANNED_OTHER} ] || exit {PLANNED_OTHER}; }} && '
    f"exec {BUILD_ENV}/bin/python -m build --wheel --no-isolation --outdir /out /tmp/src"
)
RUN_LABEL = "org.wheelflow.run"
CELL_LABEL = "org.wheelflow.cell"
ROLE_LABEL = "org.wheelflow.role"  # "build", "repair" or "smoke"
CONTAINER_CUDA = "/usr/local/cuda"
CONTAINER_BUILD_DIR = "/tmp/src"  # where build-cell.sh copies the read-only /src and builds: one path everywhere
# The builder image's own auditwheel and patchelf (wheelflow/builds/dockerfiles/builder.Dockerfile).
CONTAINER_AUDITWHEEL = ("/opt/wheelflow/bin/auditwheel",)
CONTAINER_PATH = "/opt/wheelflow/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def docker_client(timeout: float = 30.0) -> Any:
    """A client for the local daemon, or InfrastructureError saying how to get one."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        raise InfrastructureError(
            f"the Docker daemon does not answer ({type(exc).__name__}); fix: start dockerd (or set DOCKER_HOST), "
            "or use --builder local"
        ) from None


def daemon_answers() -> bool:
    try:
        docker_client(timeout=5).close()
        return True
    except InfrastructureError:
        return False


def remove_containers(labels: Mapping[str, str]) -> int:
    """Remove every container carrying these labels (a run's, after cancellation or a crash)."""
    try:
        client = docker_client()
    except InfrastructureError:
        return 0
    selectors = [f"{k}={v}" for k, v in labels.items()]
    containers = client.containers.list(all=True, filters={"label": selectors})
    for container in containers:
        container.remove(force=True)
    client.close()
    return len(containers)


def commands_from_top(top: Mapping[str, Any]) -> list[list[str]]:
    """The command lines in ``docker top``'s answer (the daemon's ``ps -ef``: the arguments come
    joined by spaces, and are split at them again)."""
    titles = list(top.get("Titles") or [])
    column = next((titles.index(t) for t in ("CMD", "COMMAND", "ARGS") if t in titles), None)
    if column is None:
        return []
    return [row[column].split() for row in top.get("Processes") or [] if len(row) > column]


def _runs_in_this_pid_namespace(pid: int, container_id: str) -> bool:
    """The container's init process is this host's ``pid`` (the daemon shares our PID namespace, as it
    does unless wheelflow itself runs in a container or talks to a remote daemon): its cgroup names
    the container."""
    try:
        return container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def container_processes(container: Any) -> Callable[[], list[list[str]]]:
    """How to read a started container's processes' command lines, for :class:`Progress`: from this
    host's /proc under the container's init process where it is visible here (its processes live in
    a child PID namespace: exact arguments, no API call), else with ``docker top``. A container that
    has ended has none."""
    import docker
    import requests

    try:
        container.reload()
        pid = int((container.attrs.get("State") or {}).get("Pid") or 0)
    except (docker.errors.DockerException, requests.exceptions.RequestException):  # the run's wait says why
        pid = 0
    if pid and _runs_in_this_pid_namespace(pid, container.id):
        return lambda: commands_under(pid, include_root=True) if _runs_in_this_pid_namespace(pid, container.id) else []

    def top() -> list[list[str]]:
        try:
            return commands_from_top(container.top())
        except (docker.errors.DockerException, requests.exceptions.RequestException):  # ended, or removed
            return []

    return top


class _NoAuditwheelInImage(Exception):
    """The cell's image lacks /opt/wheelflow/bin/auditwheel."""


class DockerBuilder:
    kind = "docker"

    def __init__(
        self, options: DockerOptions | None = None, pass_env: Sequence[str] = (), progress_every: float = 30.0
    ) -> None:
        self.options = options or DockerOptions()
        self.pass_env = tuple(pass_env)  # build.pass-env: variables of this runner the build may see
        self.progress_every = progress_every  # seconds between a long build's progress lines

    def _image(self, client: Any, cell: Cell, which: str = "image") -> Any:
        import docker

        name = cell.image if which == "image" else cell.runtime_image
        if not name:
            raise BuildError(
                f"cell {cell.name}: no {which.replace('_', '-')} in the matrix; fix: set matrix.{which.replace('_', '-')}"
            )
        try:
            return client.images.get(name)
        except docker.errors.ImageNotFound:
            raise InfrastructureError(
                f"cell {cell.name}: image {name} is not on this runner; fix: run `wheelflow images`, "
                "or build/pull that image"
            ) from None

    def missing_images(self, cells: Sequence[Cell]) -> list[str]:
        """The build and runtime images of ``cells`` this daemon does not have."""
        import docker

        client = docker_client(timeout=10)
        try:
            missing = []
            for name in dict.fromkeys(n for c in cells for n in (c.image, c.runtime_image) if n):
                try:
                    client.images.get(name)
                except docker.errors.ImageNotFound:
                    missing.append(name)
            return missing
        finally:
            client.close()

    def preflight(self, cell: Cell) -> None:
        """A missing image stops the release before anything is built, in seconds. A daemon that is
        away is an infrastructure error raised by the build task instead, which retries it."""
        if not daemon_answers():
            return
        missing = self.missing_images([cell])
        if missing:
            raise CellUnbuildable(
                f"image {missing[0]} is not on this runner; fix: run `wheelflow images`, or "
                "build/pull that image, or use --builder local"
            )

    def identity(self, cell: Cell) -> str:
        client = docker_client()
        try:
            return f"docker:{self._image(client, cell).id}"
        finally:
            client.close()

    def _volumes(
        self, extra: dict[str, dict[str, str]], *, cuda: bool
    ) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        volumes, env = dict(extra), dict(self.options.env)
        opts = self.options
        if opts.ca_bundle and Path(opts.ca_bundle).is_file():
            volumes[opts.ca_bundle] = {"bind": HOST_CA_BUNDLE, "mode": "ro"}
            env.update(PIP_CERT=HOST_CA_BUNDLE, SSL_CERT_FILE=HOST_CA_BUNDLE)
        if cuda and opts.cuda_home and Path(opts.cuda_home).is_dir():
            volumes[str(Path(opts.cuda_home).resolve())] = {"bind": CONTAINER_CUDA, "mode": "ro"}
        if opts.pip_cache_volume:
            volumes[opts.pip_cache_volume] = {"bind": "/root/.cache/pip", "mode": "rw"}
        if opts.ccache_volume:
            volumes[opts.ccache_volume] = {"bind": "/root/.ccache", "mode": "rw"}
            env["CCACHE_DIR"] = "/root/.ccache"
        for mount in opts.mounts:
            host, _, rest = mount.partition(":")
            target, _, mode = rest.partition(":")
            volumes[host] = {"bind": target, "mode": mode or "rw"}
        return volumes, env

    def _run(
        self,
        client: Any,
        cell: Cell,
        image: Any,
        command: list[str],
        volumes: dict,
        env: Mapping[str, str],
        labels: Mapping[str, str],
        log: Log,
        gpu: bool,
        role: str,
        network: bool = True,
        progress: Progress | None = None,
    ) -> tuple[int | None, deque[str]]:
        """Run a container to completion (None: stopped by the timeout); it is always removed.
        ``network``: False runs it with no network at all (network_mode "none"). ``progress``: fed the
        output lines, and watching the container's processes once it runs."""
        import docker
        import requests

        device_requests = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else None
        container = client.containers.create(
            image.id,
            command=command,
            volumes=volumes,
            environment=dict(env),
            device_requests=device_requests,
            labels={MANAGED_LABEL: "true", CELL_LABEL: cell.name, ROLE_LABEL: role, **labels},
            network_mode="bridge" if network else "none",
        )
        tail: deque[str] = deque(maxlen=40)

        def pump() -> None:
            buffer = b""
            # A build or smoke command may print its environment (passed tokens included), even split up.
            redactor = LineRedactor()
            with BatchedLog(log) as batch:
                for chunk in container.logs(stream=True, follow=True):
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        for text in redactor.feed(line.decode(errors="replace").rstrip()):
                            tail.append(text)
                            batch(text)
                            if progress is not None:
                                progress.line(text)
                if buffer:
                    for text in redactor.feed(buffer.decode(errors="replace")):
                        tail.append(text)
                        batch(text)
                for text in redactor.close():
                    tail.append(text)
                    batch(text)

        try:
            container.start()
            if progress is not None:
                progress.watch_processes(container_processes(container), build_dir=CONTAINER_BUILD_DIR)
            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            try:
                status = container.wait(timeout=cell.timeout)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                container.stop(timeout=5)
                return None, tail
            reader.join(10)
            return int(status.get("StatusCode", 1)), tail
        finally:
            container.remove(force=True)

    def build(
        self,
        cell: Cell,
        source: Path,
        out: Path,
        env: Mapping[str, str],
        log: Log,
        labels: Mapping[str, str],
        setup: BuildSetup | None = None,
    ) -> None:
        setup = setup or BuildSetup()
        client = docker_client(timeout=max(60.0, cell.timeout + 30))
        try:
            image = self._image(client, cell)
            volumes, mount_env = self._volumes(
                {
                    str(source.resolve()): {"bind": "/src", "mode": "ro"},
                    str(out.resolve()): {"bind": "/out", "mode": "rw"},
                },
                cuda=True,
            )
            build_env = container_env(extra={**mount_env, **env}, pass_env=self.pass_env)
            # Compilers record the build directory in objects and debug info: record it as "." instead.
            build_env.update(prefix_map_env(CONTAINER_BUILD_DIR, build_env))
            if "PIP_CONSTRAINT" in build_env:  # written by the task into out/
                build_env["PIP_CONSTRAINT"] = "/out/" + Path(build_env["PIP_CONSTRAINT"]).name
            # Compiling needs no GPU: ask for one only where the runner has it.
            gpu = cell.gpu and gpu_on_runner(client)
            where = f"{cell.image} ({image.short_id}){' with a GPU' if gpu else ''}"

            with Progress(f"cell {cell.name}", log, every=self.progress_every) as progress:

                def run(command: list[str], role: str, network: bool) -> tuple[int | None, deque[str]]:
                    return self._run(
                        client,
                        cell,
                        image,
                        command,
                        volumes,
                        build_env,
                        labels,
                        log,
                        gpu=gpu,
                        role=role,
                        network=network,
                        progress=progress if role == "build" else None,
                    )

                if setup.network and not setup.prepared:  # build.network = true: the image's own isolated build
                    log(f"cell {cell.name}: building in {where}, with network (build.network)")
                    code, tail = run(["wheelflow-build-cell"], "build", True)
                else:
                    log(
                        f"cell {cell.name}: building in {where}; the compile "
                        f"{'with' if setup.network else 'without'} network"
                    )
                    code, tail = self._build_offline(source, out, setup, run)
        finally:
            client.close()
        if code is None:
            raise BuildError(
                f"cell {cell.name}: build stopped by its {cell.timeout:.0f} s timeout and its container "
                "removed; fix: raise matrix.timeout"
            )
        planned = out / PLANNED_VERSION
        if code == PLANNED_OTHER and planned.is_file():
            refuse_other_version(
                planned_line(planned.read_text().splitlines()), env["WHEELFLOW_VERSION"], f"cell {cell.name}"
            )
        planned.unlink(missing_ok=True)
        if code != 0:
            raise BuildError(
                f"cell {cell.name}: build failed (exit {code}): {first_error_line(tail)[:200]}",
                log_tail="\n".join(tail),
            )

    @staticmethod
    def _build_offline(
        source: Path, out: Path, setup: BuildSetup, run: Callable[[list[str], str, bool], tuple[int | None, deque[str]]]
    ) -> tuple[int | None, deque[str]]:
        """The build requirements installed into an environment under /out by a container with
        network, then the compile in a container without (network_mode "none", unless build.network
        = true, with build.requires or isolation = false); what the backend asks
        for beyond them is installed in between, with network, and the compile tried once more."""
        requirements = out / ".wheelflow-build-requirements.txt"
        requirements.write_text("\n".join(requirements_for(source, setup)) + "\n")
        code, tail = run(["/bin/sh", "-c", OFFLINE_REQUIREMENTS], "build-requires", True)
        if code != 0:
            return code, tail
        code, tail = run(["/bin/sh", "-c", OFFLINE_BUILD], "build", setup.network)
        asked = (
            backend_requires((out / BACKEND_REQUIRES).read_text().splitlines()) if code == BACKEND_ASKS_MORE else None
        )
        if asked:
            install = f"{BUILD_ENV}/bin/pip install --quiet --disable-pip-version-check " + shlex.join(asked)
            code, tail = run(["/bin/sh", "-c", install], "build-requires", True)
            if code != 0:
                return code, tail
            code, tail = run(["/bin/sh", "-c", OFFLINE_BUILD], "build", setup.network)
        return code, tail

    def repair(
        self, cell: Cell, wheel: Path, dest_dir: Path, options: RepairOptions, log: Log, labels: Mapping[str, str]
    ) -> RepairedWheel:
        """Repair inside the cell's build image: libraries only the image has are found (and vendored)
        there, with the image's auditwheel and patchelf."""

        import docker

        def run_in_container(wheel: Path, out: Path) -> tuple[int | None, list[str]]:
            cmd = repair_command(Path("/in") / wheel.name, Path("/out"), options, CONTAINER_AUDITWHEEL)
            client = docker_client(timeout=max(60.0, cell.timeout + 30))
            try:
                image = self._image(client, cell)
                volumes, env = self._volumes(
                    {
                        str(wheel.parent.resolve()): {"bind": "/in", "mode": "ro"},
                        str(out.resolve()): {"bind": "/out", "mode": "rw"},
                    },
                    cuda=True,
                )
                env["PATH"] = CONTAINER_PATH
                log(f"cell {cell.name}: repairing {wheel.name} in {cell.image}: $ {shown(cmd)}")
                command = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else cmd
                try:
                    code, tail = self._run(
                        client, cell, image, command, volumes, env, labels, log, gpu=False, role="repair"
                    )
                except docker.errors.APIError as exc:
                    if CONTAINER_AUDITWHEEL[0] in str(exc):
                        raise _NoAuditwheelInImage from None
                    raise
            finally:
                client.close()
            return code, list(tail)

        try:
            return repair_wheel(wheel, dest_dir, options, log=log, run=run_in_container)
        except _NoAuditwheelInImage:
            # An image built before the repair step (or a project's own image) has no auditwheel:
            # repair on the host instead, and say how to repair in the image.
            log(
                f"cell {cell.name}: {cell.image} has no {CONTAINER_AUDITWHEEL[0]}: repairing on the host; "
                "fix: rebuild it with `wheelflow images` (or install auditwheel and patchelf in /opt/wheelflow)"
            )
            return repair_wheel(wheel, dest_dir, options, log=log)

    def smoke(
        self,
        cell: Cell,
        wheel: Path,
        smoke: str | None,
        log: Log,
        labels: Mapping[str, str],
        setup: SmokeSetup | None = None,
    ) -> SmokeResult:
        client = docker_client(timeout=max(60.0, cell.timeout + 30))
        try:
            if cell.gpu and not gpu_on_runner(client):
                return SmokeResult(SKIPPED, "skipped: no GPU on this runner")
            image = self._image(client, cell, "runtime_image")
            # The runtime image gets no toolkit: the wheel must work with what it carries.
            volumes, mount_env = self._volumes(
                {str(wheel.parent.resolve()): {"bind": "/wheels", "mode": "ro"}}, cuda=False
            )
            env = container_env(extra={**mount_env, "WHEELFLOW_SMOKE": smoke or "python -c pass"})
            log(f"cell {cell.name}: smoke test of {wheel.name} in {cell.runtime_image}")
            code, tail = self._run(
                client,
                cell,
                image,
                ["wheelflow-smoke", wheel.name],
                volumes,
                env,
                labels,
                log,
                gpu=cell.gpu,
                role="smoke",
            )
        finally:
            client.close()
        if code is None:
            return SmokeResult(FAILED, f"smoke test of {wheel.name} stopped by its {cell.timeout:.0f} s timeout")
        if code != 0:
            return SmokeResult(
                FAILED, f"smoke test of {wheel.name} failed (exit {code}): {(tail[-1] if tail else '')[:200]}"
            )
        return SmokeResult(PASSED, f"installed {wheel.name} in {cell.runtime_image}; smoke ok")


def gpu_on_runner(client: Any) -> bool:
    """A GPU can be handed to containers: the NVIDIA runtime is registered and a device node exists."""
    runtimes = client.info().get("Runtimes", {})
    return "nvidia" in runtimes and Path("/dev/nvidiactl").exists()
