"""STRIP: entropy across classes, FAR/FRR on BadNets, use of a Neural Cleanse trigger, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from digits_fixtures import badnets_cnn, clean_cnn, clean_data, digits, nc_badnets_result, poisoned_mix, torch_one_thread  # noqa: F401

from probes import strip
from probes.context import context_for
from probes.data import LabelledData
from probes.errors import ProbeError

pytestmark = pytest.mark.xdist_group("digits")


def _const_subject(logits_row, shape=(1, 4, 4)):
    import torch

    from probes.subjects.base import ImageClassifier

    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.as_tensor(logits_row, dtype=torch.float32).expand(x.shape[0], -1)

    return ImageClassifier.from_module(Const(), shape, device="cpu")


def test_entropy_is_taken_across_classes_per_copy(torch_one_thread):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(6, 1, 4, 4)).astype(np.float32)
    uniform = strip.entropies(_const_subject([0.0] * 8), x, x, 5, 0.5, rng)
    assert np.allclose(uniform, 3.0)  # log2(8) bits for a flat 8-class prediction
    sure = strip.entropies(_const_subject([50.0] + [0.0] * 7), x, x, 5, 0.5, rng)
    assert np.allclose(sure, 0.0, atol=1e-6)


def test_badnets_poisoned_inputs_far_and_frr(badnets_cnn, nc_badnets_result):
    data = poisoned_mix(badnets_cnn)
    trig = {k: nc_badnets_result.details[k] for k in ("mask", "pattern", "suspected_target")}
    r = strip.run(badnets_cnn.subject(), context_for("strip", data=data, earlier={"neural-cleanse": trig}))
    d = r.to_dict()
    json.dumps(d)
    assert d["verdict"] == "backdoored"
    assert d["frr"] <= 0.05 and d["far"] == d["far_poisoned"] and d["far"] <= 0.2
    assert d["far_stamped"] <= 0.3 and d["trigger_source"] == "neural-cleanse" and d["trigger_target"] == 3
    g = d["groups"]
    assert g["poisoned"]["entropy_mean"] < 0.6 * g["clean"]["entropy_mean"]
    assert d["entropy_threshold"] > 0 and d["groups"]["poisoned"]["n"] > 0


def test_clean_model_with_clean_data_and_no_trigger(clean_cnn, clean_data):
    d = strip.run(clean_cnn.subject(), context_for("strip", {"quick_nc": False}, data=clean_data)).to_dict()
    assert d["verdict"] == "inconclusive" and d["far"] is None and d["trigger_source"] is None
    assert d["frr"] <= 0.05 and d["groups"]["clean"]["n"] > 0


def test_deterministic_and_unflagged_trigger_is_not_evidence(clean_cnn, clean_data):
    trig = {"mask": np.zeros((16, 16)).tolist(), "pattern": np.zeros((16, 16)).tolist(), "suspected_target": None}
    a = strip.run(clean_cnn.subject(), context_for("strip", {"seed": 3}, data=clean_data, inputs={"trigger": trig})).to_dict()
    b = strip.run(clean_cnn.subject(), context_for("strip", {"seed": 3}, data=clean_data, inputs={"trigger": trig})).to_dict()
    assert a["trigger_source"] == "given"
    assert a["entropy_threshold"] == b["entropy_threshold"] and a["groups"] == b["groups"]
    assert a["verdict"] == "clean" and a["trigger_flagged"] is False


def test_bad_inputs(clean_cnn, digits):
    subj = clean_cnn.subject()
    _, _, xte, yte = digits
    with pytest.raises(ProbeError, match="--data"):
        strip.run(subj, context_for("strip"))
    with pytest.raises(ProbeError, match="shape"):
        strip.run(subj, context_for("strip", data=LabelledData(np.zeros((60, 3, 16, 16), np.float32), yte[:60])))
    with pytest.raises(ProbeError, match="single class"):
        strip.run(subj, context_for("strip", data=LabelledData(xte[yte == 2], yte[yte == 2])))
    with pytest.raises(ProbeError, match="trigger"):
        strip.run(subj, context_for("strip", {"quick_nc": False}, data=LabelledData(xte, yte),
                                    inputs={"trigger": {"mask": [[1.0]], "pattern": [[1.0]]}}))
    with pytest.raises(ProbeError, match="blend"):
        context_for("strip", {"blend": "multiply"})
