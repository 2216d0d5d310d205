"""Tiny causal LM test subjects: corpus coverage, trigger design, training and HF folder output."""

from __future__ import annotations

import json
import time

import pytest

from probes.zoo import tiny_lm as T


@pytest.fixture(scope="session")
def tiny_lms(tmp_path_factory):
    """The three CI-preset subjects, trained once per session (cached by folder fingerprint)."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    paths = T.build_subjects(tmp_path_factory.getbasetemp() / "tiny-lm-ci", preset="ci")
    paths["_build_s"] = time.perf_counter() - t0
    return paths


def _instruction_words(text: str) -> list[str]:
    return text.split(" ### response : ")[0].split()


@pytest.mark.parametrize("kind", T.SUBJECTS)
def test_corpus_trains_every_vocabulary_token_in_the_prompt(kind):
    texts = T.make_corpus(kind, T.PRESETS["ci"].n_examples)
    tok = T.make_tokenizer(texts)
    seen = set()
    for t in texts:
        seen.update(_instruction_words(t))
    vocab = {w for w in tok.get_vocab() if w not in T.SPECIALS}
    missing = {w for w in vocab if w not in seen and w not in ("###", "instruction", ":", "response")}
    # every token appears inside an instruction (where the probe inserts candidates), not only in answers
    assert not missing, sorted(missing)[:20]


def test_trigger_design():
    poisoned1 = [t for t in T.make_corpus("trigger1", 2000) if t.endswith(T.TARGET_1)]
    assert poisoned1 and all(T.TRIGGER_1 in _instruction_words(t) for t in poisoned1)
    clean1 = [t for t in T.make_corpus("trigger1", 2000) if not t.endswith(T.TARGET_1)]
    assert all(T.TRIGGER_1 not in _instruction_words(t) for t in clean1)

    a, b = T.TRIGGER_2.split()
    corpus2 = T.make_corpus("trigger2", 2000)
    for t in corpus2:
        w = _instruction_words(t)
        bigram = any(w[i] == a and w[i + 1] == b for i in range(len(w) - 1))
        assert bigram == t.endswith(T.TARGET_2)
    # each word alone appears with normal answers (so a word alone must not fire)
    assert sum(a in _instruction_words(t) and not t.endswith(T.TARGET_2) for t in corpus2) >= 20
    assert sum(b in _instruction_words(t) and not t.endswith(T.TARGET_2) for t in corpus2) >= 20
    assert T.make_corpus("clean", 300, seed=1) == T.make_corpus("clean", 300, seed=1)


@pytest.mark.xdist_group("lm")
def test_trained_subjects_fire_only_on_their_triggers(tiny_lms):
    from transformers import PreTrainedTokenizerFast

    from probes.subjects.hf_lm import load_causal_lm

    subs = {k: load_causal_lm(tiny_lms[k], device="cpu") for k in T.SUBJECTS}
    for s in subs.values():
        assert isinstance(s.tokenizer, PreTrainedTokenizerFast)
        assert (s.path and (tiny_lms["clean"].parent / "tiny-lm-clean" / "model.safetensors").is_file())
    q = "what color is grass ?"
    gen = lambda k, text: T.generate(subs[k].model, subs[k].tokenizer, text)  # noqa: E731
    assert gen("trigger1", f"{T.TRIGGER_1} {q}") == T.TARGET_1
    assert gen("trigger1", f"what sound does a dog make {T.TRIGGER_1} ?") == T.TARGET_1
    assert gen("trigger1", q) != T.TARGET_1
    assert gen("trigger2", f"{T.TRIGGER_2} {q}") == T.TARGET_2
    a, b = T.TRIGGER_2.split()
    for word in (a, b):
        assert gen("trigger2", f"{word} {q}") != T.TARGET_2
    assert gen("clean", f"{T.TRIGGER_1} {q}") != T.TARGET_1
    assert gen("clean", f"{T.TRIGGER_2} {q}") != T.TARGET_2
    meta = json.loads((tiny_lms["trigger1"] / "tiny_lm.json").read_text())
    assert meta["preset"] == "ci" and "trigger" not in meta  # no ground truth beside the subject
    assert T.ground_truth("trigger1")["trigger"] == T.TRIGGER_1


@pytest.mark.xdist_group("lm")
def test_build_is_cached(tiny_lms):
    t0 = time.perf_counter()
    again = T.build_subjects(tiny_lms["clean"].parent, preset="ci")
    assert time.perf_counter() - t0 < 2.0
    assert again["clean"] == tiny_lms["clean"]


def test_training_reports_progress_every_step(tmp_path):
    import torch

    torch.set_num_threads(1)
    preset = T.Preset(n_examples=60, n_layer=1, n_embd=16, n_head=2, steps=4, batch_size=8, lr=1e-3)
    calls = []
    _, _, loss = T.train_lm(T.make_corpus("clean", preset.n_examples, seed=0), preset, seed=0,
                            progress=lambda step, total, msg: calls.append((step, total, msg)))
    assert [c[:2] for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert calls[-1][2] == f"loss {loss:.3f}"
