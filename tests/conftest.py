"""Shared fixtures: a real Prefect server, real pypiserver indexes, real projects to release."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import serverguard

from wheelflow.index.localindex import PypiServer, ensure_htpasswd, free_port

REPO = Path(__file__).resolve().parent.parent
INDEX_USER, INDEX_PASSWORD = "releaser", "s3cret-index-password-for-tests"


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """One real `prefect server` process (SQLite) for the whole session."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    proc, url = start_prefect_server(tmp_path_factory.mktemp("prefect-home"))
    os.environ["PREFECT_API_URL"] = url  # for the wheelflow CLI in subprocesses
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url
    stop_processes(proc)


@pytest.fixture
def fresh_prefect_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Prefect server of this test's own (SQLite under the returned home), nobody has set up: no pools,
    Variables, blocks or deployments; this process and the commands it starts use it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    prefect_home = tmp_path / "prefect-home"
    prefect_home.mkdir()
    proc, url = start_prefect_server(prefect_home)
    monkeypatch.setenv("PREFECT_API_URL", url)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url, prefect_home
    finally:
        stop_processes(proc)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh $WHEELFLOW_HOME per test; a local Prefect server or index a command started under it is
    stopped after."""
    path = tmp_path / "wheelflow-home"
    monkeypatch.setenv("WHEELFLOW_HOME", str(path))
    yield path
    from wheelflow.adapters.localserver import stop_server
    from wheelflow.index.localindex import stop_index

    if (path / "prefect" / "server.json").exists():
        stop_server(path)
    if (path / "index" / "server.json").exists():
        stop_index(path)


@pytest.fixture(autouse=True)
def stop_indexes_of_test_homes(request: pytest.FixtureRequest):
    """The home index a release to ``index = "local"`` leaves running (it stays up for the user's
    `pip install`) is stopped after the test, when its home lies in the test's temporary folder; the
    serverguard catches any other."""
    if "tmp_path" not in request.fixturenames:
        yield
        return
    tmp_path = request.getfixturevalue("tmp_path")  # now: it is torn down before this fixture
    yield
    from wheelflow.adapters.localserver import running_servers
    from wheelflow.index.localindex import is_index_watchdog, registry_dir, stop_index

    for entry in running_servers(registry_dir(os.environ), is_server=is_index_watchdog):
        if tmp_path in Path(entry.home).parents or Path(entry.home) == tmp_path:
            stop_index(Path(entry.home))


@pytest.fixture
def busy_cpus():
    """Two CPU-bound processes that keep both cores of a 2-core machine busy for the test's length."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield burners
    for proc in burners:
        proc.kill()
        proc.wait()


@pytest.fixture
def index(tmp_path: Path):
    """A real pypiserver on loopback; uploads need the htpasswd user."""
    htpasswd = tmp_path / "htpasswd"
    ensure_htpasswd(htpasswd, INDEX_USER, INDEX_PASSWORD)
    with PypiServer(tmp_path / "served", htpasswd, log_file=tmp_path / "pypiserver.log") as server:
        yield server


@pytest.fixture
def index_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHEELFLOW_STAGING_USERNAME", INDEX_USER)
    monkeypatch.setenv("WHEELFLOW_STAGING_PASSWORD", INDEX_PASSWORD)


#: A smoke test that keeps its release Running until something ends it (a kill, a cancel).
SLEEPING_SMOKE = "python -c 'import time; time.sleep(600)'"


def make_project(
    root: Path,
    name: str = "tiny-pkg",
    version: str = "1.0.0",
    *,
    index_url: str | None = None,
    extra: str = "",
    smoke: str | None = None,
) -> Path:
    """A small pure-Python project with a [tool.wheelflow] spec (fast to build)."""
    module = name.replace("-", "_")
    root.mkdir(parents=True, exist_ok=True)
    (root / "src" / module).mkdir(parents=True, exist_ok=True)
    (root / "src" / module / "__init__.py").write_text(f'__version__ = "{version}"\n\ndef answer():\n    return 42\n')
    (root / "README.md").write_text(f"# {name}\n\nA package released by wheelflow's tests.\n")
    target = ""
    if index_url:
        target = textwrap.dedent(f"""
            [tool.wheelflow.targets.staging]
            index = "{index_url}"
            verify-timeout = 5
            """)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "{version}"
        description = "test package"
        readme = "README.md"

        [tool.setuptools.packages.find]
        where = ["src"]

        [tool.wheelflow]
        smoke = {json.dumps(smoke or f"python -c 'import {module}; assert {module}.answer() == 42'")}

        [tool.wheelflow.version]
        tag = "v{{version}}"
        file = "pyproject.toml"
        """)
        + target
        + extra
    )
    return root


@contextlib.contextmanager
def exclusive(lock: Path):
    """Held by one process of the machine at a time (the workers of a ``-n`` run, or two runs)."""
    with open(lock, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def wait_for(condition, timeout: float, what: str):
    """Poll until ``condition()`` returns something truthy (a server, a process, a file), or fail
    after ``timeout`` seconds naming ``what``; returns that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)  # polling another process's progress, bounded by the deadline
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def running_with(text: str) -> list[int]:
    """This host's processes whose command line holds ``text`` (a marker a test gave a process it
    expects gone)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if text.encode() in cmdline.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The installed `wheelflow` command, as a user runs it."""
    sibling = Path(sys.executable).with_name("wheelflow")  # this interpreter's, even in an unactivated venv
    exe = str(sibling) if sibling.exists() else shutil.which("wheelflow") or "wheelflow"
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout
    )


class WebhookReceiver:
    """A real HTTP endpoint on loopback that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict] = []
        self.fail_next: list[int] = []  # statuses to answer before accepting
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = receiver.fail_next.pop(0) if receiver.fail_next else 200
                if status == 200:
                    receiver.received.append(json.loads(body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        # A token in the path, as real webhook URLs carry: it must never be logged.
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/T0KEN-w3bh00k-s3cret"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch):
    receiver = WebhookReceiver()
    monkeypatch.setenv("WHEELFLOW_ALERT_WEBHOOK", receiver.url)
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def docker_images():
    """The builder and runtime images, made by `wheelflow images` (idempotent) on the real daemon."""
    from wheelflow.builds.builders.docker import daemon_answers

    if not daemon_answers():
        pytest.skip("no Docker daemon answers: .ci/run installs and starts dockerd before the suite")
    result = run_cli("images", timeout=1800)  # the workers of a `-n` run: one makes them, the other waits
    assert result.returncode == 0, result.stderr[-3000:]
    import docker

    client = docker.from_env()
    yield client
    client.close()


def wheelflow_code_remote(root: Path) -> Path:
    """wheelflow's code as workers fetch it (prefect.yaml's git_clone pull step): a git repository
    holding this working tree's tracked and untracked, not ignored, files as one commit on `main`."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(root)], check=True, capture_output=True)
    git(root, "add", "-A")
    git(root, "commit", "--quiet", "-m", "wheelflow under test")
    return root


def stop_processes(*procs: subprocess.Popen, grace: float = 30) -> None:
    """Stop Prefect processes the way Prefect asks: SIGTERM for a graceful stop, a second SIGTERM
    (which its signal handlers turn into SIGKILL) when the graceful one has not ended within ``grace``."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def kill_process_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and every process below it (a machine that died: a worker and its flow runs)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [proc.pid], [proc.pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # a short-lived child (git, pip) that ended meanwhile
    proc.wait()


def start_prefect_server(
    home: Path, env_extra: dict[str, str] | None = None, port: int | None = None
) -> tuple[subprocess.Popen, str]:
    """A `prefect server` process on loopback (a free port unless given); returns (process, API URL)
    once it answers."""
    port = port or free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": "",
        # its UI asks the API at this address (by default the default port's): a UI page renders
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        **(env_extra or {}),
    }
    log = open(home / "server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180  # ~15 s on an idle 2-core machine; far more while builds run beside it
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)  # waiting for a separate process to open its socket


POSTGRES_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL cluster (the machine's binaries), run as the postgres user, on loopback."""
    if not POSTGRES_BIN:
        pytest.skip("PostgreSQL binaries not found under /usr/lib/postgresql: install postgresql to run this test")
    bin_dir = POSTGRES_BIN[-1]
    # Not under pytest's tmp directory: that one is private to root, and PostgreSQL refuses to run as root.
    root = Path(tempfile.mkdtemp(prefix="wheelflow-postgres-"))
    data = root / "data"
    shutil.chown(root, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    subprocess.run(
        [
            *as_postgres,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(root / "pg.log"),
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [*as_postgres, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "prefect"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run(
            [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


# -- the table of faults and bad inputs in docs/faults.md, generated from a test run -----------------

CASES_FILE = REPO / ".wheelflow-cases.json"  # written by a test run; tools/case_table.py renders it


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "case(kind, what, expected): a fault or bad input listed in docs/faults.md")
    config._wheelflow_cases = {}  # type: ignore[attr-defined]
    serverguard.configure(config)  # no home server of this run outlives it (checked at its end)


#: e2e files that run one after another in one worker under ``-n`` (pytest-xdist): the torch
#: extension's compiles share examples/torch-ext's build tree and ccache, and each takes both cores.
SERIAL_GROUPS = {
    "test_torch_extension.py": "torch-ext",
    "test_torch_ext_abi.py": "torch-ext",
    "test_reproducible_builds.py": "torch-ext",
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """tests/unit (no servers, seconds) and tests/e2e (real servers) are marked by their folder, so
    ``-m unit`` / ``-m e2e`` select them wherever the run starts. Under ``-n N --dist loadgroup`` an e2e
    file's tests stay together in one worker (its module fixtures are set up once), as do the files
    of SERIAL_GROUPS."""
    for item in items:
        path = Path(str(item.path))
        folder = path.parent.name
        if folder in ("unit", "e2e"):
            item.add_marker(folder)
        if folder == "e2e" and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(SERIAL_GROUPS.get(path.name, path.stem)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("case")
    if marker is None or (report.when != "call" and not report.skipped):
        return
    kind, what, expected = marker.args
    if getattr(item, "callspec", None) is not None:
        what = f"{what}: " + ", ".join(_short(v) for v in item.callspec.params.values() if _short(v))
    cases = item.config._wheelflow_cases  # type: ignore[attr-defined]
    cases[item.nodeid] = {
        "kind": kind,
        "case": what,
        "expected": expected,
        "test": item.nodeid,
        "result": "skipped" if report.skipped else report.outcome,
    }


def _short(value: object) -> str:
    """A parameter as a table cell: its last line, if short enough to read there."""
    text = str(value).strip().splitlines()[-1].strip() if str(value).strip() else ""
    return text.replace("|", "\\|") if len(text) <= 60 else ""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    serverguard.finish(session)
    cases = getattr(session.config, "_wheelflow_cases", {})
    if cases:
        import json

        # Merged with earlier runs, so that running one module keeps the others' rows; a full run
        # refreshes every row.
        with exclusive(CASES_FILE.with_name(CASES_FILE.name + ".lock")):  # the workers of one `-n` run
            previous = json.loads(CASES_FILE.read_text()) if CASES_FILE.exists() else {}
            CASES_FILE.write_text(json.dumps({**previous, **cases}, indent=1, sort_keys=True))
