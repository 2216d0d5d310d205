"""Null models fitted to the subject's own per-class statistics: a p-value for the most extreme class.

Detectors that compute one statistic per class (a maximum margin, an inverted trigger's size) judge
the most extreme class against the *other* classes of the same model, never against a threshold
tuned on some zoo: a gamma distribution is fitted (maximum likelihood, location fixed just below
the sample) to the other ``K - 1`` statistics, leave-one-out, and the p-value of the extreme class
is corrected for having picked the largest of ``K`` (``1 - F(s)^K``, the order-statistic form MM-BD
uses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class NullFit:
    """The leave-one-out null of one detector's per-class statistics."""

    candidate: int  # index of the most extreme (largest) statistic
    statistic: float
    p_value: float  # order-statistic corrected
    p_single: float  # uncorrected tail probability under the fitted null
    shape: float
    scale: float
    loc: float
    n_null: int

    def to_dict(self) -> dict:
        return {"candidate": self.candidate, "statistic": round(self.statistic, 6), "p_value": float(self.p_value),
                "p_single": float(self.p_single), "gamma_shape": round(self.shape, 6),
                "gamma_scale": round(self.scale, 6), "gamma_loc": round(self.loc, 6), "n_null": self.n_null}


def largest_pvalue(stats, candidate: int | None = None) -> NullFit:
    """Fit a gamma to every statistic but the largest (or ``candidate``) and return its corrected p-value.

    Needs at least 3 classes (2 statistics in the null); larger statistics are more suspicious.
    """
    from scipy import stats as st

    s = np.asarray(stats, float)
    if s.ndim != 1 or len(s) < 3 or not np.isfinite(s).all():
        raise ValueError("need at least 3 finite per-class statistics")
    k = len(s)
    cand = int(np.argmax(s)) if candidate is None else int(candidate)
    rest = np.delete(s, cand)
    spread = float(rest.max() - rest.min())
    loc = float(rest.min()) - max(spread, abs(float(rest.min())), 1e-6) * 0.05 - 1e-9
    z = rest - loc
    if np.ptp(z) <= 1e-12 * max(1.0, float(z.mean())):
        # degenerate null (all equal): anything above it is infinitely unlikely, anything at it is typical
        p1 = 0.0 if s[cand] > rest.max() + 1e-9 else 1.0
        return NullFit(cand, float(s[cand]), p1, p1, float("inf"), 0.0, loc, k - 1)
    try:
        a, _, scale = st.gamma.fit(z, floc=0.0)
    except Exception:  # noqa: BLE001 - fall back to the method of moments
        m, v = float(z.mean()), float(z.var()) or 1e-12
        a, scale = m * m / v, v / m
    p1 = float(st.gamma.sf(float(s[cand]) - loc, a, scale=scale))
    p = float(-np.expm1(k * np.log1p(-min(p1, 1 - 1e-16)))) if p1 > 0 else 0.0
    return NullFit(cand, float(s[cand]), min(1.0, p), p1, float(a), float(scale), loc, k - 1)


def p_to_score(p: float, alpha: float) -> float:
    """A 0-1 score that is 0.5 at ``p = alpha``, 1 as ``p -> 0`` and 0 at ``p = 1``."""
    p = min(1.0, max(float(p), 1e-300))
    if p >= 1.0:
        return 0.0
    lp, la = np.log(p), np.log(alpha)
    return float(lp / (lp + la))
