"""Where the workbench caches what it can rebuild (demo models, fingerprints, the dynamic probe's baseline).

The one reader of ``$WORKBENCH_CACHE``: set, it is the cache root; unset, the
platform's user cache directory (``~/.cache/trojan-workbench`` on Linux).
Nothing in the cache is ever unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "trojan-workbench"


def cache_dir(*parts: str) -> Path:
    """The cache root, or a sub-folder of it (not created here)."""
    env = os.environ.get("WORKBENCH_CACHE")
    if env:
        root = Path(env).expanduser()
    else:
        import platformdirs

        root = platformdirs.user_cache_path(APP, appauthor=False)
    return root.joinpath(*parts)
