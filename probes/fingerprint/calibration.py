"""Calibrate every detector against the clean baseline and aggregate into a trust score.

Calibration (per detector × representation)
-------------------------------------------
Raw anomaly scores of different detectors are not comparable. For each one we
build its *null distribution*: the out-of-sample score of every baseline model
when the detector is fitted on the other baseline models — leave-one-out when
the baseline has at most ``loo_max`` models (default 30), otherwise 10-fold
cross-fitting (each model scored by a fit that never saw it). A new model is
scored by the detector fitted on the whole baseline and placed in that null:

* ``percentile``  fraction of the baseline's out-of-sample scores below it (0-1);
* ``exceedance``  ``(s - median) / spread`` of the null, where ``median + spread``
  is a robust estimate of the null's 95th percentile (the 90th percentile's
  distance scaled as for a normal distribution: one odd clean model must not
  inflate it as it would the empirical q95 of a small baseline): 0 at a
  typical clean model, 1 at the clean 95th percentile, 3 far beyond it.

Aggregation (an attacker must fool every detector at once)
----------------------------------------------------------
The model's *aggregate* is the largest exceedance over the detectors (so a
single detector that sees the model far outside the clean cloud is enough).
Because the maximum of six scores is itself inflated for clean models, the
aggregate is calibrated once more against the baseline's own leave-out
aggregates ``A_null``:

``trust_score = 100 * clip((A - median(A_null)) / spread(A_null) / 2, 0, 1)``

where the spread is the larger of the robust 95th-percentile spread and the
empirical 90th percentile's distance from the median (a model less extreme
than one clean baseline model in ten must not score high). A typical clean
model scores near 0, the clean 95th percentile 50 (medium) and a model twice as
far out 100.
``n_above_95`` counts detectors above their own 95th percentile (the evidence
line quotes it). Bands: 0-30 low, 31-60 medium, 61-100 high.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probes.fingerprint.ensemble import DETECTORS, Pipeline, excluded_detectors
from probes.progress import check_cancel

CALIBRATION_VERSION = 1


def one_thread():
    """BLAS/OpenMP limited to one thread while fitting (tiny matrices; 2 shared cores)."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        import contextlib

        return contextlib.nullcontext()


def _folds(n: int, loo_max: int, seed: int) -> list[np.ndarray]:
    if n <= loo_max:
        return [np.array([i]) for i in range(n)]
    rng = np.random.default_rng([seed, 0xC0])
    perm = rng.permutation(n)
    return [np.sort(f) for f in np.array_split(perm, 10)]


def null_scores(B: np.ndarray, detector: str, representation: str, *, seed: int = 0, loo_max: int = 30,
                cancel=None) -> np.ndarray:
    """Out-of-sample anomaly score of every baseline row (leave-one-out or 10-fold cross-fitting)."""
    n = len(B)
    out = np.empty(n)
    with one_thread():
        for held in _folds(n, loo_max, seed):
            check_cancel(cancel)
            train = np.setdiff1d(np.arange(n), held)
            out[held] = Pipeline(detector, representation, seed).fit(B[train]).score(B[held])
    return out


def percentile(null: np.ndarray, s: np.ndarray) -> np.ndarray:
    null = np.sort(np.asarray(null))
    s = np.atleast_1d(s)
    below = np.searchsorted(null, s, side="left")
    equal = np.searchsorted(null, s, side="right") - below
    return (below + 0.5 * equal) / len(null)


# a normal distribution's 95th percentile is 1.645 sd above the median, its 75th 0.674 sd
Q95_OVER_Q75 = 1.645 / 0.6745


def robust_q95(null: np.ndarray) -> tuple[float, float]:
    """``(median, spread)``: spread is the distance from the median to a robust 95th-percentile estimate.

    The empirical q95 of a 10-50 model baseline is essentially its maximum, which
    one odd clean model can blow up by orders of magnitude (a Gaussian mixture's
    negative log-likelihood does); so the 90th percentile's distance, scaled as
    for a normal distribution (1.645 / 1.2816), is used instead (the upper
    quartile's when the 90th percentile equals the median).
    """
    null = np.asarray(null, np.float64)
    med = float(np.median(null))
    q75, q90 = float(np.quantile(null, 0.75)), float(np.quantile(null, 0.90))
    spread = (q90 - med) * 1.645 / 1.2816
    if not spread > 0:
        spread = Q95_OVER_Q75 * (q75 - med)
    if not spread > 0:
        spread = max(float(np.std(null)) * 1.645, 1e-9 * (abs(med) + 1.0))
    return med, spread


def exceedance(null: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``(s - median) / spread`` of the null: 0 at a typical clean model, 1 at its (robust) 95th percentile."""
    med, spread = robust_q95(null)
    return (np.atleast_1d(s) - med) / spread


def trust_from_aggregate(a: np.ndarray, a_null: np.ndarray) -> np.ndarray:
    """0 at the baseline's median aggregate, 50 at its 95th percentile, 100 at twice that distance.

    The spread is the larger of the robust estimate and the empirical 90th percentile's distance:
    the clean aggregates are a maximum over detectors with a heavier upper tail than a normal law,
    and a model that is less extreme than one clean baseline model in ten must not score high.
    """
    med, spread = robust_q95(a_null)
    spread = max(spread, float(np.quantile(a_null, 0.90)) - med)
    return 100.0 * np.clip((np.atleast_1d(a) - med) / spread / 2.0, 0.0, 1.0)


@dataclass
class Calibration:
    """Null distributions of each (detector, representation) on one baseline."""

    detectors: list[str]
    representations: list[str]
    nulls: dict[str, np.ndarray]  # "det/rep" -> (n,) out-of-sample scores
    excluded: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    n: int = 0
    method: str = ""

    def key(self, det: str, rep: str) -> str:
        return f"{det}/{rep}"

    def aggregate_null(self) -> np.ndarray:
        """Each baseline model's aggregate (max exceedance), against nulls without its own score."""
        n = self.n
        ex = np.zeros((n, len(self.nulls)))
        for j, null in enumerate(self.nulls.values()):
            for i in range(n):
                others = np.delete(null, i)
                ex[i, j] = exceedance(others, null[i])[0]
        return aggregate(ex)

    def to_json(self) -> dict[str, Any]:
        return {"version": CALIBRATION_VERSION, "detectors": self.detectors, "representations": self.representations,
                "nulls": {k: v.tolist() for k, v in self.nulls.items()}, "excluded": self.excluded,
                "seed": self.seed, "n": self.n, "method": self.method}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibration:
        return cls(list(d["detectors"]), list(d["representations"]),
                   {k: np.asarray(v, np.float64) for k, v in d["nulls"].items()}, dict(d.get("excluded") or {}),
                   int(d.get("seed", 0)), int(d["n"]), d.get("method", ""))


def aggregate(exceedances: np.ndarray) -> np.ndarray:
    """Rows of per-detector exceedances -> one aggregate per row (the maximum: every detector must be fooled)."""
    e = np.atleast_2d(exceedances)
    return e.max(axis=1) if e.shape[1] else np.zeros(len(e))


def calibrate(B: np.ndarray, *, detectors=DETECTORS, representations=("pca",), seed: int = 0,
              loo_max: int = 30, cancel=None, progress=None) -> Calibration:
    """Fit the null distribution of every usable detector on baseline rows ``B``."""
    B = np.asarray(B, np.float64)
    n = len(B)
    excluded = excluded_detectors(n, detectors)
    use = [d for d in detectors if d not in excluded]
    nulls = {}
    total = max(1, len(use) * len(representations))
    step = 0
    for det in use:
        for rep in representations:
            nulls[f"{det}/{rep}"] = null_scores(B, det, rep, seed=seed, loo_max=loo_max, cancel=cancel)
            step += 1
            if progress:
                progress(step, total, f"calibrated {det} on {rep}")
    method = "leave-one-out" if n <= loo_max else "10-fold cross-fitting"
    return Calibration(use, list(representations), nulls, excluded, seed, n, method)


def calibration_key(B: np.ndarray, names: list[str], *, detectors, representations, seed: int, loo_max: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CALIBRATION_VERSION, list(names), list(detectors), list(representations), seed,
                         loo_max]).encode())
    h.update(np.ascontiguousarray(np.asarray(B, np.float64)).tobytes())
    return h.hexdigest()


def cached_calibration(B, names, *, cache_dir: str | Path | None, detectors=DETECTORS,
                       representations=("pca",), seed: int = 0, loo_max: int = 30, cancel=None,
                       progress=None) -> tuple[Calibration, bool]:
    """:func:`calibrate`, reusing a JSON cache under ``cache_dir`` keyed by the baseline's content."""
    path = None
    if cache_dir:
        key = calibration_key(B, names, detectors=detectors, representations=representations, seed=seed,
                              loo_max=loo_max)
        path = Path(cache_dir) / "fingerprint-calibration" / f"{key}.json"
        if path.exists():
            try:
                return Calibration.from_json(json.loads(path.read_text())), True
            except (ValueError, KeyError, OSError):
                pass
    cal = calibrate(B, detectors=detectors, representations=representations, seed=seed, loo_max=loo_max,
                    cancel=cancel, progress=progress)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cal.to_json()))
            tmp.replace(path)
        except OSError:
            pass
    return cal, False


def score_against(cal: Calibration, B: np.ndarray, T: np.ndarray, *, cancel=None) -> dict[str, Any]:
    """Score rows ``T`` with detectors fitted on the whole baseline ``B``; calibrated against ``cal``.

    Returns per (detector/representation) raw scores, percentiles and exceedances
    (arrays over the rows of ``T``), per-detector calibrated percentile (the max over
    representations), ``n_above_95``, the aggregate and ``trust_score`` per row.
    """
    T = np.atleast_2d(np.asarray(T, np.float64))
    raw, pct, exc = {}, {}, {}
    for key, null in cal.nulls.items():
        check_cancel(cancel)
        det, rep = key.split("/")
        with one_thread():
            s = Pipeline(det, rep, cal.seed).fit(B).score(T)
        raw[key], pct[key], exc[key] = s, percentile(null, s), exceedance(null, s)
    keys = list(cal.nulls)
    E = np.stack([exc[k] for k in keys], axis=1) if keys else np.zeros((len(T), 0))
    agg = aggregate(E)
    a_null = cal.aggregate_null() if keys else np.zeros(1)
    trust = trust_from_aggregate(agg, a_null) if keys else np.full(len(T), np.nan)
    per_det_pct = {}
    for det in cal.detectors:
        ks = [k for k in keys if k.startswith(det + "/")]
        per_det_pct[det] = np.max(np.stack([pct[k] for k in ks]), axis=0)
    above = np.sum(np.stack([per_det_pct[d] > 0.95 for d in cal.detectors]), axis=0) if cal.detectors \
        else np.zeros(len(T), int)
    return {"raw": raw, "percentile": pct, "exceedance": exc, "detector_percentile": per_det_pct,
            "n_above_95": above, "aggregate": agg, "aggregate_null": a_null, "trust_score": trust}
