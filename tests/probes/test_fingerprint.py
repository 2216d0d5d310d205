"""The fingerprint probe: features, baselines (stored and folder), calibration, no-baseline honesty."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from probes.context import context_for

pytestmark = pytest.mark.xdist_group("digits")


@pytest.fixture(scope="session")
def fzoo():
    """A small, fast zoo: 12 clean MLPs (different seeds), one BadNets and one blended MLP."""
    import torch

    torch.set_num_threads(1)
    from probes.zoo.digits import AttackSpec, build_model

    clean = [build_model("mlp", seed=s, epochs=6) for s in range(12)]
    badnets = build_model("mlp", AttackSpec("badnets", target=3, rate=0.15, patch_size=4), seed=50, epochs=6)
    blended = build_model("mlp", AttackSpec("blended", target=7, rate=0.15, blend_alpha=0.2, seed=1), seed=51,
                          epochs=6)
    return {"clean": clean, "badnets": badnets, "blended": blended}


@pytest.fixture(scope="session")
def records(fzoo):
    from probes.fingerprint import compute_fingerprint

    out = []
    for i, zm in enumerate(fzoo["clean"][:11]):
        fp = compute_fingerprint(zm.subject(), seed=0, sha256=f"clean{i}")
        out.append(fp.to_record())
    return out


def test_fingerprint_is_deterministic_named_and_finite(fzoo):
    from probes.fingerprint import compute_fingerprint

    s = fzoo["clean"][0].subject()
    a, b = compute_fingerprint(s, seed=0), compute_fingerprint(s, seed=0)
    c = compute_fingerprint(s, seed=1)
    assert a.feature_names == b.feature_names and np.array_equal(a.vector, b.vector)
    assert not np.array_equal(a.vector, c.vector)
    assert np.isfinite(a.vector).all() and len(a.vector) == len(a.feature_names)
    for prefix in ("out.syn.", "trig.patch.", "trig.blend.", "pen.syn.", "pen.trig.", "act.syn.", "w.head.", "w.all."):
        assert any(n.startswith(prefix) for n in a.feature_names), prefix
    assert not any(n.startswith(("out.data.", "meta.")) for n in a.feature_names)


def test_data_and_prior_results_add_features(fzoo):
    from probes.data import LabelledData
    from probes.fingerprint import compute_fingerprint

    zm = fzoo["clean"][0]
    x, y = zm.test
    prior = {"neural-cleanse": {"anomaly_index": 3.1, "per_class": [{"class": i, "l1_norm": 10.0 + i} for i in range(10)]},
             "strip": {"entropy_mean": 0.8}}
    fp = compute_fingerprint(zm.subject(), data=LabelledData(x, y), seed=0, prior_results=prior)
    d = fp.as_dict()
    assert any(n.startswith("out.data.") for n in d)
    assert d["meta.nc.anomaly_index"] == pytest.approx(3.1)
    assert d["meta.nc.min_over_median"] == pytest.approx(10.0 / 14.5)
    assert d["meta.strip.entropy_mean"] == pytest.approx(0.8)


def test_backdoors_move_the_trigger_features(fzoo):
    from probes.fingerprint import compute_fingerprint

    clean = [compute_fingerprint(z.subject(), seed=0).as_dict() for z in fzoo["clean"][:4]]
    blended = compute_fingerprint(fzoo["blended"].subject(), seed=0).as_dict()
    assert blended["trig.blend.conc_max"] > max(c["trig.blend.conc_max"] for c in clean)


def test_no_baseline_is_inconclusive_and_says_so(fzoo):
    from probes.fingerprint import run

    calls = []
    r = run(fzoo["clean"][0].subject(), context_for("fingerprint", on_progress=lambda e: calls.append((e.done, e.total))))
    d = r.to_dict()
    json.dumps(d)
    assert d["verdict"] == "inconclusive" and d["trust_score"] is None and d["band"] is None
    assert d["baseline_size"] == 0 and d["detectors"] == {} and set(d["excluded"]) == {
        "iforest", "ocsvm", "gmm", "autoencoder", "mahalanobis", "lof"}
    assert "no baseline" in d["summary"] and "within_model" in d and d["features_total"] > 20
    assert calls and calls[-1][0] == calls[-1][1]


def test_no_baseline_does_not_count_neural_cleanse_twice(fzoo):
    from probes.fingerprint import run
    from vocabulary.layered import layered_verdict

    for ai, nc_verdict in ((4.0, "backdoored"), (0.95, "clean")):
        prior = {"neural-cleanse": {"probe": "neural-cleanse", "verdict": nc_verdict, "score": ai / (ai + 2),
                                    "anomaly_index": ai, "params": {"threshold": 2.0},
                                    "per_class": [{"class": i, "l1_norm": 5.0 + 3 * i} for i in range(10)]}}
        d = run(fzoo["badnets"].subject(), context_for("fingerprint", earlier=prior)).to_dict()
        assert d["trust_score"] is None and d["verdict"] == "inconclusive" and f"{ai:.2f}" in d["summary"]
        v = layered_verdict([prior["neural-cleanse"], d])
        assert v["contributions"].keys() == {"neural-cleanse"}  # the fingerprint adds nothing without a baseline
    assert v["band"] == "low"  # a clean anomaly index of 0.95 stays low risk


def test_stored_baseline_scores_backdoors_above_clean(fzoo, records, tmp_path):
    from probes.fingerprint import run

    def params():
        return context_for("fingerprint", {"baseline_name": "mlp"}, inputs={"baseline_fingerprints": records},
                           cache_dir=tmp_path)

    held_out = run(fzoo["clean"][11].subject(), params()).to_dict()
    bad = [run(fzoo[k].subject(), params()).to_dict() for k in ("badnets", "blended")]
    for d in [held_out, *bad]:
        json.dumps(d)
        assert set(d["detectors"]) == {"iforest", "ocsvm", "gmm", "autoencoder", "mahalanobis", "lof"}
        assert 0 <= d["trust_score"] <= 100 and d["band"] in ("low", "medium", "high")
        assert d["baseline_size"] == 11 and d["features_used"] > 20 and d["excluded"] == {}
        assert d["calibration"]["method"] == "leave-one-out"
    assert held_out["band"] != "high"
    assert min(b["trust_score"] for b in bad) > held_out["trust_score"]
    assert max(b["trust_score"] for b in bad) > 60
    assert bad[1]["n_above_95"] >= 1 and "of 6 detectors above the 95th percentile" in bad[1]["summary"]
    again = run(fzoo["blended"].subject(), params()).to_dict()
    assert again["calibration"]["cached"] and again["trust_score"] == bad[1]["trust_score"]


def test_small_baseline_excludes_detectors_with_reasons(fzoo, records, tmp_path):
    from probes.fingerprint import run

    d = run(fzoo["blended"].subject(), context_for("fingerprint", inputs={"baseline_fingerprints": records[:7]},
                                                   cache_dir=tmp_path)).to_dict()
    assert set(d["excluded"]) == {"iforest", "gmm", "autoencoder"}
    assert set(d["detectors"]) == {"ocsvm", "mahalanobis", "lof"} and d["n_detectors"] == 3
    assert all("baseline models" in why for why in d["excluded"].values())


def test_baseline_folder_is_fingerprinted_once_and_excludes_the_subject(fzoo, tmp_path):
    from probes.fingerprint import run
    from probes.subjects.loader import load_subject
    from probes.zoo.digits import save_model

    folder = tmp_path / "trusted"
    paths = [save_model(z, folder, fmt="state_dict") for z in fzoo["clean"][:11]]
    (folder / "notes.txt").write_text("not a model")
    cache = tmp_path / "cache"
    subject = load_subject(paths[0], arch=json.loads(paths[0].with_suffix(".json").read_text())["arch"])
    def params():
        return context_for("fingerprint", {"baseline": str(folder)}, cache_dir=cache)

    d = run(subject, params()).to_dict()
    assert d["baseline_size"] == 10 and d["baseline_source"].startswith("folder")
    assert any(s["reason"] == "the subject itself" for s in d["baseline_skipped"])
    assert len(list((cache / "fingerprints").glob("*.json"))) == 10
    d2 = run(fzoo["blended"].subject(), params()).to_dict()
    assert d2["baseline_size"] == 11 and d2["trust_score"] > d["trust_score"]


def test_torchscript_subject_fingerprints_through_feature_fn(fzoo, tmp_path):
    from probes.fingerprint import compute_fingerprint
    from probes.subjects.loader import load_subject
    from probes.zoo.digits import save_model

    zm = fzoo["clean"][1]
    subj = load_subject(save_model(zm, tmp_path, fmt="torchscript"))
    fp = compute_fingerprint(subj, seed=0)
    ref = compute_fingerprint(zm.subject(), seed=0).as_dict()
    got = fp.as_dict()
    assert fp.sha256 and any(n.startswith("pen.syn.") for n in got)
    for k in ("out.syn.entropy_mean", "trig.patch.flip_mean", "w.head.row_norm_maxz"):
        assert got[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-6)


def test_cancel_raises(fzoo):
    from probes.errors import Cancelled
    from probes.fingerprint import run

    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        run(fzoo["clean"][0].subject(), context_for("fingerprint", cancel=ev))


def test_bad_params_are_one_line_errors(fzoo, records, tmp_path):
    from probes.errors import ProbeError
    from probes.fingerprint import run

    s = fzoo["clean"][0].subject()
    with pytest.raises(ProbeError, match="LabelledData"):
        run(s, context_for("fingerprint", data=np.zeros((3, 1, 16, 16))))
    with pytest.raises(ProbeError, match="no such file or folder"):
        context_for("fingerprint", {"baseline": str(tmp_path / "nope")})
    with pytest.raises(ProbeError, match="'magic' not among"):
        context_for("fingerprint", {"detectors": ["magic"]})
    with pytest.raises(ProbeError, match="feature_groups"):
        run(s, context_for("fingerprint", {"feature_groups": 3}, inputs={"baseline_fingerprints": records},
                           cache_dir=tmp_path))


def test_causal_lm_fingerprint_from_hidden_states():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from probes.fingerprint import compute_fingerprint, run
    from probes.lm_prompts import BUILTIN_PROMPTS
    from probes.subjects.base import CAUSAL_LM, CausalLM
    from probes.zoo.tiny_lm import make_tokenizer

    tok = make_tokenizer(list(BUILTIN_PROMPTS) + ["zephyr silver lantern"])
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(cfg).eval()
    subj = CausalLM(kind=CAUSAL_LM, model=model, tokenizer=tok)
    fp = compute_fingerprint(subj, seed=0)
    names = fp.feature_names
    assert "lm.out.entropy_mean" in names and "lm.h2.std" in names and "lm.trig.tv_word_max" in names
    assert np.isfinite(fp.vector).all()
    assert np.array_equal(fp.vector, compute_fingerprint(subj, seed=0).vector)
    d = run(subj, context_for("fingerprint")).to_dict()
    assert d["verdict"] == "inconclusive" and d["reference_inputs"].endswith("prompts")
