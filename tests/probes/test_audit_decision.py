"""Unit tests of the shared data-audit machinery (no trained model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from probes import audit_decision as ad
from probes.context import RunContext
from probes.data import LabelledData
from probes.errors import ProbeError


def test_two_means_1d_finds_the_gap_and_scores_bimodality():
    rng = np.random.default_rng(0)
    v = np.r_[rng.normal(0, 1, 300), rng.normal(8, 1, 100)]
    thr, r2 = ad.two_means_1d(v)
    assert 2 < thr < 6
    assert r2 > 0.85
    _, r2_uni = ad.two_means_1d(rng.normal(0, 1, 400))
    assert 0.55 < r2_uni < 0.72  # 2/pi for a Gaussian: a unimodal split explains far less
    assert ad.two_means_1d(np.ones(5)) == (1.0, 0.0)


def test_trigger_mask_picks_the_constant_patch_not_the_content():
    rng = np.random.default_rng(1)
    clean = rng.uniform(0, 1, (80, 1, 8, 8)).astype(np.float32)
    poison = rng.uniform(0, 1, (60, 1, 8, 8)).astype(np.float32) + 0.1  # small content shift
    poison[:, :, 6:8, 6:8] = 1.0
    clean[:, :, 6:8, 6:8] = 0.0
    mask = ad.trigger_mask(poison, clean, 0.5)
    assert mask.shape == (1, 8, 8)
    assert mask[0, 6:8, 6:8].all() and mask.sum() == 4


def test_refine_with_mask_recovers_misassigned_members():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (100, 1, 8, 8)).astype(np.float32) * 0.5
    truth = np.zeros(100, bool)
    truth[:50] = True
    x[truth, :, :2, :2] = 1.0
    start = truth.copy()
    start[:10] = False  # 10 poisoned samples on the wrong side of the geometric split
    start[60:63] = True  # and 3 clean ones
    assert np.array_equal(ad.refine_with_mask(x, start, fraction=0.5), truth)


def test_precision_recall_over_the_whole_set():
    truth = np.zeros(10, bool)
    truth[:4] = True
    pr = ad.precision_recall(np.array([0, 1, 2, 5]), truth, 10)
    assert pr["precision"] == 0.75 and pr["recall"] == 0.75 and pr["f1"] == 0.75
    assert ad.precision_recall(np.array([], np.int64), np.zeros(10, bool), 10)["precision"] == 1.0
    assert ad.precision_recall(np.array([1]), None, 10) is None


class _Subject:
    """Just enough of an ImageClassifier for input validation."""

    input_shape = (1, 4, 4)
    num_classes = 3
    feature_fn = None

    def check_input(self, x):
        if tuple(x.shape[1:]) != self.input_shape:
            raise ProbeError("shape mismatch")


@pytest.mark.parametrize("audit, match", [
    (None, "needs a suspect training set"),
    (LabelledData(np.zeros((6, 1, 4, 4), np.float32), np.zeros(6, np.int64)), "single class"),
    (LabelledData(np.zeros((6, 1, 4, 4), np.float32), np.array([0, 1, 2, 3, 0, 1])), "model has 3 classes"),
    (LabelledData(np.zeros((6, 1, 4, 4), np.float32), np.zeros(5, np.int64)), "matching x"),
    (LabelledData(np.full((6, 1, 4, 4), np.nan, np.float32), np.array([0, 1] * 3)), "NaN"),
    ("not data", "LabelledData"),
])
def test_prepare_rejects_bad_audits(audit, match):
    with pytest.raises(ProbeError, match=match):
        ad.prepare(_Subject(), RunContext("spectral", {"seed": 0, "layer": None}, audit=audit))


def test_score_histogram_survives_degenerate_scores():
    from probes.audit_decision import score_histogram

    assert score_histogram(np.array([np.nan, np.inf])) == {"range": None, "counts": []}
    flat = score_histogram(np.full(7, 3.0))  # every sample alike: one bin holds them all
    assert flat["range"] == [3.0, 3.0] and sum(flat["counts"]) == 7 and max(flat["counts"]) == 7
    two = score_histogram(np.r_[np.zeros(30), np.ones(10) * 5], bins=10)
    assert two["counts"][0] == 30 and two["counts"][-1] == 10 and sum(two["counts"][1:-1]) == 0
