"""The result every probe returns (the probe contract, docs/adding-a-probe.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

VERDICTS = ("clean", "suspicious", "backdoored", "malicious", "inconclusive")


def jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays, tuples and NaNs into plain JSON values."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:  # the common leaves first (results hold thousands)
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "item"):
        return jsonable(value.item())
    return str(value)


@dataclass
class ProbeResult:
    """Outcome of one probe on one subject.

    ``details`` holds the probe's own keys (``anomaly_index``, ``findings``,
    ``ranking``...). ``to_dict`` flattens them beside the common keys, so a
    JSON consumer reads ``result["anomaly_index"]`` directly.
    ``artifacts`` are binary evidence (name -> bytes, e.g. a recovered mask as
    .npy); they are stored in the case file, not printed in JSON.
    """

    probe: str
    verdict: str
    score: float
    summary: str
    params: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}")
        self.score = float(min(1.0, max(0.0, self.score)))

    def to_dict(self) -> dict[str, Any]:
        common = {
            "probe": self.probe,
            "verdict": self.verdict,
            "score": round(self.score, 6),
            "summary": self.summary,
            "params": jsonable(self.params),
            "duration_s": round(self.duration_s, 4),
        }
        clash = set(common) & set(self.details)
        if clash:
            raise ValueError(f"details may not redefine {sorted(clash)}")
        return {**common, **jsonable(self.details)}
