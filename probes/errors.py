"""Exceptions the probes raise; each carries a one-line message fit for an examiner."""


class ProbeError(Exception):
    """Bad input for a probe (wrong shape, missing file, not a classifier...).

    The message is a single line that the CLI prints as ``error: <message>``
    and the TUI shows in a notification; the subject's other work goes on.
    """


class UnsafeModelError(ProbeError):
    """Loading this subject would need the full unpickler or remote code."""


class Cancelled(Exception):
    """The examiner cancelled the probe (``cancel`` event was set)."""
