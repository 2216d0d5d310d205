"""The ``kl`` probe: language-model trigger hunting by next-token divergence.

``run(subject, ctx)`` hunts with a :class:`~probes.lm_hunt.HuntSession`
(the method is described in :mod:`probes.lm_hunt`; the numeric core in
:mod:`probes.lm_engine`). Progress is reported per stage in candidates, and
partial rankings stream to ``ctx.partial`` as batches finish.
"""

from __future__ import annotations

from typing import Any

from probes.context import RunContext
from probes.lm_hunt import HuntSession
from probes.result import ProbeResult


def run(subject: Any, ctx: RunContext) -> ProbeResult:
    """Probe entry point (``kl``): ``subject`` is a loaded causal LM, or a :class:`HuntSession` already holding one
    (the TUI keeps one between a hunt and its follow-ups, so they share the model and engine)."""
    session = subject if isinstance(subject, HuntSession) else HuntSession(subject, ctx.params, ctx.cancel)
    return session.hunt(ctx)
