"""One vocabulary for verdicts, severities and risk bands, shared by every layer.

Ordered enums (``str`` values, so they are JSON as they stand) and the single
function that turns a subject's probe runs into its verdict
(:func:`vocabulary.layered.subject_verdict`). This package imports nothing but
the standard library, so ``probes`` (analyses) and ``casefiles`` (the case store
and reports), which must not import each other, can both use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Self

__all__ = ["Verdict", "Severity", "Band", "BAND_UPPER", "VERDICT_SEVERITY", "one_line"]


class _Ordered(StrEnum):
    """A string enum whose members are ordered by declaration (first = least serious)."""

    @property
    def rank(self) -> int:
        return list(type(self)).index(self)

    @classmethod
    def parse(cls, value: object) -> Self | None:
        """The member named by ``value`` (a member or its string), or None for anything else."""
        try:
            return cls(value)  # type: ignore[arg-type]  # any object; ValueError for a non-member
        except ValueError:
            return None

    @classmethod
    def worst(cls, values: Iterable[object], default: object = None) -> Self | None:
        """The most serious of ``values`` (strings or members; unknown ones are ignored)."""
        found = [m for m in (cls.parse(v) for v in values) if m is not None]
        if not found:
            return cls.parse(default) if default is not None else None
        return max(found, key=lambda m: m.rank)

    def __lt__(self, other: object) -> bool:
        if isinstance(other, type(self)):
            return self.rank < other.rank
        return NotImplemented

    def __le__(self, other: object) -> bool:
        if isinstance(other, type(self)):
            return self.rank <= other.rank
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if isinstance(other, type(self)):
            return self.rank > other.rank
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        if isinstance(other, type(self)):
            return self.rank >= other.rank
        return NotImplemented


class Verdict(_Ordered):
    """What a probe (or the layered scan) concluded; ``inconclusive`` only outranks ``clean``."""

    CLEAN = "clean"
    INCONCLUSIVE = "inconclusive"
    SUSPICIOUS = "suspicious"
    BACKDOORED = "backdoored"
    MALICIOUS = "malicious"

    @property
    def decisive(self) -> bool:
        """Every verdict but ``inconclusive`` settles the question one way or the other."""
        return self is not Verdict.INCONCLUSIVE

    @property
    def flagged(self) -> bool:
        return self.rank >= Verdict.SUSPICIOUS.rank


class Severity(_Ordered):
    """How serious one finding is; ``high`` and ``critical`` make a static scan ``malicious``."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Band(_Ordered):
    """The case-level risk band of a 0–100 risk score: 0–30 low, 31–60 medium, 61–100 high."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @classmethod
    def of(cls, score: float | None) -> Band | None:
        if score is None:
            return None
        for member in cls:
            if score <= BAND_UPPER[member]:
                return member
        return cls.HIGH

    @property
    def floor(self) -> int:
        """The smallest whole risk score in this band (not ``lower``: that would shadow ``str.lower``)."""
        order = list(Band)
        return 0 if self is order[0] else BAND_UPPER[order[self.rank - 1]] + 1


BAND_UPPER: dict[Band, int] = {Band.LOW: 30, Band.MEDIUM: 60, Band.HIGH: 100}

# the severity of the one summary finding a flagged verdict leaves in the case file
VERDICT_SEVERITY: dict[Verdict, Severity] = {Verdict.MALICIOUS: Severity.CRITICAL,
                                             Verdict.BACKDOORED: Severity.HIGH,
                                             Verdict.SUSPICIOUS: Severity.MEDIUM}


def printable(value: Any) -> Any:
    """Strings (also inside lists/dicts) with undecodable file-name bytes (surrogate escapes from a non-UTF-8
    name) shown as ``\\xff``, so they can be stored, hashed and printed; other values unchanged."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(printable(v) for v in value)
    return value


def file_path(stored: str) -> str:
    """The file-system path behind a stored path: :func:`printable`'s ``\\xff`` escapes turned back into the
    surrogate escapes the OS call needs, when the stored text itself names no file."""
    import os
    import re

    if os.path.lexists(stored) or "\\x" not in stored:
        return stored
    return re.sub(r"\\x([89a-fA-F][0-9a-fA-F])", lambda m: chr(0xDC00 + int(m.group(1), 16)), stored)


def one_line(exc: BaseException, limit: int = 300, *, with_type: bool = False) -> str:
    """An exception as the one line an examiner reads: its message with whitespace collapsed (the type name when
    it has none; prefixed by it with ``with_type``), at most ``limit`` characters."""
    text = printable(" ".join(str(exc).split()))
    if not text:
        text = type(exc).__name__
    elif with_type:
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
