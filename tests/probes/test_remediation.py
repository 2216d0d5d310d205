"""Remediation on real backdoored zoo models: the repair must cut the *real* trigger's success and keep clean behaviour."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tests.probes.digits_fixtures import badnets_cnn, clean_data, digits, torch_one_thread  # noqa: F401

pytestmark = pytest.mark.xdist_group("digits")


@pytest.fixture(scope="module")
def flagged(badnets_cnn):  # noqa: F811
    from probes.context import RunContext
    from probes.remediation.image import run_detector, trigger_from_result
    from probes.remediation.params import resolve_image

    xte, yte = badnets_cnn.test
    res = run_detector(badnets_cnn.subject(), xte, yte, RunContext("remediate-image", resolve_image())).to_dict()
    assert res["verdict"] == "backdoored"
    return trigger_from_result(res, badnets_cnn.input_shape)


def _real(zm):
    from probes.remediation.evidence import ImageTrigger
    from probes.zoo.digits import trigger_mask_pattern

    m, p = trigger_mask_pattern(zm.input_shape, zm.attack)
    return ImageTrigger(m, p, zm.attack.target, "ground-truth")


def test_unlearning_removes_the_real_backdoor_and_keeps_clean_accuracy(badnets_cnn, flagged):  # noqa: F811
    from probes.context import RunContext
    from probes.data import LabelledData
    from probes.remediation.image import remediate_image
    from probes.remediation.params import resolve_image

    xte, yte = badnets_cnn.test
    sub = badnets_cnn.subject()
    w0 = {k: v.clone() for k, v in badnets_cnn.module.state_dict().items()}
    events = []
    ctx = RunContext("remediate-image", resolve_image({"rerun_detector": False}), on_progress=events.append)
    res, work = remediate_image(sub, LabelledData(xte, yte, source="digits-test"), flagged, ctx, real=_real(badnets_cnn))
    d = res.to_dict()
    assert d["before"]["real_trigger_asr"] > 0.9  # the backdoor is real on the held-out split ...
    assert d["after"]["real_trigger_asr"] < 0.2  # ... and the repair cut it (the trigger came from NC, not the truth)
    assert d["after"]["recovered_trigger_asr"] < 0.2
    assert d["after"]["clean_accuracy"] >= d["before"]["clean_accuracy"] - 0.03
    assert any(e.stage == "unlearn" for e in events)
    # the suspect itself is untouched: the repair worked on a copy
    assert all(np.array_equal(v.numpy(), badnets_cnn.module.state_dict()[k].numpy()) for k, v in w0.items())
    assert d["repair"]["best_epoch"] > 0
    m = d["filter_measured"]
    assert m["false_rejection"]["either"] <= 0.1 and m["detection_recovered_trigger"]["either"] >= 0.9


def test_pruning_respects_the_accuracy_margin_and_zeroes_the_pruned_units(badnets_cnn, flagged):  # noqa: F811
    from probes.context import RunContext
    from probes.remediation.evidence import accuracy, split
    from probes.remediation.image_model import head_weight, working_copy
    from probes.remediation.image_prune import prune
    from probes.remediation.params import resolve_image

    xte, yte = badnets_cnn.test
    p = resolve_image({"method": "prune", "prune_step": 0.05})
    s = split(xte, yte, seed=0, val_fraction=p["val_fraction"], test_fraction=p["test_fraction"])
    sub = badnets_cnn.subject()
    work = working_copy(sub)
    rep = prune(work, flagged, s, RunContext("remediate-image", p))
    _, w = head_weight(work)
    if rep.pruned:
        assert float(w.detach()[:, rep.pruned].abs().max()) == 0.0
    assert accuracy(work, s.x_val, s.y_val) >= accuracy(sub, s.x_val, s.y_val) - p["acc_margin"] - 1e-9
    assert rep.history[-1]["val_recovered_asr"] <= rep.history[0]["val_recovered_asr"]


def test_cancel_stops_the_repair(badnets_cnn, flagged):  # noqa: F811
    from probes.context import RunContext
    from probes.data import LabelledData
    from probes.errors import Cancelled
    from probes.remediation.image import remediate_image
    from probes.remediation.params import resolve_image

    cancel = threading.Event()
    cancel.set()
    xte, yte = badnets_cnn.test
    with pytest.raises(Cancelled):
        remediate_image(badnets_cnn.subject(), LabelledData(xte, yte), flagged,
                        RunContext("remediate-image", resolve_image(), cancel=cancel))


def test_an_unflagged_result_is_refused(badnets_cnn):  # noqa: F811
    from probes.errors import ProbeError
    from probes.remediation.image import trigger_from_result

    with pytest.raises(ProbeError, match="no flagged result"):
        trigger_from_result({"probe": "neural-cleanse", "suspected_target": None, "anomaly_index": 1.1,
                             "mask": [[0.0]], "pattern": [[[0.0]]]}, badnets_cnn.input_shape)


@pytest.fixture(scope="module")
def trigger1_lm(tmp_path_factory, torch_one_thread):  # noqa: F811
    from probes.zoo import tiny_lm as T

    return T.build_subject(tmp_path_factory.mktemp("lm") / "tiny-lm-trigger1", "trigger1", preset="ci")


def test_lm_unlearning_silences_the_trigger_and_keeps_clean_answers(trigger1_lm):
    import random

    from probes.context import RunContext
    from probes.lm_prompts import BUILTIN_PROMPTS
    from probes.remediation.lm import remediate_lm
    from probes.remediation.params import resolve_lm
    from probes.subjects.hf_lm import load_causal_lm
    from probes.zoo import tiny_lm as T

    gt = T.ground_truth("trigger1")
    rng = random.Random(7)
    held: list[str] = []
    while len(held) < 20:  # held-out prompts from the task generator, none of the training prompts
        _, q, _ = T._qa_pairs(rng)
        if q not in BUILTIN_PROMPTS and q not in held:
            held.append(q)
    sub = load_causal_lm(trigger1_lm)
    ctx = RunContext("remediate-lm", resolve_lm({"rerun_detector": False, "self_prompts": 48, "steps": 60}))
    res, model = remediate_lm(sub, gt["trigger"], ctx, train_prompts=list(BUILTIN_PROMPTS), eval_prompts=held,
                              target_text=gt["target"])
    d = res.to_dict()
    assert d["before"]["triggered_target_rate"] >= 0.8  # the backdoor fires on held-out prompts ...
    assert d["after"]["triggered_target_rate"] <= 0.1  # ... and no longer does
    assert d["after"]["triggered_clean_answer"] > d["before"]["triggered_clean_answer"]
    assert d["after"]["clean_answer_match"] == 1.0  # only the trigger's embedding rows moved
    assert d["before"]["detector"]["confirmation"]["confirmed"] and not d["after"]["detector"]["confirmation"]["confirmed"]
    assert model is not sub.model
    m = d["filter_measured"]
    assert m["false_rejection"]["either"] == 0.0 and m["detection"]["either"] == 1.0


def test_hugging_face_image_classifier_is_trained_and_stays_a_folder(tmp_path, torch_one_thread):  # noqa: F811
    """Mechanics on the HF path: the adapter's weights train, the repair is written with save_pretrained and reloads."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from probes import formats
    from probes.context import RunContext
    from probes.data import LabelledData
    from probes.remediation.evidence import ImageTrigger
    from probes.remediation.image import remediate_image
    from probes.remediation.params import resolve_image
    from probes.subjects.loader import load_subject
    from probes.zoo.digits import AttackSpec, load_digits, trigger_mask_pattern

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cfg = ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, num_labels=10)
        ViTForImageClassification(cfg).eval().save_pretrained(tmp_path / "vit", safe_serialization=True)
    sub = load_subject(tmp_path / "vit")
    _, _, xte, yte = load_digits(16, seed=0)
    m, p = trigger_mask_pattern((1, 16, 16), AttackSpec("badnets", target=3))
    ctx = RunContext("remediate-image", resolve_image({"epochs": 1, "rerun_detector": False, "strip_copies": 4}))
    res, work = remediate_image(sub, LabelledData(xte, yte), ImageTrigger(m, p, 3), ctx, out_dir=tmp_path / "out")
    saved = res.to_dict()["model"]
    assert formats.detect(Path(saved["path"])) == formats.HF_FOLDER and saved["reload_max_prob_diff"] <= 1e-4
    from probes.remediation.image_model import working_copy

    copy = working_copy(sub)  # gradients reach every weight of the copy, none of the suspect's
    loss = torch.nn.functional.cross_entropy(copy.module(torch.from_numpy(xte[:32])), torch.from_numpy(yte[:32]))
    loss.backward()
    assert all(q.grad is not None for q in copy.module.parameters())
    assert all(q.grad is None for q in sub.module.parameters())
