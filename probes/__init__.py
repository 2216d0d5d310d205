"""Analyses of suspect models: a pure library (no Textual, no SQLite, no printing).

Every probe is ``run(subject, params, *, progress, cancel) -> ProbeResult``.
``torch`` and ``transformers`` are imported lazily inside the modules that need
them, so importing :mod:`probes` itself stays cheap.
"""

from probes.errors import Cancelled, ProbeError, UnsafeModelError
from probes.result import VERDICTS, ProbeResult

__all__ = ["Cancelled", "ProbeError", "UnsafeModelError", "ProbeResult", "VERDICTS"]
