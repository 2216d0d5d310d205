"""Activation-clustering audit of a suspect training set (Chen et al., SafeAI@AAAI 2019).

Per class: centre the representations (default: the penultimate layer),
reduce them to ``n_components`` dimensions (PCA, default 10; ``reduce="ica"``
for FastICA as in the paper), run 2-means, and report the silhouette score and
the relative size of the smaller cluster. A class is *tested* when the split
is real (silhouette >= ``min_silhouette``, smaller cluster >=
``min_relative_size`` of the class); it is judged *poisoned* only when the
shared transplant test (:mod:`probes.audit_decision`) finds that one cluster's
distinguishing input feature is a trigger. The flagged cluster is the one
whose feature transplants, not "the smaller one": with 10% of a ten-class set
poisoned into one class, the poison is about half of that class.

Parameters (declared in :mod:`probes.registry`; the audit set is ``ctx.audit``): ``seed`` (0), ``layer``,
``n_components`` (10), ``reduce`` ("pca+ica" | "pca" | "ica"), ``min_silhouette`` (0.10),
``min_relative_size`` (0.02), ``max_relative_size`` (0.5: set e.g. 0.35 to
require a minority cluster as in the paper), ``silhouette_samples`` (1000),
``min_transplant``, ``min_asymmetry``, ``mask_fraction``, ``transplant_samples``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from probes import audit_decision as ad
from probes.context import RunContext
from probes.result import ProbeResult

PROBE = "activation-clustering"


def cluster_class(reps: np.ndarray, n_components: int, reduce: str, seed: int,
                  silhouette_samples: int) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Centre, reduce, 2-means: ``(labels (n,) bool — True = smaller cluster, silhouette, relative size, axis)``.

    ``axis`` is each sample's signed position along the line joining the two cluster centres (0 midway,
    positive towards the smaller cluster): the one-dimensional view of the split that reports draw.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    r = reps - reps.mean(0)
    n, d = r.shape
    k = max(1, min(n_components, n - 1, d))
    from sklearn.decomposition import PCA

    z = PCA(n_components=k, random_state=seed).fit_transform(r)
    if reduce == "ica":
        # ICA on the PCA scores (dead units and zero-variance directions removed first);
        # if it does not produce finite sources we keep the PCA scores.
        import warnings

        from sklearn.decomposition import FastICA

        keep = z.std(0) > 1e-9 * max(float(z.std(0).max()), 1e-300)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                zi = FastICA(n_components=int(keep.sum()), random_state=seed, whiten="unit-variance",
                             max_iter=400).fit_transform(z[:, keep])
            if np.isfinite(zi).all():
                z = zi
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            pass
    if not np.isfinite(z).all() or np.allclose(z, 0):
        return np.zeros(n, bool), 0.0, 0.0, np.zeros(n)
    labels = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(z).astype(bool)
    if labels.all() or not labels.any():
        return np.zeros(n, bool), 0.0, 0.0, np.zeros(n)
    if labels.mean() > 0.5:
        labels = ~labels
    sample = min(n, silhouette_samples)
    sil = float(silhouette_score(z, labels, sample_size=sample if sample < n else None, random_state=seed))
    c_small, c_large = z[labels].mean(0), z[~labels].mean(0)
    d = c_small - c_large
    axis = (z - (c_small + c_large) / 2) @ d / max(float(np.linalg.norm(d)), 1e-12)
    return labels, sil, float(labels.mean()), axis


def run(subject: Any, ctx: RunContext) -> ProbeResult:
    """Probe entry point (``activation-clustering``): per class, reduce and 2-means, then judge the split."""
    t0 = time.perf_counter()
    p = ctx.params
    n_comp, reduce = int(p["n_components"]), str(p["reduce"])
    min_sil, min_rel, max_rel = float(p["min_silhouette"]), float(p["min_relative_size"]), float(p["max_relative_size"])
    inputs = ad.prepare(subject, ctx)

    def splits(idx: np.ndarray, cls: int) -> Iterator[ad.Split]:
        for method in reduce.split("+"):
            small, sil, rel, axis = cluster_class(inputs.reps[idx], n_comp, method, inputs.seed,
                                                  int(p["silhouette_samples"]))
            ok = sil >= min_sil and min_rel <= rel <= max_rel
            why = (f"no clear 2-cluster structure (silhouette {sil:.2f}, smaller cluster {rel:.0%}; "
                   f"needs >= {min_sil} and {min_rel:.0%}..{max_rel:.0%})")
            stats = {"reduction": method, "silhouette": round(sil, 4), "relative_size": round(rel, 4),
                     "score_hist": {"of": "position between the two cluster centres", **ad.score_histogram(axis)}}
            yield small, ok, why, stats

    decisions = ad.audit_classes(subject, ctx, inputs, splits, min_size=max(ad.MIN_CLASS_SIZE, 3),
                                 too_small=f"too few samples to judge (< {ad.MIN_CLASS_SIZE})")
    return ad.assemble(PROBE, decisions, inputs, p,
                       {"method": f"activation clustering (Chen et al. 2019), {reduce.upper()}-{n_comp} + 2-means "
                                  "+ transplant test"},
                       time.perf_counter() - t0)
