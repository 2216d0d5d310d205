"""The impact assessment (pure function) that Neural Cleanse attaches to its result."""

from __future__ import annotations

import numpy as np

from probes.impact import assess, trigger_specificity


def test_patch_in_a_corner():
    m = np.zeros((16, 16))
    m[12:15, 12:15] = 1.0
    spec = trigger_specificity(m)
    assert spec["bbox"] == [12, 12, 14, 14] and spec["location"] == "bottom-right"
    assert spec["active_pixels"] == 9 and spec["compactness"] == 1.0
    out = assess(m, None, anomaly_index=5.0, suspected_target=3, trigger_asr=0.97, clean_accuracy=0.95)
    assert out["backdoored"] and out["attack_type_guess"] == "patch"
    assert [t["id"] for t in out["atlas"]] == ["AML.T0018", "AML.T0020"]
    assert "class 3" in out["statement"]


def test_diffuse_mask_is_blended_and_clean_maps_to_nothing():
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 0.1, (16, 16))
    out = assess(m, None, anomaly_index=3.0, suspected_target=1)
    assert out["attack_type_guess"] == "blended/diffuse"
    clean = assess(m, None, anomaly_index=1.0, suspected_target=None)
    assert not clean["backdoored"] and clean["atlas"] == [] and clean["attack_type_guess"] == "none"
    assert trigger_specificity(np.zeros((4, 4)))["bbox"] is None
