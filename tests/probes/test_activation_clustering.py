"""Activation-clustering audit on the digits zoo: BadNets targets, clean set, layers, shapes, bad inputs."""

from __future__ import annotations

import json

import pytest
from digits_fixtures import badnets_cnn, badnets_mlp, clean_cnn, rgb_badnets, torch_one_thread  # noqa: F401

from probes import activation_clustering as ac
from probes.context import context_for
from probes.data import LabelledData
from probes.errors import ProbeError

pytestmark = pytest.mark.xdist_group("digits")


def _audit(zm):
    x, y, is_p = zm.train
    return LabelledData(x, y, is_p, source=zm.name)


def test_badnets_audit_meets_the_targets(badnets_cnn):
    r = ac.run(badnets_cnn.subject(), context_for("activation-clustering", audit=_audit(badnets_cnn))).to_dict()
    target = badnets_cnn.attack.target
    assert r["poisoned_classes"] == [target]
    assert r["recall"] >= 0.9 and r["precision"] >= 0.8
    row = r["per_class"][target]
    assert {"silhouette", "relative_size", "transplant_rate"} <= set(row)
    hist, (lo, hi) = row["score_hist"]["counts"], row["score_hist"]["range"]
    assert sum(hist) == row["n"]
    mid = int((0 - lo) / (hi - lo) * len(hist))  # the bin holding the point midway between the centres
    # positive = towards the smaller cluster: 2-means assigns by that side, so the mass beyond 0 is the cluster
    assert sum(hist[mid + 1:]) <= row["relative_size"] * row["n"] <= sum(hist[mid:])
    # the poison is about half of the target class: "the smaller cluster" would be a coin flip
    assert 0.3 <= row["poison_fraction"] <= 0.7
    json.dumps(r)


def test_clean_training_set_flags_nothing(clean_cnn):
    r = ac.run(clean_cnn.subject(), context_for("activation-clustering", audit=_audit(clean_cnn))).to_dict()
    assert r["flagged_indices"] == [] and r["poisoned_classes"] == [] and r["verdict"] == "clean"
    # clean classes do split (digits have natural sub-styles); the transplant test is what clears them
    assert max(row["silhouette"] for row in r["per_class"]) > 0.2


def test_deterministic_and_ica_option(badnets_mlp):
    audit = _audit(badnets_mlp)
    a = ac.run(badnets_mlp.subject(), context_for("activation-clustering", {"seed": 1}, audit=audit)).to_dict()
    b = ac.run(badnets_mlp.subject(), context_for("activation-clustering", {"seed": 1}, audit=audit)).to_dict()
    a.pop("duration_s"), b.pop("duration_s")
    assert a == b and a["recall"] >= 0.8
    c = ac.run(badnets_mlp.subject(), context_for("activation-clustering", {"reduce": "ica", "n_components": 5}, audit=audit)).to_dict()
    assert "ICA-5" in c["method"] and len(c["per_class"]) == 10


def test_named_layer_and_colour_model(badnets_cnn, rgb_badnets):
    r = ac.run(badnets_cnn.subject(), context_for("activation-clustering", {"layer": "fc"}, audit=_audit(badnets_cnn))).to_dict()
    assert r["layer"] == "fc"
    r = ac.run(rgb_badnets.subject(), context_for("activation-clustering", audit=_audit(rgb_badnets))).to_dict()
    assert len(r["per_class"]) == 5 and r["poisoned_classes"] == [rgb_badnets.attack.target]
    assert r["recall"] >= 0.8 and r["precision"] >= 0.8


def test_bad_inputs(badnets_mlp):
    subject = badnets_mlp.subject()
    x, y, _ = badnets_mlp.train
    with pytest.raises(ProbeError, match="--audit"):
        ac.run(subject, context_for("activation-clustering", {"seed": 0}))
    with pytest.raises(ProbeError, match="shape"):
        ac.run(subject, context_for("activation-clustering", audit=LabelledData(x[:, :, 1:, 1:].copy(), y)))
    with pytest.raises(ProbeError, match="single class"):
        ac.run(subject, context_for("activation-clustering", audit=LabelledData(x[y == 4], y[y == 4])))
    with pytest.raises(ProbeError, match="reduce"):
        ac.run(subject, context_for("activation-clustering", {"reduce": "tsne"}, audit=LabelledData(x, y)))
