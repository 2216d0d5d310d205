"""Neural Cleanse: detection on the digits zoo, determinism, cancel, shape independence, bad inputs."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
from digits_fixtures import (  # noqa: F401
    badnets_cnn,
    badnets_mlp,
    clean_cnn,
    clean_data,
    digits,
    nc_badnets_result,
    rgb_badnets,
    torch_one_thread,
)

from probes import neural_cleanse as nc
from probes.context import context_for
from probes.data import LabelledData
from probes.errors import Cancelled, ProbeError

pytestmark = pytest.mark.xdist_group("digits")

FAST = {"steps": 120, "refine_steps": 10}


def _ctx(params=None, *, data=None, on_progress=None, cancel=None, **extra):
    kw = {"data": data, "on_progress": on_progress}
    if cancel is not None:
        kw["cancel"] = cancel
    return context_for("neural-cleanse", {**(params or {}), **extra}, **kw)


def test_flags_badnets_with_the_right_target(nc_badnets_result):
    d = nc_badnets_result.to_dict()
    json.dumps(d)
    assert d["verdict"] == "backdoored" and d["anomaly_index"] > 2 and d["suspected_target"] == 3
    assert 0.5 < d["score"] <= 1
    norms = {c["class"]: c["l1_norm"] for c in d["per_class"]}
    assert len(norms) == 10 and min(norms, key=norms.get) == 3
    assert all({"class", "l1_norm", "attack_success", "steps"} <= set(c) for c in d["per_class"])
    mask = np.array(d["mask"])
    assert mask.shape == (16, 16)
    # the recovered mask sits on the true 3x3 patch (rows/cols 12-14)
    r, c = np.unravel_index(np.argmax(mask), mask.shape)
    assert 11 <= r <= 15 and 11 <= c <= 15
    assert np.array(d["pattern"]).shape == (16, 16)
    assert d["trigger_attack_success_heldout"] >= 0.8
    assert d["data_source"].startswith("data:")
    imp = d["impact"]
    assert imp["backdoored"] and imp["target_class"] == 3 and imp["attack_type_guess"] == "patch"
    assert {t["id"] for t in imp["atlas"]} == {"AML.T0018", "AML.T0020"}
    assert imp["clean_accuracy"] > 0.9 and imp["trigger"]["location"] == "bottom-right"
    m = np.load(io.BytesIO(nc_badnets_result.artifacts["mask.npy"]))
    assert m.shape == (16, 16)
    assert np.load(io.BytesIO(nc_badnets_result.artifacts["pattern.npy"])).shape == (1, 16, 16)


def test_clean_model_stays_below_threshold(clean_cnn, clean_data):
    d = nc.run(clean_cnn.subject(), _ctx(data=clean_data)).to_dict()
    assert d["verdict"] == "clean" and d["anomaly_index"] < 2 and d["suspected_target"] is None
    assert d["impact"]["atlas"] == [] and d["impact"]["attack_type_guess"] == "none"


def test_deterministic_for_a_seed_and_records_params(badnets_mlp, clean_data):
    subj = badnets_mlp.subject()
    a = nc.run(subj, _ctx(FAST, seed=5, data=clean_data)).to_dict()
    b = nc.run(subj, _ctx(FAST, seed=5, data=clean_data)).to_dict()
    for key in ("anomaly_index", "per_class", "mask", "pattern", "suspected_target"):
        assert a[key] == b[key]
    assert a["params"]["seed"] == 5 and a["params"]["steps"] == FAST["steps"]
    c = nc.run(subj, _ctx(FAST, seed=6, data=clean_data)).to_dict()
    assert c["per_class"] != a["per_class"]


def test_progress_and_cancel_within_a_step(badnets_mlp, clean_data):
    subj = badnets_mlp.subject()
    seen = []
    ev = threading.Event()

    def progress(e):
        seen.append(e)
        if e.done == 3:
            ev.set()

    with pytest.raises(Cancelled):
        nc.run(subj, _ctx(FAST, data=clean_data, on_progress=progress, cancel=ev))
    assert seen[-1].done == 3  # stopped at the first check after the event, not at the end
    assert seen[-1].probe == "neural-cleanse" and seen[-1].total == FAST["steps"] + FAST["refine_steps"]
    assert seen[-1].unit == "steps" and "step 3" in seen[-1].message
    ev2 = threading.Event()
    ev2.set()
    with pytest.raises(Cancelled):
        nc.run(subj, _ctx(data=clean_data, cancel=ev2))


def test_shape_independence_colour_24x24_five_classes(rgb_badnets):
    xte, yte = rgb_badnets.test
    assert rgb_badnets.asr >= 0.85
    d = nc.run(rgb_badnets.subject(), _ctx(data=LabelledData(xte, yte))).to_dict()
    assert len(d["per_class"]) == 5
    assert np.array(d["mask"]).shape == (24, 24) and np.array(d["pattern"]).shape == (3, 24, 24)
    assert d["candidate_class"] == 2
    norms = sorted(c["l1_norm"] for c in d["per_class"])
    assert norms[0] < 0.5 * norms[1]


def test_synthetic_fallback_is_recorded(badnets_mlp):
    d = nc.run(badnets_mlp.subject(), _ctx(FAST)).to_dict()
    assert d["data_source"].startswith("synthetic")
    assert d["clean_accuracy"] is None
    assert "[synthetic inputs]" in d["summary"]


def test_bad_inputs_raise_probe_error(badnets_mlp, digits):
    subj = badnets_mlp.subject()
    _, _, xte, yte = digits
    with pytest.raises(ProbeError, match="shape"):
        nc.run(subj, _ctx(data=LabelledData(np.zeros((50, 1, 8, 8), np.float32), yte[:50])))
    with pytest.raises(ProbeError, match="single class"):
        nc.run(subj, _ctx(data=LabelledData(xte[yte == 1], yte[yte == 1])))
    with pytest.raises(ProbeError, match="labels"):
        nc.run(subj, _ctx(data=LabelledData(xte[:50], yte[:50] + 20)))
    with pytest.raises(ProbeError):
        nc.run(subj, _ctx(data="not data"))


def test_anomaly_index_is_lower_tail_mad():
    norms = np.array([10.0, 11, 9, 10, 12, 10, 9, 11, 10, 1])
    ai = nc.anomaly_indices(norms)
    med = np.median(norms)
    mad = 1.4826 * np.median(np.abs(norms - med))
    assert ai[-1] == pytest.approx((med - 1) / mad)
    assert ai[4] == 0.0  # above the median: never anomalous
    big = nc.anomaly_indices(np.array([10.0, 11, 9, 10, 12, 10, 9, 11, 10, 100]))
    assert big.max() < 2  # an unusually *large* trigger does not flag anything


def test_runs_on_a_torchscript_subject_from_the_loader(tmp_path, badnets_mlp, clean_data):
    from probes.subjects.loader import load_subject
    from probes.zoo.digits import save_model

    subj = load_subject(save_model(badnets_mlp, tmp_path, "torchscript"), device="cpu")
    d = nc.run(subj, _ctx(FAST, data=clean_data)).to_dict()
    assert d["candidate_class"] == 7 and len(d["per_class"]) == 10


@pytest.mark.parametrize("key,value,needle", [
    ("asr_window", 0, "out of range"), ("recheck_runs", -1, "out of range"), ("recheck_margin", float("nan"), "finite"),
    ("attack_success_target", 1.5, "out of range"), ("steps", "many", "integer"), ("lr", True, "number"),
    ("holdout_fraction", 1.0, "out of range"),
])
def test_bad_parameters_are_refused_before_any_work(key, value, needle):
    from probes.registry import get

    spec = get("neural-cleanse")
    with pytest.raises(ProbeError, match=needle):
        spec.resolve_params({key: value})
    assert spec.resolve_params({})["asr_window"] == spec.param("asr_window").default  # defaults pass untouched


def test_synthetic_range_must_be_ordered(badnets_mlp):
    with pytest.raises(ProbeError, match="input_min"):
        nc.run(badnets_mlp.subject(), _ctx(FAST, input_min=1.0, input_max=0.0))
