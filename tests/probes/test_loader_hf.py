"""Hugging Face folders: image classifiers load offline and match; remote code, missing weights, pickles refused."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
torch.set_num_threads(1)

from probes.errors import ProbeError, UnsafeModelError  # noqa: E402
from probes.subjects.base import CausalLM  # noqa: E402
from probes.subjects.loader import load_subject  # noqa: E402


def _resnet():
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    cfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                       num_labels=5)
    return ResNetForImageClassification(cfg).eval()


def _vit():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=32, num_labels=4)
    return ViTForImageClassification(cfg).eval()


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf-resnet")
    model = _resnet()
    model.save_pretrained(str(d))
    # ResNet's config has no image size; the preprocessor config carries it
    (d / "preprocessor_config.json").write_text(json.dumps({"crop_size": {"height": 24, "width": 24},
                                                            "do_center_crop": True, "size": {"shortest_edge": 28}}))
    return d, model


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf-vit")
    model = _vit()
    model.save_pretrained(str(d))
    return d, model


def _same(sub, model, shape):
    g = torch.Generator().manual_seed(3)
    x = torch.rand((5, *shape), generator=g)
    with torch.no_grad():
        want = model(pixel_values=x).logits
        got = sub.forward(x)
    assert torch.allclose(got, want, atol=1e-5)


def test_loader_hf_resnet_image_classifier(resnet_dir):
    d, model = resnet_dir
    assert any(f.name.endswith(".safetensors") for f in d.iterdir())
    sub = load_subject(d, device="cpu")
    assert sub.kind == "image-classifier" and sub.format == "hf-folder"
    assert sub.input_shape == (3, 24, 24) and sub.num_classes == 5
    assert sub.metadata["input_shape_source"] == "preprocessor_config.json crop_size"
    assert sub.metadata["model_type"] == "resnet"
    _same(sub, model, (3, 24, 24))
    layer = sub.penultimate_layer()
    assert layer.startswith("input:model.classifier")
    acts = sub.activations(torch.rand(3, 3, 24, 24).numpy())
    assert acts.shape == (3, 16)


def test_loader_hf_vit_takes_shape_from_config(vit_dir):
    d, model = vit_dir
    sub = load_subject(d, device="cpu")
    assert sub.input_shape == (1, 16, 16) and sub.num_classes == 4
    assert sub.metadata["input_shape_source"] == "config.json image_size"
    _same(sub, model, (1, 16, 16))
    assert sub.activations(torch.rand(2, 1, 16, 16).numpy()).shape == (2, 16)


def test_loader_hf_resnet_without_size_needs_shape(resnet_dir, tmp_path):
    d, model = resnet_dir
    for f in d.iterdir():
        if f.name != "preprocessor_config.json":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ProbeError, match="cannot tell the model's input size"):
        load_subject(tmp_path, device="cpu")
    sub = load_subject(tmp_path, input_shape=(3, 20, 20), device="cpu")
    _same(sub, model, (3, 20, 20))


def test_loader_hf_pytorch_bin_loads_weights_only(resnet_dir, tmp_path):
    d, model = resnet_dir
    (tmp_path / "config.json").write_bytes((d / "config.json").read_bytes())
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    sub = load_subject(tmp_path, input_shape=(3, 24, 24), device="cpu")
    _same(sub, model, (3, 24, 24))


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_loader_hf_malicious_bin_never_runs(resnet_dir, tmp_path):
    d, model = resnet_dir
    marker = tmp_path.parent / f"PWNED-{tmp_path.name}"
    (tmp_path / "config.json").write_bytes((d / "config.json").read_bytes())
    sd = dict(model.state_dict())
    sd["payload"] = _Payload(str(marker))
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeModelError) as err:
        load_subject(tmp_path, input_shape=(3, 24, 24), device="cpu")
    assert not marker.exists()
    assert "\n" not in str(err.value) and "pytorch_model.bin" in str(err.value)


def test_loader_hf_bin_weights_only_even_if_scan_misses(resnet_dir, tmp_path, monkeypatch):
    """Defence in depth: with a scanner that sees nothing, transformers' torch.load must still refuse."""
    from probes.result import ProbeResult

    fake = types.ModuleType("probes.static_scan")
    fake.scan_path = lambda p: ProbeResult("static", "clean", 0.0, "ok", details={"findings": []})
    monkeypatch.setitem(sys.modules, "probes.static_scan", fake)
    d, model = resnet_dir
    marker = tmp_path.parent / f"PWNED-{tmp_path.name}"
    (tmp_path / "config.json").write_bytes((d / "config.json").read_bytes())
    sd = dict(model.state_dict())
    sd["payload"] = _Payload(str(marker))
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeModelError) as err:
        load_subject(tmp_path, input_shape=(3, 24, 24), device="cpu")
    assert not marker.exists()
    assert "full unpickler" in str(err.value)


def test_loader_hf_auto_map_refused(resnet_dir, tmp_path):
    d, _ = resnet_dir
    for f in d.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.EvilNet"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "modeling_evil.py").write_text("import os; os.makedirs('SHOULD_NOT_EXIST')\n")
    with pytest.raises(UnsafeModelError) as err:
        load_subject(tmp_path, device="cpu")
    msg = str(err.value)
    assert "modeling_evil.EvilNet" in msg and "trust_remote_code" in msg and "\n" not in msg


def test_loader_hf_folder_without_weights(resnet_dir, tmp_path):
    d, _ = resnet_dir
    (tmp_path / "config.json").write_bytes((d / "config.json").read_bytes())
    with pytest.raises(ProbeError, match=f"no model weights in {tmp_path}"):
        load_subject(tmp_path, device="cpu")


def test_loader_hf_missing_weights_are_an_error(resnet_dir, tmp_path):
    """transformers would fill missing tensors at random; a suspect must load completely or not at all."""
    from safetensors.torch import save_file

    d, model = resnet_dir
    (tmp_path / "config.json").write_bytes((d / "config.json").read_bytes())
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("classifier")}
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(ProbeError, match="missing") as err:
        load_subject(tmp_path, input_shape=(3, 24, 24), device="cpu")
    assert "\n" not in str(err.value)


def test_loader_hf_nan_weights(vit_dir, tmp_path):
    from safetensors.torch import save_file

    d, model = vit_dir
    (tmp_path / "config.json").write_bytes((d / "config.json").read_bytes())
    sd = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    sd["classifier.weight"][0, 0] = float("nan")
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(ProbeError, match="not finite"):
        load_subject(tmp_path, device="cpu")


def test_loader_hf_causal_lm_dispatches_to_hf_lm(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    (tmp_path / "model.safetensors").write_bytes(b"")  # only its presence matters to the dispatcher
    calls = []
    fake = types.ModuleType("probes.subjects.hf_lm")

    def load_causal_lm(folder, device=None):
        calls.append((str(folder), device))
        return CausalLM(kind="causal-lm", model=None, tokenizer=None, device=device or "cpu")

    fake.load_causal_lm = load_causal_lm
    monkeypatch.setitem(sys.modules, "probes.subjects.hf_lm", fake)
    with pytest.raises(ProbeError, match="not a valid safetensors"):
        load_subject(tmp_path, device="cpu")  # an empty weights file is caught before dispatch
    save_dummy = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(save_dummy))
    sub = load_subject(tmp_path, device="cpu")
    assert calls == [(str(tmp_path), "cpu")]
    assert sub.kind == "causal-lm" and sub.path == str(tmp_path) and sub.format == "hf-folder"


def test_loader_hf_other_model_types_are_clear(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ProbeError, match="BertForMaskedLM"):
        load_subject(tmp_path, device="cpu")


def test_loader_hf_shard_index_cannot_point_outside(resnet_dir, tmp_path):
    d, _ = resnet_dir
    (tmp_path / "config.json").write_bytes((d / "config.json").read_bytes())
    (tmp_path / "model-00001-of-00001.safetensors").write_bytes((d / "model.safetensors").read_bytes())
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"classifier.1.weight": "../../../etc/passwd"}}))
    with pytest.raises(ProbeError, match="path traversal"):
        load_subject(tmp_path, input_shape=(3, 24, 24), device="cpu")


def test_loader_hf_sharded_safetensors(resnet_dir, tmp_path):
    d, model = resnet_dir
    model.save_pretrained(str(tmp_path), max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    sub = load_subject(tmp_path, input_shape=(3, 24, 24), device="cpu")
    _same(sub, model, (3, 24, 24))


def test_loader_hf_real_causal_lm_end_to_end(tmp_path):
    """Through the language-model engineer's loader: kind, tokenizer and the same logits as the original."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from probes.zoo.tiny_lm import make_tokenizer

    tok = make_tokenizer(["the cat sat on the mat", "a dog ran in the park"])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    model.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    sub = load_subject(tmp_path, device="cpu")
    assert isinstance(sub, CausalLM) and sub.kind == "causal-lm" and sub.format == "hf-folder"
    ids = torch.tensor([tok("the cat sat")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(sub.model(ids).logits, model(ids).logits, atol=1e-5)
    # a poisoned .bin in an LM folder is stopped by the loader's pre-scan, before transformers sees it
    marker = tmp_path.parent / f"PWNED-{tmp_path.name}"
    (tmp_path / "model.safetensors").unlink()
    sd = dict(model.state_dict())
    sd["payload"] = _Payload(str(marker))
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeModelError, match="malicious"):
        load_subject(tmp_path, device="cpu")
    assert not marker.exists()
