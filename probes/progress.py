"""Progress and cancel plumbing shared by every probe (toolong-style: a plain Event)."""

from __future__ import annotations

import threading

from probes.errors import Cancelled


def null_progress(done: int, total: int, message: str = "") -> None:
    """A progress callback that ignores everything."""


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`Cancelled` if the examiner asked to stop."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")


