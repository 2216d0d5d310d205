"""The layered, case-level verdict: one risk score with the evidence that drove it.

Risk (the DESIGN's "trust score") is 0–100, higher is riskier: 0–30 low,
31–60 medium, 61–100 high.

How the probes combine
----------------------
* Each probe's own 0–1 ``score`` is read *within the band its verdict allows*:
  a ``clean`` probe contributes at most 30, ``inconclusive`` at most 60 (and
  nothing when its score is 0), ``suspicious`` 31–80, ``backdoored`` 61–100,
  ``malicious`` 100. A Neural Cleanse anomaly index of 1.8 (clean) therefore
  cannot by itself lift a model into the medium band, while a flagged one
  always reaches the high band.
* The fingerprint ensemble's calibrated ``trust_score`` is used as it is (it is
  already calibrated against clean models); without a baseline it has none and
  adds only its evidence line.
* The strongest evidence wins (an attacker must get past every probe at once);
  when two or more *independent* probes are at or above the medium band the
  risk is raised by 10 per extra corroborating probe (capped at 100).
* The case verdict is the worst decisive verdict (``malicious`` >
  ``backdoored`` > ``suspicious`` > ``clean``); ``inconclusive`` only when no
  probe reached a decisive verdict.

The evidence line lists every probe in pipeline order, e.g. ``static: clean;
Neural Cleanse anomaly index 4.30 → class 0; fingerprint 2 of 6 detectors above
the 95th percentile (trust 72)``.

Every view of a subject (the TUI, ``case show``, the report, ``scan``) calls
:func:`subject_verdict` on the subject's runs: the latest finished run of each
probe counts, older ones are history. A case's verdict is the worst of its
subjects' (:func:`case_verdict`).

Standard library only: importing this module never imports torch or numpy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vocabulary import Band, Verdict

# risk range a probe's 0-1 score is mapped into, by the probe's own verdict
_VERDICT_RANGE = {Verdict.CLEAN: (0.0, 30.0), Verdict.INCONCLUSIVE: (0.0, 60.0), Verdict.SUSPICIOUS: (31.0, 80.0),
                  Verdict.BACKDOORED: (61.0, 100.0), Verdict.MALICIOUS: (100.0, 100.0)}
# probes listed in this order in the evidence line; probes not named here follow, by name
PIPELINE_ORDER = ("static", "dynamic", "neural-cleanse", "max-margin", "transform-inversion", "pair-search", "strip", "spectral",
                  "activation-clustering", "kl", "fingerprint")
# probes whose evidence is a per-class statistic judged by a p-value under the subject's own null
_PVALUE_PROBES = {"max-margin": "max-margin", "transform-inversion": "transform inversion", "pair-search": "pair search"}


def band(score: float | None) -> str | None:
    """The band name of a 0–100 risk score (None for no score)."""
    b = Band.of(score)
    return None if b is None else b.value


def _num(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v and v not in (float("inf"), float("-inf")) else None


def probe_risk(r: dict[str, Any]) -> float | None:
    """One probe's contribution to the case risk (0–100), or None when it has nothing to say."""
    verdict = Verdict.parse(r.get("verdict")) or Verdict.INCONCLUSIVE
    if r.get("probe") == "fingerprint":
        t = _num(r.get("trust_score"))
        if t is None:
            return None
        return max(0.0, min(100.0, t))
    lo, hi = _VERDICT_RANGE[verdict]
    s = _num(r.get("score")) or 0.0
    s = max(0.0, min(1.0, s))
    if verdict is Verdict.INCONCLUSIVE and s == 0.0:
        return None
    return lo + (hi - lo) * s


def _fmt(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def _evidence(r: dict[str, Any]) -> str:
    probe, verdict = r.get("probe"), r.get("verdict")
    if probe == "neural-cleanse" and _num(r.get("anomaly_index")) is not None:
        target = r.get("suspected_target")
        tail = f" → class {target}" if target is not None and verdict != "clean" else ""
        return f"Neural Cleanse anomaly index {_fmt(float(r['anomaly_index']))}{tail}"
    if probe in _PVALUE_PROBES and _num(r.get("p_value")) is not None:
        target = r.get("suspected_target")
        tail = f" → class {target}" if target is not None and verdict != "clean" else ""
        mapping = r.get("mapping") or []
        if mapping and verdict != "clean" and target is None:
            pairs = ", ".join(f"{m['source']}→{m['target']}" for m in mapping[:4]) + (" …" if len(mapping) > 4 else "")
            tail = f" → {'all-to-all ' if r.get('all_to_all') else ''}mapping {pairs}"
        return f"{_PVALUE_PROBES[str(probe)]} p = {float(r['p_value']):.2g}{tail}"
    if probe == "static":
        n = len(r.get("findings") or [])
        return f"static: {verdict}" + (f" ({n} finding{'s' if n != 1 else ''})" if n else "")
    if probe == "kl" and r.get("best_candidate") is not None:
        return f"KL hunt: {verdict}, best candidate {r['best_candidate']!r}"
    if probe == "strip" and _num(r.get("entropy_mean")) is not None:
        return f"STRIP: {verdict}, mean entropy {_fmt(float(r['entropy_mean']))}"
    if probe == "fingerprint":
        t = _num(r.get("trust_score"))
        n_det = r.get("n_detectors")
        if n_det is None and isinstance(r.get("detectors"), dict):
            n_det = len(r["detectors"])
        if t is None or not n_det:
            note = "no baseline" if not r.get("baseline_size") else f"baseline of {r['baseline_size']} too small"
            return f"fingerprint: {note}, no trust score"
        if r.get("trust_basis"):  # results stored by versions that scored Neural Cleanse here without a baseline
            return f"fingerprint: no ensemble ({r['trust_basis']})"
        above = int(r.get("n_above_95") or 0)
        return (f"fingerprint {above} of {n_det} detectors above the 95th percentile "
                f"(trust {int(round(t))}, baseline {r.get('baseline_size', '?')})")
    return f"{probe}: {verdict}"


def _ordered(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for r in results:  # the first result of a probe wins (callers pass the newest first or one per probe)
        if r.get("probe") in seen:
            continue
        seen.add(r.get("probe"))
        out.append(r)
    pos = {p: i for i, p in enumerate(PIPELINE_ORDER)}
    return sorted(out, key=lambda r: (pos.get(str(r.get("probe")), len(pos)), str(r.get("probe"))))


def layered_verdict(results: list[dict[str, Any]], failed: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """Combine probe results (``to_dict()`` form, one per probe) into ``{score, band, verdict, evidence}``.

    ``failed`` lists ``(probe, error)`` of probes that did not complete. A static scan that failed leaves the
    subject's files unread: the verdict can then not be ``clean`` (at best ``inconclusive``), whatever the
    behavioural probes said. Also returns ``contributions`` ({probe: risk}) and ``driver`` (the probe that set
    the score).
    """
    done = _ordered([r for r in results if Verdict.parse(r.get("verdict")) is not None])
    failed = [(p, e) for p, e in failed if p not in {r.get("probe") for r in done}]
    static_failed = next((e for p, e in failed if p == "static"), None)
    if not done:
        evidence = "no probe completed" + (f"; static scan failed: {static_failed}" if static_failed else "")
        return {"score": None, "band": None, "verdict": Verdict.INCONCLUSIVE.value, "evidence": evidence,
                "contributions": {}, "driver": None}
    contrib = {}
    for r in done:
        risk = probe_risk(r)
        if risk is not None:
            contrib[r["probe"]] = risk
    if contrib:
        driver = max(contrib, key=lambda k: contrib[k])
        score = contrib[driver]
        corroborating = [p for p, v in contrib.items() if v > 30 and p != driver]
        if score > 30 and corroborating:
            score = min(100.0, score + 10.0 * len(corroborating))
        score_i = int(round(score))
    else:
        driver, score_i = None, None
    decisive = [v for v in (Verdict(r["verdict"]) for r in done) if v.decisive]
    verdict = Verdict.worst(decisive) or Verdict.INCONCLUSIVE
    evidence = "; ".join(_evidence(r) for r in done)
    if static_failed is not None:
        evidence = f"static scan failed ({static_failed}); " + evidence
        if verdict is Verdict.CLEAN:  # unread files are never clean
            verdict = Verdict.INCONCLUSIVE
            score_i = max(score_i or 0, Band.MEDIUM.floor)
    return {"score": score_i, "band": band(score_i), "verdict": verdict.value, "evidence": evidence,
            "contributions": {k: int(round(v)) for k, v in contrib.items()}, "driver": driver}


def latest_per_probe(runs: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """From a subject's run rows: the newest finished result of each probe, and probes whose newest attempt failed.

    A run row carries ``probe``, ``status``, ``id`` (newer = larger) and ``result`` (the probe's
    ``to_dict()``), as :class:`casefiles.CaseStore` returns them. A probe whose newest run failed while an
    older one finished keeps the older result (history counts until replaced); a probe that never finished
    and whose newest run failed is reported in the second list.
    """
    newest_done: dict[str, dict[str, Any]] = {}
    newest_any: dict[str, dict[str, Any]] = {}
    for r in sorted(runs, key=lambda r: r.get("id") or 0):
        probe = r.get("probe")
        if not probe:
            continue
        newest_any[probe] = r
        if r.get("status") == "done" and isinstance(r.get("result"), dict):
            newest_done[probe] = r
    # The run row names the probe (a result JSON edited outside the tool may not): never a KeyError in a report.
    results = [{**newest_done[p]["result"], "probe": p} for p in newest_done]
    failed = [(p, str(r.get("error") or r.get("status"))) for p, r in newest_any.items()
              if p not in newest_done and r.get("status") == "failed"]
    return results, failed


def subject_verdict(runs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The one verdict of a subject from its run rows: :func:`layered_verdict` of the latest run per probe."""
    results, failed = latest_per_probe(runs)
    return layered_verdict(results, failed)


def case_verdict(subject_verdicts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A case's verdict: the worst subject verdict (decisive ones first) and the highest risk."""
    vs = list(subject_verdicts)
    decisive = [Verdict(v["verdict"]) for v in vs if Verdict(v["verdict"]).decisive]
    verdict = Verdict.worst(decisive) or (Verdict.INCONCLUSIVE if vs else None)
    scores = [v["score"] for v in vs if v.get("score") is not None]
    score = max(scores) if scores else None
    return {"verdict": verdict.value if verdict else None, "score": score, "band": band(score),
            "subjects": len(vs)}
