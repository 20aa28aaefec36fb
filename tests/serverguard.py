"""No home Prefect server, and no home index, of a test run outlives it.

Every home a test makes may start its own Prefect server (the first command without PREFECT_API_URL
does). The ``home`` fixture stops its own; this guard is the net under everything else: at the start it
gives the run a registry of its own (``XDG_RUNTIME_DIR``, inherited by every command the tests start),
and at the end it looks for home servers still running, in that registry and among the processes (a
watchdog whose home, or a Prefect server whose working folder, lies under this run's temporary folder,
whatever environment started it). Home indexes (pypiserver under a watchdog, see
wheelflow/index/localindex.py) are looked for the same way: in the indexes' registry, by their
watchdog's ``--home``, and a pypiserver by its working folder (a home's ``index`` folder). It stops
them and fails the run, naming each. conftest.py calls :func:`configure` and :func:`finish`; a pytest
run of its own can load it with ``-p serverguard``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from wheelflow.adapters import localserver
from wheelflow.index import localindex

WATCHDOG_MODULE = b"wheelflow.adapters.serverwatch"
FRESH_DIR = b"wheelflow.index.freshdir"  # a home index's pypiserver: python -m wheelflow.index.freshdir
LEAKS_FILE = "wheelflow-leaked-servers.txt"  # a worker's finding, in its temporary folder


def configure(config: pytest.Config) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="wheelflow-test-run-"))
    config._wheelflow_run_dir = run_dir  # type: ignore[attr-defined]
    config._wheelflow_previous_runtime_dir = os.environ.get("XDG_RUNTIME_DIR")  # type: ignore[attr-defined]
    os.environ["XDG_RUNTIME_DIR"] = str(run_dir)


def servers_under(root: Path) -> dict[int, str]:
    """Home-server processes of homes at or below ``root``, with their home: watchdogs by their
    ``--home`` argument, and Prefect servers by their working folder (a home's ``prefect`` folder), so
    that a server whose watchdog was killed is found too."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if WATCHDOG_MODULE in argv and b"--home" in argv:
            home = Path(os.fsdecode(argv[argv.index(b"--home") + 1]))
        elif b"prefect" in b" ".join(argv) and b"server" in argv and b"start" in argv:
            home = cwd.parent  # the server runs in its home's `prefect` folder
        elif (any(arg.endswith(b"pypi-server") for arg in argv[:2]) or FRESH_DIR in argv) and cwd.name == "index":
            home = cwd.parent  # a home index's pypiserver runs in its home's `index` folder
        else:
            continue
        if (home == root or root in home.parents) and localserver.pid_alive(int(proc.name)):
            found[int(proc.name)] = str(home)
    return found


def leftover_servers(registry: Path, run_root: Path | None) -> dict[int, str]:
    """Home servers of this run that still run: pid -> home."""
    left = {entry.pid: entry.home for entry in localserver.running_servers(registry)}
    index_registry = registry.parent / "indexes"  # localindex.registry_dir beside localserver.registry_dir
    for entry in localserver.running_servers(index_registry, is_server=localindex.is_index_watchdog):
        left[entry.pid] = entry.home
    if run_root is not None:
        left.update(servers_under(run_root))
    return left


def finish(session: pytest.Session) -> None:
    config = session.config
    run_dir: Path | None = getattr(config, "_wheelflow_run_dir", None)
    if run_dir is None:
        return
    registry = localserver.registry_dir({"XDG_RUNTIME_DIR": str(run_dir)})
    factory = getattr(config, "_tmp_path_factory", None)
    try:
        run_root = factory.getbasetemp() if factory is not None else None
    except (OSError, ValueError):  # no test asked for a temporary folder: nothing of this run lives there
        run_root = None
    left = leftover_servers(registry, run_root)
    if left:
        localserver.stop_all(registry)  # those it lists, each through its home (keeps its port)
        for entry in localserver.running_servers(registry.parent / "indexes", is_server=localindex.is_index_watchdog):
            localindex.stop_index(Path(entry.home))
    for pid, home in left.items():
        if localserver.pid_alive(pid):
            localserver._kill_group(pid, grace=30)
        _report(
            config, f"wheelflow: a server (Prefect or index) of home {home} (pid {pid}) still ran at the end of the run"
        )
    if left:
        _report(config, f"wheelflow: {len(left)} home server(s) outlived this test run: stopped now; the run fails")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if run_root is not None:  # for the controller of a `-n` run, whose exit status this worker's is not
            with contextlib.suppress(OSError):
                (run_root / LEAKS_FILE).write_text(f"{len(left)} home server(s) outlived worker {run_root.name}\n")
    # The workers of a `-n` run (pytest-xdist) have their temporary folders under the controller's.
    for leaks in sorted(run_root.glob(f"*/{LEAKS_FILE}")) if run_root is not None else []:
        _report(config, f"wheelflow: {leaks.read_text().strip()}: stopped there; the run fails")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    previous = getattr(config, "_wheelflow_previous_runtime_dir", None)
    if previous is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = previous
    shutil.rmtree(run_dir, ignore_errors=True)


def _report(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, red=True)
    else:  # pragma: no cover - running without the terminal
        print(line)


# as a plugin of its own (`pytest -p serverguard`)
pytest_configure = configure


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    finish(session)
