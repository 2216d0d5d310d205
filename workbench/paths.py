"""Where the workbench keeps its files: the default case file and caches."""

from __future__ import annotations

import os
from pathlib import Path

APP = "trojan-workbench"


def default_db_path() -> Path:
    """``$WORKBENCH_DB`` if set, else ``cases.db`` in the platform's user data dir."""
    env = os.environ.get("WORKBENCH_DB")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_data_path(APP, appauthor=False) / "cases.db"


def cache_dir() -> Path:
    """``$WORKBENCH_CACHE`` if set, else the platform's user cache dir (demo models, fingerprints)."""
    from probes.cache import cache_dir as probes_cache_dir

    return probes_cache_dir()
