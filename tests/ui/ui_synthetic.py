"""A deterministic case file for snapshots and fast UI tests: no torch, fixed results and durations.

The results follow the probes' ``to_dict()`` shapes (each probe module's ``run``).
"""

from __future__ import annotations

import math
from pathlib import Path

L1 = [38.1, 40.2, 36.5, 8.4, 39.0, 41.3, 37.7, 35.9, 42.0, 39.4]


def _anomaly(l1: list[float]) -> list[float]:
    from workbench.ui.render import norm_stats

    st = norm_stats([{"l1_norm": v} for v in l1])
    med, mad = st["median"], st["mad"]
    return [round((med - v) / mad, 4) if v < med else 0.0 for v in l1]


def nc_result(target: int | None = 3) -> dict:
    ai = _anomaly(L1)
    mask = [[0.0] * 16 for _ in range(16)]
    for y in range(12, 15):
        for x in range(12, 15):
            mask[y][x] = 1.0 if (x + y) % 2 == 0 else 0.85
    mask[3][4] = 0.12
    pattern = [[round(0.5 + 0.5 * math.sin((x + 2 * y) / 3.0), 4) for x in range(16)] for y in range(16)]
    for y in range(12, 15):
        for x in range(12, 15):
            pattern[y][x] = 1.0 if (x + y) % 2 == 0 else 0.0
    return {
        "probe": "neural-cleanse", "verdict": "backdoored", "score": 0.677,
        "summary": f"class 3 needs a trigger of L1 8.4 vs median 38.6: anomaly index {max(ai):.2f} > 2; "
                   "recovered trigger succeeds on 99% of held-out inputs",
        "params": {"steps": 300, "threshold": 2.0, "seed": 0}, "duration_s": 41.7,
        "anomaly_index": max(ai), "suspected_target": target, "candidate_class": 3,
        "per_class": [{"class": i, "l1_norm": v, "attack_success": 0.99, "steps": 120, "anomaly": ai[i],
                       "reached_target": True} for i, v in enumerate(L1)],
        "mask": mask, "pattern": pattern, "mask_l1": 8.4, "trigger_attack_success_heldout": 0.99,
    }


def spectral_result() -> dict:
    per = []
    for c in range(10):
        poisoned = c == 3
        per.append({"class": c, "n": 135, "poisoned": poisoned, "flagged": 115 if poisoned else 0,
                    "score_max": 4.2, "score_median": 0.8, "r2": 0.81 if poisoned else 0.31,
                    "transplant_rate": 0.97 if poisoned else (0.04 if c % 3 else None) or 0.04,
                    "transplant_baseline": 0.02,
                    "score_hist": {"of": "projection on singular direction 0", "range": [-3.0, 5.0],
                                   "counts": ([2, 9, 30, 41, 28, 9, 1, 0, 0, 0, 0, 3, 8, 3, 1, 0] if poisoned
                                              else [1, 3, 8, 15, 24, 30, 24, 15, 8, 4, 2, 1, 0, 0, 0, 0])},
                    "reason": "the flagged group's trigger candidate sends 97% of other classes' images here"
                    if poisoned else "weak split (r2 0.31 < 0.5)"})
    return {"probe": "spectral", "verdict": "backdoored", "score": 0.95,
            "summary": "115 of 1347 samples flagged in poisoned class 3 (precision 1.00, recall 0.85)",
            "params": {"seed": 0}, "duration_s": 2.2, "flagged_indices": list(range(115)), "per_class": per,
            "poisoned_classes": [3], "layer": "fc1", "n_samples": 1347, "precision": 1.0, "recall": 0.85}


def kl_result() -> dict:
    rows = [("zephyr", 6.91, 5.2, "marker", "sweep", 9.8, True), ("silver", 0.42, 0.30, "prefix", "sweep", 2.1, False),
            ("lantern", 0.39, 0.31, "suffix", "sweep", 1.9, None), ("cf", 0.21, 0.18, "marker", "suspicious", 1.1, None),
            ("today", 0.17, 0.12, "suffix", "sweep", 0.8, None), ("number", 0.15, 0.11, "marker", "sweep", 0.6, None)]
    ranking = [{"candidate": c, "kl": kl, "kl_quantile": kl, "kl_mean": m, "position": pos, "source": src, "z": z,
                "n_tokens": 1, "token_ids": [i + 10], **({"confirmed": conf} if conf is not None else {})}
               for i, (c, kl, m, pos, src, z, conf) in enumerate(rows)]
    return {"probe": "kl", "verdict": "backdoored", "score": 0.9,
            "summary": "trigger 'zephyr' (marker): KL q0.1 6.91 nats, z 9.8", "params": {"seed": 0},
            "duration_s": 12.5, "ranking": ranking, "best_candidate": "zephyr"}


def static_result(verdict: str = "clean", findings: list | None = None) -> dict:
    return {"probe": "static", "verdict": verdict, "score": 1.0 if verdict == "malicious" else 0.0,
            "summary": "no findings" if verdict == "clean" else "REDUCE os.getpid at offset 14",
            "params": {}, "duration_s": 0.05, "findings": findings or []}


def _subject(store, case_id: int, name: str, fmt: str, kind: str, sha: str) -> int:
    return store.add_subject(case_id, path=f"/evidence/{name}", sha256=sha * 64, size=123456, format=fmt,
                             kind=kind, files=[{"path": name, "sha256": sha * 64, "size": 123456, "format": fmt}],
                             name=name)


def _run(store, case_id: int, sid: int, result: dict, status: str = "done", error: str | None = None) -> int:
    rid = store.start_run(case_id, sid, result["probe"], result.get("params") or {})
    store.finish_run(rid, status=status, result=result if status == "done" else None, error=error,
                     duration_s=result["duration_s"])
    return rid


def build(db: Path) -> dict:
    from casefiles import CaseStore

    with CaseStore(db, actor="examiner@lab") as store:
        cid = store.new_case("Vendor models 2026-11", "Two classifiers, a language model and a preprocessor pickle.")
        img = _subject(store, cid, "digits-cnn.ts.pt", "torchscript", "image-classifier", "a")
        _run(store, cid, img, static_result())
        nc = _run(store, cid, img, nc_result())
        _run(store, cid, img, spectral_result())
        clean = _subject(store, cid, "digits-clean.ts.pt", "torchscript", "image-classifier", "b")
        _run(store, cid, clean, static_result())
        _run(store, cid, clean, {**static_result(), "probe": "strip", "verdict": None, "duration_s": 3.0},
             status="failed", error="strip needs clean inputs: give a data .npz")
        lm = _subject(store, cid, "tiny-lm", "hf-folder", "causal-lm", "c")
        _run(store, cid, lm, static_result())
        kl = _run(store, cid, lm, kl_result())
        pkl = _subject(store, cid, "preprocessor.pkl", "pickle", "unknown", "d")
        _run(store, cid, pkl, static_result("malicious", [{"file": "preprocessor.pkl", "offset": 14, "opcode": "REDUCE",
                                                           "module": "os", "name": "getpid", "severity": "critical"}]))
        store.save_note(cid, "## Case notes\n\n- digits CNN: class **3** stands out\n")
    return {"db": db, "case_id": cid, "img": img, "clean": clean, "lm": lm, "pkl": pkl, "nc_run": nc, "kl_run": kl}
