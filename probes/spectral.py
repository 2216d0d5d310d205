"""Spectral-signature audit of a suspect training set (Tran, Li & Madry, NeurIPS 2018).

Per class: centre the representations (default: the penultimate layer), take
the top right-singular vector, score every sample by its squared projection
(the paper's outlier score). Unlike the paper we do not remove a fixed
fraction of every class: the signed projection is split in two by exact
1-D 2-means, and the shared per-class decision (:mod:`probes.audit_decision`)
asks whether that split is a backdoor (the transplant test) and which side is
the poison. Only classes judged poisoned get flags.

Parameters (declared in :mod:`probes.registry`; the audit set is ``ctx.audit``): ``seed`` (0), ``layer`` (penultimate),
``n_directions`` (2: the top singular directions tried per class; the one
whose split transplants best is kept), ``min_r2`` (0.5: a split explaining
less of the variance along its direction is not tested), ``min_transplant``,
``min_asymmetry``, ``mask_fraction``, ``transplant_samples`` (see
docs/data-audits.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from probes import audit_decision as ad
from probes.context import RunContext
from probes.result import ProbeResult

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


def run(subject: Any, ctx: RunContext) -> ProbeResult:
    """Probe entry point (``spectral``): per class, split on the top singular directions, then judge the split."""
    t0 = time.perf_counter()
    n_dir, min_r2 = int(ctx.params["n_directions"]), float(ctx.params["min_r2"])
    inputs = ad.prepare(subject, ctx)

    def splits(idx: np.ndarray, cls: int) -> Iterator[ad.Split]:
        proj, sv = class_scores(inputs.reps[idx], n_dir)
        scores = proj[:, 0] ** 2
        base_stats = {"score_max": round(float(scores.max()), 6), "score_median": round(float(np.median(scores)), 6),
                      "top_singular_share": round(float(sv[0] ** 2 / max((sv ** 2).sum(), 1e-300)), 4)}
        for j in range(proj.shape[1]):
            thr, r2 = ad.two_means_1d(proj[:, j])
            group_a = proj[:, j] > thr
            stats = {**base_stats, "direction": j, "r2": round(r2, 4),
                     "split_fraction": round(float(min(group_a.mean(), 1 - group_a.mean())), 4),
                     "score_hist": {"of": f"projection on singular direction {j}", **ad.score_histogram(proj[:, j])}}
            yield group_a, r2 >= min_r2, f"weak split (r2 {r2:.2f} < {min_r2})", stats

    decisions = ad.audit_classes(subject, ctx, inputs, splits, min_size=3, too_small="too few samples to judge")
    return ad.assemble(PROBE, decisions, inputs, ctx.params,
                       {"method": "spectral signatures (Tran et al. 2018) + transplant test"},
                       time.perf_counter() - t0)
