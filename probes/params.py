"""Checked numeric probe parameters: a wrong type, NaN or an out-of-range value is a one-line ProbeError."""

from __future__ import annotations

import math

from probes.errors import ProbeError


def number(params: dict, key: str, default, kind=float, lo=None, hi=None, *, probe: str):
    """``params[key]`` (or ``default``) as ``kind``, within ``[lo, hi]`` (inclusive; None = unbounded)."""
    value = params.get(key, default)
    if isinstance(value, bool):
        raise ProbeError(f"{probe}: param {key} must be a number, got {value!r}")
    try:
        value = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ProbeError(f"{probe}: param {key} must be a{'n integer' if kind is int else ' number'}, "
                         f"got {value!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ProbeError(f"{probe}: param {key} must be finite, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ProbeError(f"{probe}: param {key}={value} is out of range [{lo}, {hi}]")
    return value
