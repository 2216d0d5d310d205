"""The six detectors, four representations and the calibration (synthetic fingerprints, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from probes.fingerprint import calibration as C
from probes.fingerprint.ensemble import DETECTORS, REPRESENTATIONS, Pipeline, Standardiser, excluded_detectors


def clouds(n=30, d=12, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d)) * np.linspace(0.5, 3.0, d) + 5.0
    inlier = rng.normal(size=(4, d)) * np.linspace(0.5, 3.0, d) + 5.0
    outlier = inlier + 8.0 * np.linspace(0.5, 3.0, d)
    return base, inlier, outlier


@pytest.mark.parametrize("rep", REPRESENTATIONS)
@pytest.mark.parametrize("det", DETECTORS)
def test_every_detector_ranks_outliers_above_inliers(det, rep):
    base, inlier, outlier = clouds()
    p = Pipeline(det, rep, seed=0).fit(base)
    s_in, s_out = p.score(inlier), p.score(outlier)
    assert s_in.shape == (4,) and np.isfinite(s_in).all() and np.isfinite(s_out).all()
    assert s_out.min() > np.median(s_in), (det, rep, s_in, s_out)


def test_pipelines_are_deterministic_per_seed():
    base, inlier, outlier = clouds()
    x = np.vstack([inlier, outlier])
    for det in DETECTORS:
        a = Pipeline(det, "ica", 3).fit(base).score(x)
        b = Pipeline(det, "ica", 3).fit(base).score(x)
        assert np.allclose(a, b), det


def test_standardiser_drops_constant_features_and_clips():
    X = np.column_stack([np.ones(10), np.arange(10.0)])
    s = Standardiser().fit(X)
    Z = s.transform(np.array([[1.0, 1e12]]))
    assert Z.shape == (1, 1) and Z[0, 0] == pytest.approx(1e3)


def test_small_baselines_exclude_detectors_with_reasons():
    ex = excluded_detectors(7)
    assert set(ex) == {"iforest", "gmm", "autoencoder"}
    assert all("baseline models" in r for r in ex.values())
    assert excluded_detectors(11) == {}
    assert set(excluded_detectors(2)) == set(DETECTORS)


def test_calibration_percentiles_and_trust():
    base, inlier, outlier = clouds(n=16)
    cal = C.calibrate(base, representations=("raw",), seed=0)
    assert cal.method == "leave-one-out" and set(cal.detectors) == set(DETECTORS)
    out = C.score_against(cal, base, np.vstack([inlier, outlier]))
    trust = out["trust_score"]
    assert trust.shape == (8,) and ((0 <= trust) & (trust <= 100)).all()
    assert trust[4:].min() == 100 and np.median(trust[:4]) < 50
    assert (out["n_above_95"][4:] == len(DETECTORS)).all()
    for d in DETECTORS:
        assert (out["detector_percentile"][d][4:] == 1.0).all()


def test_large_baseline_uses_cross_fitting():
    rng = np.random.default_rng(1)
    cal = C.calibrate(rng.normal(size=(40, 5)), detectors=("mahalanobis", "lof"), loo_max=30)
    assert cal.method == "10-fold cross-fitting" and len(cal.nulls["lof/pca"]) == 40


def test_calibration_cache_roundtrip(tmp_path):
    base, inlier, _ = clouds(n=14)
    names = [f"f{i}" for i in range(base.shape[1])]
    a, cached_a = C.cached_calibration(base, names, cache_dir=tmp_path, detectors=("ocsvm", "lof"))
    b, cached_b = C.cached_calibration(base, names, cache_dir=tmp_path, detectors=("ocsvm", "lof"))
    assert not cached_a and cached_b
    assert all(np.allclose(a.nulls[k], b.nulls[k]) for k in a.nulls)
    assert np.allclose(C.score_against(a, base, inlier)["trust_score"], C.score_against(b, base, inlier)["trust_score"])


def test_percentile_and_exceedance():
    null = np.arange(1.0, 21.0)
    assert C.percentile(null, np.array([0.0, 10.0, 100.0])).tolist() == [0.0, 0.475, 1.0]
    from scipy.stats import norm

    gauss = norm.ppf(np.linspace(0.01, 0.99, 99))
    e = C.exceedance(gauss, np.array([0.0, 1.645]))
    assert e[0] == pytest.approx(0.0, abs=1e-9) and e[1] == pytest.approx(1.0, abs=0.05)
    # one absurd clean model does not inflate the spread (the empirical q95 would be ~1e6 here)
    spiked = np.append(gauss[:-1], 1e7)
    assert C.exceedance(spiked, np.array([5.0]))[0] > 2.5


def test_cancel_stops_calibration():
    import threading

    from probes.errors import Cancelled

    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        C.calibrate(np.random.default_rng(0).normal(size=(12, 4)), cancel=ev)
