"""Report figures: drawn from stored results of any shape, deterministic, and never blank."""

from __future__ import annotations

import io

import numpy as np
import pytest

from casefiles import figures as F


def _pixels(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


def _run(result: dict, rid: int = 1, probe: str = "x") -> dict:
    return {"id": rid, "status": "done", "probe": probe, "params": {}, "result": result}


def test_stamp_applies_the_trigger_where_the_mask_is():
    x = np.zeros((2, 3, 4, 4))
    mask = np.zeros((4, 4))
    mask[0, 0] = 1.0
    mask[1, 1] = 0.5
    pattern = np.ones((3, 4, 4))
    out = F.stamp(x, mask, pattern)
    assert out[:, :, 0, 0].min() == 1.0 and out[:, :, 1, 1].max() == 0.5 and out[:, :, 3, 3].max() == 0.0


@pytest.mark.parametrize("shape", [(1, 12, 12), (3, 32, 32), (3, 20, 28)])
def test_trigger_figure_for_any_image_shape(shape):
    rng = np.random.default_rng(0)
    c, h, w = shape
    mask = np.zeros((h, w))
    mask[-3:, -3:] = 1
    clean = rng.random((4, c, h, w))
    fig = F.trigger_figure(mask, rng.random((c, h, w)), clean, 7, target=2)
    px = _pixels(fig.png)
    assert fig.name == "figure-v1-trigger.png" and px.std() > 0.05
    assert "4 clean inputs" in fig.caption and "target class 2" in fig.caption
    assert F.trigger_figure(mask, rng.random((c, h, w)) * 0 + 0.5, None, 7).caption.endswith("not available).")


def test_figures_are_deterministic():
    result = {"per_class": [{"class": c, "l1_norm": v} for c, v in enumerate([3.0, 30.0, 31.0, 29.0, 35.0])]}
    a = F.figures_for_run(_run(result), lambda n: None)
    b = F.figures_for_run(_run(result), lambda n: None)
    assert [f.png for f in a] == [f.png for f in b] and len(a) == 1


def test_hunt_fingerprint_and_remediation_figures():
    ranking = [{"candidate": f"tok{i}", "kl": 1.0 / (i + 1), "z": 10.0 - i} for i in range(12)]
    figs = F.figures_for_run(_run({"ranking": ranking, "separation": {"z_threshold": 4.0}}), lambda n: None)
    assert [f.name for f in figs] == ["figure-v1-ranking.png"]
    fp = {"detectors": {"iforest": 0.99, "lof": 0.42, "mahalanobis": 0.97}, "calibration": {"baseline_size": 20}}
    figs = F.figures_for_run(_run(fp), lambda n: None)
    assert [f.name for f in figs] == ["figure-v1-fingerprint.png"]
    rem = {"before": {"clean_accuracy": 0.96, "attack_success": 1.0}, "after": {"clean_accuracy": 0.94, "attack_success": 0.03}}
    figs = F.figures_for_run(_run(rem, probe="remediate"), lambda n: None)
    assert [f.name for f in figs] == ["figure-v1-remediation.png"]
    for f in figs:
        assert _pixels(f.png).std() > 0.05


def test_nothing_to_draw_for_unfinished_or_figureless_runs():
    assert F.figures_for_run({"id": 1, "status": "failed", "result": None}, lambda n: None) == []
    assert F.figures_for_run(_run({"summary": "clean", "findings": []}), lambda n: None) == []
    assert F.load_npy(b"not an npy file") is None
