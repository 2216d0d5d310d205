"""Spectral-signature audit on the digits zoo: BadNets targets, clean set, layers, shapes, bad inputs."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from digits_fixtures import badnets_cnn, badnets_mlp, clean_cnn, rgb_badnets, torch_one_thread  # noqa: F401

from probes import spectral
from probes.context import context_for
from probes.data import LabelledData
from probes.errors import Cancelled, ProbeError

pytestmark = pytest.mark.xdist_group("digits")


def _audit(zm):
    x, y, is_p = zm.train
    return LabelledData(x, y, is_p, source=zm.name)


@pytest.fixture(scope="session")
def spectral_badnets(badnets_cnn):
    return spectral.run(badnets_cnn.subject(), context_for("spectral", audit=_audit(badnets_cnn))).to_dict()


def test_badnets_audit_meets_the_targets(spectral_badnets, badnets_cnn):
    r = spectral_badnets
    assert r["poisoned_classes"] == [badnets_cnn.attack.target]
    assert r["verdict"] in ("suspicious", "backdoored") and r["score"] >= 0.8
    assert r["recall"] >= 0.9 and r["precision"] >= 0.8
    flagged_labels = set(badnets_cnn.train[1][r["flagged_indices"]].tolist())
    assert flagged_labels == {badnets_cnn.attack.target}  # nothing flagged outside the poisoned class
    assert r["layer"] == "input:head"
    json.dumps(r)


def test_per_class_rows_carry_the_statistics(spectral_badnets, badnets_cnn):
    rows = spectral_badnets["per_class"]
    assert [row["class"] for row in rows] == list(range(10))
    assert sum(row["n"] for row in rows) == len(badnets_cnn.train[1])
    for row in rows:
        assert {"poisoned", "flagged", "score_max", "score_median", "r2", "reason"} <= set(row)
        assert row["flagged"] == 0 or row["poisoned"]
        assert sum(row["score_hist"]["counts"]) == row["n"]  # every sample of the class in its distribution
    target = rows[badnets_cnn.attack.target]
    assert target["transplant_rate"] >= 0.8 and target["transplant_baseline"] <= 0.1


def test_clean_training_set_flags_nothing(clean_cnn):
    r = spectral.run(clean_cnn.subject(), context_for("spectral", audit=_audit(clean_cnn))).to_dict()
    assert r["flagged_indices"] == [] and r["poisoned_classes"] == []
    assert r["verdict"] == "clean" and r["score"] < 0.5
    assert all(not row["poisoned"] for row in r["per_class"])


def test_deterministic_for_a_seed_and_records_params(badnets_mlp):
    audit = _audit(badnets_mlp)
    a = spectral.run(badnets_mlp.subject(), context_for("spectral", {"seed": 3}, audit=audit)).to_dict()
    b = spectral.run(badnets_mlp.subject(), context_for("spectral", {"seed": 3}, audit=audit)).to_dict()
    a.pop("duration_s"), b.pop("duration_s")
    assert a == b
    assert a["n_samples"] == len(audit) and a["params"]["seed"] == 3
    assert a["recall"] >= 0.8  # a second architecture (MLP) and target (7)


def test_named_layer(badnets_cnn):
    r = spectral.run(badnets_cnn.subject(), context_for("spectral", {"layer": "fc"}, audit=_audit(badnets_cnn))).to_dict()
    assert r["layer"] == "fc" and r["params"]["layer"] == "fc"
    assert len(r["per_class"]) == 10
    with pytest.raises(ProbeError, match="no layer named"):
        spectral.run(badnets_cnn.subject(), context_for("spectral", {"layer": "nope"}, audit=_audit(badnets_cnn)))


def test_colour_model_with_five_classes(rgb_badnets):
    r = spectral.run(rgb_badnets.subject(), context_for("spectral", audit=_audit(rgb_badnets))).to_dict()
    assert len(r["per_class"]) == 5
    assert r["poisoned_classes"] == [rgb_badnets.attack.target]
    assert r["recall"] >= 0.8 and r["precision"] >= 0.8


def test_bad_inputs(badnets_cnn):
    subject = badnets_cnn.subject()
    x, y, _ = badnets_cnn.train
    with pytest.raises(ProbeError, match="--audit"):
        spectral.run(subject, context_for("spectral"))
    with pytest.raises(ProbeError, match="shape"):
        spectral.run(subject, context_for("spectral", audit=LabelledData(x[:, :, :8, :8].copy(), y)))
    with pytest.raises(ProbeError, match="single class"):
        spectral.run(subject, context_for("spectral", audit=LabelledData(x[y == 1], y[y == 1])))
    with pytest.raises(ProbeError, match="n_directions"):
        spectral.run(subject, context_for("spectral", {"n_directions": "many"}, audit=LabelledData(x[:50], y[:50])))


def test_progress_and_cancel(badnets_mlp):
    audit = _audit(badnets_mlp)
    seen = []
    spectral.run(badnets_mlp.subject(), context_for("spectral", audit=audit, on_progress=seen.append))
    assert (seen[-1].done, seen[-1].total, seen[-1].unit) == (10, 10, "classes") and len(seen) == 10
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        spectral.run(badnets_mlp.subject(), context_for("spectral", audit=audit, cancel=stop))


def test_no_global_random_state_touched(badnets_mlp):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    spectral.run(badnets_mlp.subject(), context_for("spectral", audit=_audit(badnets_mlp)))
    assert np.array_equal(np.random.get_state()[1], before)


def test_torchscript_subject_uses_its_penultimate_layer(badnets_cnn, tmp_path):
    from probes.subjects.loader import load_subject
    from probes.zoo.digits import save_model

    subject = load_subject(save_model(badnets_cnn, tmp_path, "torchscript"), input_shape=(1, 16, 16))
    assert subject.feature_fn is not None
    r = spectral.run(subject, context_for("spectral", audit=_audit(badnets_cnn))).to_dict()
    assert r["poisoned_classes"] == [badnets_cnn.attack.target] and r["recall"] >= 0.9
    with pytest.raises(ProbeError, match="exposes only the layer"):
        spectral.run(subject, context_for("spectral", {"layer": "fc"}, audit=_audit(badnets_cnn)))
