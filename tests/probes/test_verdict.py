"""The layered verdict: evidence line, band-respecting combination, fingerprint trust."""

from __future__ import annotations

from vocabulary.layered import band, layered_verdict, probe_risk

STATIC_CLEAN = {"probe": "static", "verdict": "clean", "score": 0.0, "findings": []}
NC_FLAG = {"probe": "neural-cleanse", "verdict": "backdoored", "score": 4.3 / 6.3, "anomaly_index": 4.3,
           "suspected_target": 0}
NC_CLEAN = {"probe": "neural-cleanse", "verdict": "clean", "score": 1.8 / 3.8, "anomaly_index": 1.8,
            "suspected_target": None}


def fp(trust, above=2, n=6, verdict="suspicious", size=32):
    return {"probe": "fingerprint", "verdict": verdict, "score": (trust or 0) / 100, "trust_score": trust,
            "n_above_95": above, "n_detectors": n, "detectors": {f"d{i}": 0.5 for i in range(n)},
            "baseline_size": size}


def test_evidence_line_reads_like_the_issue():
    v = layered_verdict([STATIC_CLEAN, NC_FLAG, fp(72)])
    assert v["evidence"].startswith("static: clean; Neural Cleanse anomaly index 4.30 → class 0; "
                                    "fingerprint 2 of 6 detectors above the 95th percentile")
    assert v["verdict"] == "backdoored" and v["band"] == "high"
    assert v["driver"] in ("neural-cleanse", "fingerprint")


def test_pipeline_order_whatever_the_input_order():
    v = layered_verdict([fp(10, 0, verdict="clean"), NC_CLEAN, STATIC_CLEAN])
    assert v["evidence"].index("static") < v["evidence"].index("Neural Cleanse") < v["evidence"].index("fingerprint")


def test_clean_probe_cannot_lift_risk_above_low():
    v = layered_verdict([STATIC_CLEAN, NC_CLEAN])
    assert v["band"] == "low" and v["verdict"] == "clean"
    assert probe_risk(NC_CLEAN) <= 30


def test_flagged_probe_always_reaches_high_band():
    nc = dict(NC_FLAG, score=0.51)
    assert probe_risk(nc) > 60
    assert layered_verdict([STATIC_CLEAN, nc])["band"] == "high"


def test_fingerprint_trust_used_as_is_and_corroboration_raises():
    alone = layered_verdict([STATIC_CLEAN, NC_CLEAN, fp(45, 1, verdict="inconclusive")])
    assert alone["score"] == 45 and alone["band"] == "medium"
    both = layered_verdict([STATIC_CLEAN, NC_FLAG, fp(70)])
    assert both["score"] >= 80 and both["score"] <= 100


def test_fingerprint_without_baseline_adds_evidence_but_no_score():
    no_base = {"probe": "fingerprint", "verdict": "inconclusive", "score": 0.0, "trust_score": None,
               "detectors": {}, "baseline_size": 0}
    v = layered_verdict([STATIC_CLEAN, NC_CLEAN, no_base])
    assert "fingerprint: no baseline" in v["evidence"]
    assert v["verdict"] == "clean"  # inconclusive does not outrank a decisive clean
    assert v["band"] == "low"


def test_only_inconclusive_results_stay_inconclusive():
    no_base = {"probe": "fingerprint", "verdict": "inconclusive", "score": 0.0, "trust_score": None}
    v = layered_verdict([no_base])
    assert v["verdict"] == "inconclusive" and v["score"] is None and v["band"] is None


def test_malicious_static_dominates():
    v = layered_verdict([{"probe": "static", "verdict": "malicious", "score": 1.0, "findings": [{}, {}]}])
    assert v["score"] == 100 and v["band"] == "high" and v["verdict"] == "malicious"
    assert "static: malicious (2 findings)" in v["evidence"]


def test_empty_and_bands():
    assert layered_verdict([])["verdict"] == "inconclusive"
    assert band(30) == "low" and band(31) == "medium" and band(60) == "medium" and band(61) == "high"
    assert band(None) is None


def test_newest_result_of_a_probe_wins():
    v = layered_verdict([NC_FLAG, NC_CLEAN])  # newest first, as the TUI passes them
    assert "4.30" in v["evidence"] and "1.80" not in v["evidence"]


def test_nan_and_missing_scores_are_tolerated():
    v = layered_verdict([{"probe": "strip", "verdict": "clean", "score": None},
                         {"probe": "fingerprint", "verdict": "clean", "score": 0.1, "trust_score": float("nan")}])
    assert v["verdict"] == "clean" and v["band"] == "low"
