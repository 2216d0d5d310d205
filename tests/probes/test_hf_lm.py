"""Offline causal-LM loading from HF folders, refusals, and left-padding position_ids correctness."""

from __future__ import annotations

import json
import shutil

import pytest

from probes.errors import ProbeError, UnsafeModelError
from probes.zoo import tiny_lm as T

pytestmark = pytest.mark.xdist_group("lm")


@pytest.fixture(scope="session")
def clean_folder(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    return T.build_subjects(tmp_path_factory.getbasetemp() / "tiny-lm-ci", preset="ci")["clean"]


def _copy(src, dst, skip=()):
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            shutil.copy(f, dst / f.name)
    return dst


def test_loads_offline_as_causal_lm(clean_folder):
    from probes.subjects.hf_lm import load_causal_lm

    s = load_causal_lm(clean_folder, device="cpu")
    assert s.kind == "causal-lm" and s.device == "cpu" and s.format == "hf-folder"
    assert s.tokenizer.pad_token_id is not None and s.tokenizer.padding_side == "left"
    assert s.vocab_size == len(s.tokenizer) and s.metadata["model_type"] == "gpt2"


def test_missing_tokenizer_is_a_clear_error(clean_folder, tmp_path):
    from probes.subjects.hf_lm import load_causal_lm

    d = _copy(clean_folder, tmp_path / "notok", skip={"tokenizer.json", "tokenizer_config.json",
                                                        "special_tokens_map.json"})
    with pytest.raises(ProbeError, match="tokenizer"):
        load_causal_lm(d)


def test_not_a_causal_lm(clean_folder, tmp_path):
    from probes.subjects.hf_lm import load_causal_lm

    d = _copy(clean_folder, tmp_path / "vit")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update({"model_type": "vit", "architectures": ["ViTForImageClassification"]})
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ProbeError, match="not a causal language model"):
        load_causal_lm(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProbeError, match="config.json"):
        load_causal_lm(empty)
    with pytest.raises(ProbeError, match="not a folder"):
        load_causal_lm(d / "config.json")


def test_remote_code_is_refused(clean_folder, tmp_path):
    from probes.subjects.hf_lm import load_causal_lm

    d = _copy(clean_folder, tmp_path / "remote")
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilLM"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "modeling_evil.py").write_text("raise SystemExit('must never run')\n")
    with pytest.raises(UnsafeModelError, match="auto_map"):
        load_causal_lm(d)
    d2 = _copy(clean_folder, tmp_path / "remote-tok")
    tc = json.loads((d2 / "tokenizer_config.json").read_text())
    tc["auto_map"] = {"AutoTokenizer": ["tok_evil.EvilTok", None]}
    (d2 / "tokenizer_config.json").write_text(json.dumps(tc))
    with pytest.raises(UnsafeModelError):
        load_causal_lm(d2)


def test_weights_only_checkpoint_loads(clean_folder, tmp_path):
    import torch
    from safetensors.torch import load_file

    from probes.subjects.hf_lm import load_causal_lm

    d = _copy(clean_folder, tmp_path / "bin", skip={"model.safetensors"})
    torch.save(load_file(str(clean_folder / "model.safetensors")), d / "pytorch_model.bin")
    a = load_causal_lm(clean_folder)
    b = load_causal_lm(d)
    ids = torch.tensor([a.tokenizer("what color is grass ?")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(a.model(input_ids=ids).logits, b.model(input_ids=ids).logits, atol=1e-6)


def test_left_padded_batch_matches_unpadded_forward(clean_folder):
    """position_ids = cumsum(mask) - 1: padded batch logits equal single unpadded forwards (GPT-2 positions)."""
    import torch

    from probes.lm_engine import KLEngine
    from probes.subjects.hf_lm import load_causal_lm

    s = load_causal_lm(clean_folder)
    eng = KLEngine.build(s.model, s.tokenizer, "cpu", ["what is 3 plus 4 ?", "hello , how are you ?",
                                                       "write a short poem about the moon ."])
    seqs = [p.ids for p in eng.prompts] + [eng.prompts[0].ids[:5]]
    assert len({len(x) for x in seqs}) > 1
    batched, _ = eng.forward_last(seqs)
    with torch.no_grad():
        single = torch.stack([s.model(input_ids=torch.tensor([x])).logits[0, -1] for x in seqs])
    assert float((batched - single).abs().max()) < 1e-4
    # the pitfall this guards against: without position_ids the padded rows come out wrong
    ids, mask, _ = eng.pad_batch(seqs)
    with torch.no_grad():
        naive = s.model(input_ids=ids, attention_mask=mask).logits[:, -1]
    assert float((naive - single).abs().max()) > 1e-3
