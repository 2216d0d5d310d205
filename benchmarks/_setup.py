"""Imported first by every benchmark: puts the checkout on ``sys.path`` (for the test corpora in ``corpora/``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
