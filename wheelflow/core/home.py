"""Where wheelflow keeps its own state: ``$WHEELFLOW_HOME`` (default ``./.wheelflow``)."""

from __future__ import annotations

import os
from pathlib import Path


def wheelflow_home() -> Path:
    """All of wheelflow's own state: the local index's files, built artifacts, caches, reports."""
    return Path(os.environ.get("WHEELFLOW_HOME", ".wheelflow")).absolute()
