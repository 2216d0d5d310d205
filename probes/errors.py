"""Exceptions the probes raise; each carries a one-line message fit for an examiner."""

from vocabulary import one_line

__all__ = ["ProbeError", "UnsafeModelError", "Cancelled", "one_line", "explain"]


class ProbeError(Exception):
    """Bad input for a probe (wrong shape, missing file, not a classifier...).

    The message is a single line that the CLI prints as ``error: <message>``
    and the TUI shows in a notification; the subject's other work goes on.
    """


class UnsafeModelError(ProbeError):
    """Loading this subject would need the full unpickler or remote code."""


class Cancelled(Exception):
    """The examiner cancelled the probe (``cancel`` event was set)."""



def explain(exc: BaseException, limit: int = 300) -> str:
    """One line for any exception: a ProbeError's own message, anything else prefixed by its type name."""
    return one_line(exc, limit, with_type=not isinstance(exc, ProbeError))
