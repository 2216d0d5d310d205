"""Six novelty detectors over four representations of standardised fingerprints.

Every detector is fitted on clean baseline fingerprints only and returns an
*anomaly score* for new rows (higher = less like the baseline):

=============  ======================================================================
``iforest``    Isolation Forest (64 trees), negated ``score_samples``
``ocsvm``      One-Class SVM (RBF, ``gamma="scale"``, nu 0.1), negated decision function
``gmm``        Gaussian mixture (diagonal covariances, 1-2 components by BIC), negative log-likelihood
``autoencoder`` an MLP trained to reproduce its input through a 2-4 unit tanh bottleneck
               (scikit-learn ``MLPRegressor``, L-BFGS, weight decay 1.0); mean squared
               reconstruction error, each feature scaled by its baseline residual RMS
``mahalanobis`` PCA to the components explaining 95% of the variance, then Mahalanobis
               distance with a Ledoit-Wolf shrinkage covariance
``lof``        Local Outlier Factor with ``novelty=True``, negated ``score_samples``
=============  ======================================================================

Representations (all fitted on the baseline only, after standardisation by the
baseline's median and a floored spread):

* ``raw``     the standardised features;
* ``pca``     principal components (95% of the variance, at most n-2);
* ``ica``     FastICA sources on as many components;
* ``rproj``   a seeded Gaussian random projection to ``min(d, 16)`` dimensions.

Each detector states a minimum baseline size; below it the detector is
*excluded* with a reason instead of fitted on too little (see
:data:`MIN_BASELINE`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

DETECTORS = ("iforest", "ocsvm", "gmm", "autoencoder", "mahalanobis", "lof")
REPRESENTATIONS = ("raw", "pca", "ica", "rproj")

# fewest baseline models a detector is fitted on (in leave-one-out calibration it sees one fewer)
MIN_BASELINE = {"iforest": 8, "ocsvm": 6, "gmm": 8, "autoencoder": 10, "mahalanobis": 5, "lof": 6}
CLIP_Z = 1e3  # standardised values are clipped here so one absurd feature cannot overflow a detector


def excluded_detectors(n_baseline: int, detectors=DETECTORS) -> dict[str, str]:
    """Detectors that cannot be calibrated on a baseline of ``n_baseline`` models, with the reason."""
    out = {}
    for d in detectors:
        need = MIN_BASELINE[d] + 1  # leave-one-out fits on n - 1
        if n_baseline < need:
            out[d] = f"needs at least {need} baseline models for leave-one-out calibration, have {n_baseline}"
    return out


class Standardiser:
    """Centre on the baseline median, scale by a floored robust spread; constant features are dropped."""

    def fit(self, X: np.ndarray) -> Standardiser:
        X = np.asarray(X, np.float64)
        self.center = np.median(X, axis=0)
        q75, q25 = np.percentile(X, [75, 25], axis=0)
        iqr = (q75 - q25) / 1.349
        sd = X.std(axis=0)
        spread = np.maximum(iqr, sd)
        scale_floor = 1e-3 * (np.abs(self.center) + 1e-3)
        self.keep = spread > scale_floor
        self.scale = np.where(self.keep, np.maximum(spread, scale_floor), 1.0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, np.float64) - self.center) / self.scale
        return np.clip(Z[:, self.keep], -CLIP_Z, CLIP_Z)


class Representation:
    def __init__(self, kind: str, seed: int = 0):
        if kind not in REPRESENTATIONS:
            raise ValueError(f"unknown representation {kind!r}")
        self.kind, self.seed = kind, seed

    def fit(self, Z: np.ndarray) -> Representation:
        n, d = Z.shape
        self.model = None
        if self.kind == "raw" or d == 0:
            return self
        if self.kind == "rproj":
            k = min(d, 16)
            rng = np.random.default_rng([self.seed, 0x52])
            self.proj = rng.normal(size=(d, k)) / np.sqrt(k)
            return self
        from sklearn.decomposition import PCA

        cap = max(1, min(d, n - 2))
        pca = PCA(n_components=cap, svd_solver="full").fit(Z)
        k = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), 0.95) + 1)
        k = max(1, min(k, cap))
        if self.kind == "pca":
            self.model = PCA(n_components=k, svd_solver="full").fit(Z)
        else:
            from sklearn.decomposition import FastICA

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = FastICA(n_components=k, whiten="unit-variance", random_state=self.seed,
                                     max_iter=400, tol=1e-3).fit(Z)
        return self

    def transform(self, Z: np.ndarray) -> np.ndarray:
        if self.kind == "raw" or Z.shape[1] == 0:
            return Z
        if self.kind == "rproj":
            return Z @ self.proj
        return self.model.transform(Z)


def _final_scale(R: np.ndarray):
    mu = R.mean(0)
    sd = R.std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    return mu, sd


@dataclass
class Detector:
    name: str
    seed: int = 0

    def fit(self, R: np.ndarray) -> Detector:
        n, d = R.shape
        self.mu, self.sd = _final_scale(R)
        X = (R - self.mu) / self.sd
        name = self.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "iforest":
                from sklearn.ensemble import IsolationForest

                self.m = IsolationForest(n_estimators=64, random_state=self.seed).fit(X)
            elif name == "ocsvm":
                from sklearn.svm import OneClassSVM

                self.m = OneClassSVM(nu=0.1, gamma="scale").fit(X)
            elif name == "gmm":
                from sklearn.mixture import GaussianMixture

                best = None
                for k in (1, 2) if n >= 16 else (1,):
                    g = GaussianMixture(k, covariance_type="diag", reg_covar=1e-2, random_state=self.seed,
                                        n_init=1).fit(X)
                    bic = g.bic(X)
                    if best is None or bic < best[0]:
                        best = (bic, g)
                self.m = best[1]
            elif name == "autoencoder":
                from sklearn.neural_network import MLPRegressor

                h = max(2, min(4, d // 4, n // 8))
                self.m = MLPRegressor(hidden_layer_sizes=(h,), activation="tanh", solver="lbfgs", alpha=1.0,
                                      max_iter=200, random_state=self.seed).fit(X, X)
                # per-feature residual scale on the baseline: a deviation in a feature the code
                # reconstructs well counts more than one in a feature it never captures
                res = self.m.predict(X).reshape(X.shape) - X
                self.res_rms = np.sqrt(np.mean(res ** 2, axis=0)) + 0.1
            elif name == "mahalanobis":
                from sklearn.covariance import LedoitWolf
                from sklearn.decomposition import PCA

                cap = max(1, min(d, n - 2))
                pca = PCA(n_components=cap, svd_solver="full").fit(X)
                k = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), 0.95) + 1)
                self.pca = PCA(n_components=max(1, min(k, cap)), svd_solver="full").fit(X)
                P = self.pca.transform(X)
                self.lw = LedoitWolf().fit(P)
                # residual outside the kept subspace counts too (scaled by its baseline level)
                res = X - self.pca.inverse_transform(P)
                self.res_scale = float(np.mean(np.sum(res ** 2, 1))) + 1e-6
            elif name == "lof":
                from sklearn.neighbors import LocalOutlierFactor

                self.m = LocalOutlierFactor(n_neighbors=max(2, min(10, n - 1)), novelty=True).fit(X)
            else:
                raise ValueError(f"unknown detector {name!r}")
        return self

    def score(self, R: np.ndarray) -> np.ndarray:
        X = (np.asarray(R, np.float64) - self.mu) / self.sd
        name = self.name
        if name in ("iforest", "lof"):
            return -self.m.score_samples(X)
        if name == "ocsvm":
            return -self.m.decision_function(X)
        if name == "gmm":
            return -self.m.score_samples(X)
        if name == "autoencoder":
            return np.mean(((self.m.predict(X).reshape(X.shape) - X) / self.res_rms) ** 2, axis=1)
        if name == "mahalanobis":
            P = self.pca.transform(X)
            md = self.lw.mahalanobis(P)
            res = X - self.pca.inverse_transform(P)
            return md + np.sum(res ** 2, 1) / self.res_scale
        raise ValueError(name)


class Pipeline:
    """Standardise → representation → detector, fitted on baseline rows; ``score`` new rows."""

    def __init__(self, detector: str, representation: str = "raw", seed: int = 0):
        self.detector, self.representation, self.seed = detector, representation, seed

    def fit(self, X: np.ndarray) -> Pipeline:
        self.std = Standardiser().fit(X)
        Z = self.std.transform(X)
        self.rep = Representation(self.representation, self.seed).fit(Z)
        self.det = Detector(self.detector, self.seed).fit(self.rep.transform(Z))
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        s = self.det.score(self.rep.transform(self.std.transform(np.atleast_2d(X))))
        return np.where(np.isfinite(s), s, np.finfo(np.float64).max / 1e6)
