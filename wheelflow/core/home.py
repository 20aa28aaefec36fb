"""Where wheelflow keeps its own state: ``$WHEELFLOW_HOME`` (default ``./.wheelflow``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from wheelflow.core.errors import HomeError

HOME_ENV = "WHEELFLOW_HOME"


def wheelflow_home() -> Path:
    """All of wheelflow's own state: the local index's files, built artifacts, caches, reports."""
    return Path(os.environ.get(HOME_ENV, ".wheelflow")).absolute()


def home_error(home: Path, exc: OSError) -> HomeError:
    """One line for any OSError met on the home: the folder, what the system said, and the fix."""
    where = exc.filename if exc.filename and str(exc.filename).startswith(str(home)) else home
    reason = exc.strerror or type(exc).__name__
    blocker = next((p for p in (home, *home.parents) if p.exists() and not p.is_dir()), None)
    fix = (
        f"{blocker} is a file: point {HOME_ENV} at a folder"
        if blocker is not None
        else f"make {home} writable by this user (or free space on its disk), or point {HOME_ENV} at a writable folder"
    )
    return HomeError(f"cannot write wheelflow's home {home} ({reason}: {where}); fix: {fix}")


def ensure_home() -> Path:
    """The home, created and proven writable (a file made and removed in it) before anything starts,
    so a read-only or full home is one line naming the folder, never a traceback in a flow run."""
    home = wheelflow_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise home_error(home, exc) from None
    return home
