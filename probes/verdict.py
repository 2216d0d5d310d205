"""The layered, case-level verdict: one risk score with the evidence that drove it.

Risk (the DESIGN's "trust score") is 0–100, higher is riskier: 0–30 low,
31–60 medium, 61–100 high. A fingerprint ensemble's calibrated ``trust_score``
is used when present; every other probe contributes its own 0–1 score, and the
strongest evidence wins (an attacker must get past every probe at once).
"""

from __future__ import annotations

from typing import Any

_RANK = {"malicious": 4, "backdoored": 3, "suspicious": 2, "inconclusive": 1, "clean": 0}
BANDS = (("low", 30), ("medium", 60), ("high", 100))


def band(score: float) -> str:
    for name, upper in BANDS:
        if score <= upper:
            return name
    return "high"


def _evidence(r: dict[str, Any]) -> str:
    probe, verdict = r.get("probe"), r.get("verdict")
    if probe == "neural-cleanse" and r.get("anomaly_index") is not None:
        target = r.get("suspected_target")
        tail = f" → class {target}" if target is not None and verdict != "clean" else ""
        return f"Neural Cleanse anomaly index {r['anomaly_index']:.2f}{tail}"
    if probe == "static":
        n = len(r.get("findings") or [])
        return f"static: {verdict}" + (f" ({n} finding{'s' if n != 1 else ''})" if n else "")
    if probe == "kl" and r.get("best_candidate") is not None:
        return f"KL hunt: {verdict}, best candidate {r['best_candidate']!r}"
    if probe == "fingerprint" and r.get("detectors"):
        return f"fingerprint: {r.get('summary', verdict)}"
    return f"{probe}: {verdict}"


def layered_verdict(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine probe results (``to_dict()`` form) into ``{score, band, verdict, evidence}``."""
    done = [r for r in results if r.get("verdict")]
    if not done:
        return {"score": None, "band": None, "verdict": "inconclusive", "evidence": "no probe completed"}
    scores = [100.0 * float(r.get("score") or 0.0) for r in done]
    for r in done:
        if r.get("probe") == "fingerprint" and r.get("trust_score") is not None:
            scores.append(float(r["trust_score"]))
        if r.get("verdict") == "malicious":
            scores.append(100.0)
    score = int(round(max(scores)))
    worst = max(done, key=lambda r: _RANK.get(r["verdict"], 0))["verdict"]
    ordered = sorted(done, key=lambda r: -_RANK.get(r["verdict"], 0))
    return {"score": score, "band": band(score), "verdict": worst,
            "evidence": "; ".join(_evidence(r) for r in ordered)}
