"""Spectral-signature audit of a suspect training set (Tran, Li & Madry, NeurIPS 2018).

Per class: centre the representations (default: the penultimate layer), take
the top right-singular vector, score every sample by its squared projection
(the paper's outlier score). Unlike the paper we do not remove a fixed
fraction of every class: the signed projection is split in two by exact
1-D 2-means, and the shared per-class decision (:mod:`probes.audit_decision`)
asks whether that split is a backdoor (the transplant test) and which side is
the poison. Only classes judged poisoned get flags.

Params (all optional except ``audit``): ``seed`` (0), ``layer`` (penultimate),
``n_directions`` (2: the top singular directions tried per class; the one
whose split transplants best is kept), ``min_r2`` (0.5: a split explaining
less of the variance along its direction is not tested), ``min_transplant``,
``min_asymmetry``, ``mask_fraction``, ``transplant_samples`` (see
docs/data-audits.md).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from probes import audit_decision as ad
from probes.params import number
from probes.progress import check_cancel, null_progress

PROBE = "spectral"


def class_scores(reps: np.ndarray, n_directions: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Centred projections on the top ``n_directions`` right-singular vectors: ``(proj (n, k), sv)``.

    Uses the eigen-decomposition of the small Gram or covariance matrix,
    whichever is smaller, instead of a full SVD.
    """
    r = reps - reps.mean(0)
    n, d = r.shape
    k = max(1, min(n_directions, n - 1, d))
    if d <= n:
        w, v = np.linalg.eigh(r.T @ r)  # ascending
        vt = v[:, ::-1][:, :k]
        proj = r @ vt
    else:
        w, u = np.linalg.eigh(r @ r.T)
        u = u[:, ::-1][:, :k]
        proj = u * np.sqrt(np.maximum(w[::-1][:k], 0.0))
    sv = np.sqrt(np.maximum(w[::-1], 0.0))
    return proj, sv


def check_params(params: dict) -> tuple[int, float, dict[str, Any]]:
    """``(n_directions, min_r2, decision params)``, checked (ProbeError for a wrong type or range)."""
    return (number(params, "n_directions", 2, int, 1, 16, probe=PROBE),
            number(params, "min_r2", 0.5, float, 0.0, 1.0, probe=PROBE), ad.decision_params(params, PROBE))


def run(subject: Any, params: dict, *, progress=None, cancel=None):
    t0 = time.perf_counter()
    progress = progress or null_progress
    params = dict(params or {})
    n_dir, min_r2, shared = check_params(params)
    inputs = ad.prepare(subject, params, PROBE)
    x, y = inputs.audit.x, inputs.audit.y
    rng = np.random.default_rng(inputs.seed)
    decisions = []
    total = len(inputs.classes)
    for i, cls in enumerate(inputs.classes):
        check_cancel(cancel)
        idx = np.flatnonzero(y == cls)
        best = None
        if len(idx) >= 3:
            proj, sv = class_scores(inputs.reps[idx], n_dir)
            scores = proj[:, 0] ** 2
            med = float(np.median(scores))
            base_stats = {"score_max": round(float(scores.max()), 6), "score_median": round(med, 6),
                          "top_singular_share": round(float(sv[0] ** 2 / max((sv ** 2).sum(), 1e-300)), 4)}
            cache: dict = {}
            for j in range(proj.shape[1]):
                check_cancel(cancel)
                thr, r2 = ad.two_means_1d(proj[:, j])
                group_a = proj[:, j] > thr
                stats = {**base_stats, "direction": j, "r2": round(r2, 4),
                         "split_fraction": round(float(min(group_a.mean(), 1 - group_a.mean())), 4),
                         "score_hist": {"of": f"projection on singular direction {j}",
                                        **ad.score_histogram(proj[:, j])}}
                dec = ad.decide_class(subject, x, y, int(cls), idx, group_a, rng,
                                      split_ok=r2 >= min_r2, split_reason=f"weak split (r2 {r2:.2f} < {min_r2})",
                                      stats=stats, cache=cache, **shared)
                key = (dec.poisoned, dec.stats.get("transplant_rate", -1.0))
                if best is None or key > best[0]:
                    best = (key, dec)
                if dec.poisoned:
                    break
        decisions.append(best[1] if best else ad.ClassDecision(int(cls), len(idx), reason="too few samples to judge"))
        progress(i + 1, total, f"class {int(cls)}")
    check_cancel(cancel)
    return ad.assemble(PROBE, decisions, inputs, params,
                       {"method": "spectral signatures (Tran et al. 2018) + transplant test"},
                       time.perf_counter() - t0)
