"""load_subject on every supported file format: the loaded model must compute what the original did."""

from __future__ import annotations

import os
import sys
import textwrap
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from probes.errors import ProbeError, UnsafeModelError  # noqa: E402
from probes.subjects.base import ImageClassifier  # noqa: E402
from probes.subjects.loader import load_subject  # noqa: E402

ARCH_SRC = textwrap.dedent('''
    import torch.nn as nn

    def SmallSeq():
        """Sequential CNN on 1x16x16 digits-like inputs, 4 classes."""
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(4 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 4))

    class Color(nn.Module):
        """3-channel 32x32, 5 classes: nothing may assume the digits' shape."""
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
            self.fc = nn.Linear(8 * 8 * 8, 12)
            self.out = nn.Linear(12, 5)
        def forward(self, x):
            return self.out(self.fc(self.features(x)).relu())

    class Pooled(nn.Module):
        """Fully convolutional with global pooling: runs at any size, so the size must be given."""
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 3)
        def forward(self, x):
            return self.fc(self.pool(self.conv(x)).flatten(1))

    class PooledWithShape(Pooled):
        input_shape = (3, 20, 20)
''')

SPECS = {"seq": ("SmallSeq", (1, 16, 16), 4), "color": ("Color", (3, 32, 32), 5)}


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "arch_models.py"
    path.write_text(ARCH_SRC)
    return path


def make_model(arch_file, name, seed=0):
    from probes.subjects.arch import load_arch_class

    torch.manual_seed(seed)
    model = load_arch_class(f"{arch_file}:{name}")()
    with torch.no_grad():  # make biases non-trivial so a skipped tensor would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def batch(shape, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *shape), generator=g)


def assert_same_logits(sub, model, shape):
    x = batch(shape)
    with torch.no_grad():
        want = model(x)
        got = sub.forward(x)
    assert torch.allclose(got.cpu(), want, atol=1e-6), (got - want).abs().max()


@pytest.fixture(scope="module", params=sorted(SPECS))
def saved(request, arch_file, tmp_path_factory):
    """One architecture saved in every weights-only format."""
    key = request.param
    name, shape, classes = SPECS[key]
    model = make_model(arch_file, name)
    d = tmp_path_factory.mktemp(f"saved-{key}")
    sd = model.state_dict()
    from safetensors.torch import save_file

    files = {
        "safetensors": d / "w.safetensors",
        "torch-zip": d / "w.pt",
        "torch-legacy": d / "w_legacy.pth",
        "nested": d / "checkpoint.bin",
        "noext": d / "weights",  # content decides, not the name
    }
    save_file({k: v.contiguous() for k, v in sd.items()}, str(files["safetensors"]))
    torch.save(sd, files["torch-zip"])
    torch.save(sd, files["torch-legacy"], _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "state_dict": sd, "optimizer": {"lr": 0.1}}, files["nested"])
    torch.save(sd, files["noext"])
    return types.SimpleNamespace(key=key, name=name, shape=shape, classes=classes, model=model, files=files,
                                 spec=f"{arch_file}:{name}", dir=d)


@pytest.mark.parametrize("kind", ["safetensors", "torch-zip", "torch-legacy", "nested", "noext"])
def test_loader_state_dict_formats_match_original(saved, kind):
    sub = load_subject(saved.files[kind], arch=saved.spec, device="cpu")
    assert isinstance(sub, ImageClassifier)
    assert sub.kind == "image-classifier"
    assert sub.input_shape == saved.shape
    assert sub.num_classes == saved.classes
    assert sub.format == {"safetensors": "safetensors", "torch-legacy": "torch-legacy"}.get(kind, "torch-zip")
    assert sub.metadata["arch"] == saved.spec
    assert sub.metadata["input_shape_source"] == "inferred"
    assert_same_logits(sub, saved.model, saved.shape)
    x = batch(saved.shape).numpy()
    acts = sub.activations(x)
    assert acts.shape[0] == len(x) and acts.ndim == 2


@pytest.mark.parametrize("kind", ["safetensors", "torch-zip", "torch-legacy"])
def test_loader_weights_without_arch_say_what_is_needed(saved, kind):
    with pytest.raises(ProbeError) as err:
        load_subject(saved.files[kind], device="cpu")
    msg = str(err.value)
    assert "--arch" in msg and "ClassName" in msg and "\n" not in msg
    assert not isinstance(err.value, UnsafeModelError)


@pytest.mark.parametrize("how", ["script", "trace"])
def test_loader_torchscript_logits_and_penultimate_match_module(saved, how, tmp_path):
    model = saved.model
    sm = torch.jit.script(model) if how == "script" else torch.jit.trace(model, batch(saved.shape, n=2))
    path = tmp_path / f"{how}.pt"
    torch.jit.save(sm, str(path))

    ts = load_subject(path, device="cpu")
    ref = load_subject(saved.files["safetensors"], arch=saved.spec, device="cpu")
    assert ts.format == "torchscript"
    assert (ts.input_shape, ts.num_classes) == (saved.shape, saved.classes)
    assert_same_logits(ts, model, saved.shape)
    assert ts.feature_fn is not None
    # The layer is named the way the nn.Module version names it.
    assert ts.feature_layer_name == ref.penultimate_layer()
    assert ts.layer_names() == [ts.feature_layer_name]
    x = batch(saved.shape, n=9, seed=4).numpy()
    a_ts = ts.activations(x)
    a_ref = ref.activations(x)
    assert a_ts.shape == a_ref.shape and a_ts.shape[1] in (16, 12)
    np.testing.assert_allclose(a_ts, a_ref, atol=1e-6)
    # feature_fn's logits are bit-identical to the module's own forward
    xb = torch.as_tensor(x)
    with torch.no_grad():
        feats, logits = ts.feature_fn(xb)
        assert torch.equal(logits, ts.module(xb))
    # and the batch path in predict_proba still works
    assert ts.predict_proba(x).shape == (9, saved.classes)


def test_loader_whole_module_checkpoint_refused_naming_scan(arch_file, tmp_path):
    model = make_model(arch_file, "Color")
    path = tmp_path / "whole.pt"
    torch.save(model, path)  # pickles the class reference -> needs the full unpickler
    with pytest.raises(UnsafeModelError) as err:
        load_subject(path, arch=f"{arch_file}:Color", device="cpu")
    msg = str(err.value)
    assert "\n" not in msg
    assert "state_dict" in msg and "--arch" in msg and "dynamic" in msg
    assert "static scan" in msg
    try:
        from probes.static_scan import scan_path  # noqa: F401
    except ImportError:  # the scanner is built in parallel; without it the message says "unavailable"
        assert "static scan unavailable" in msg
        return
    assert "Color" in msg  # the class reference the scan found


class _Payload:
    """Harmless payload: would create a directory if anything unpickled it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_loader_malicious_checkpoint_refused_and_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "x": _Payload(str(marker))}, path)
    with pytest.raises(UnsafeModelError) as err:
        load_subject(path, arch="whatever.py:X", device="cpu")
    assert not marker.exists()
    assert "\n" not in str(err.value)


def test_loader_plain_pickle_refused(tmp_path):
    import pickle

    marker = tmp_path / "PWNED"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(_Payload(str(marker)), protocol=2))
    with pytest.raises(UnsafeModelError) as err:
        load_subject(path, device="cpu")
    assert not marker.exists()
    assert "full unpickler" in str(err.value) or "refused" in str(err.value)


def test_loader_torchscript_refused_when_scan_says_malicious(saved, tmp_path, monkeypatch):
    from probes.result import ProbeResult

    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(saved.model), str(path))
    fake = types.ModuleType("probes.static_scan")
    fake.scan_path = lambda p: ProbeResult("static", "malicious", 1.0, "payload", details={"findings": [
        {"file": str(p), "offset": 12, "opcode": "STACK_GLOBAL", "module": "os", "name": "system", "severity": "critical"}]})
    monkeypatch.setitem(sys.modules, "probes.static_scan", fake)
    with pytest.raises(UnsafeModelError) as err:
        load_subject(path, device="cpu")
    assert "os.system [critical]" in str(err.value)


def test_loader_torchscript_with_injected_payload_refused_by_real_scan(saved, tmp_path):
    import pickle
    import zipfile

    src = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(saved.model), str(src))
    marker = tmp_path / "PWNED"
    evil = tmp_path / "ts_evil.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(evil, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("constants.pkl"):
                data = pickle.dumps(_Payload(str(marker)), protocol=2)
            zout.writestr(info, data)
    with pytest.raises(UnsafeModelError) as err:
        load_subject(evil, device="cpu")
    msg = str(err.value)
    assert "malicious" in msg and "makedirs" in msg and "\n" not in msg
    assert not marker.exists()


def test_loader_input_shape_order(arch_file, tmp_path):
    from safetensors.torch import save_file

    model = make_model(arch_file, "Pooled")
    path = tmp_path / "pooled.safetensors"
    save_file(model.state_dict(), str(path))
    with pytest.raises(ProbeError, match=r"cannot tell the model's input size; pass --data NPZ or --input-shape C,H,W"):
        load_subject(path, arch=f"{arch_file}:Pooled", device="cpu")
    sub = load_subject(path, arch=f"{arch_file}:Pooled", input_shape="3,24,24", device="cpu")
    assert sub.input_shape == (3, 24, 24) and sub.metadata["input_shape_source"] == "argument"
    sub = load_subject(path, arch=f"{arch_file}:PooledWithShape", device="cpu")
    assert sub.input_shape == (3, 20, 20) and sub.metadata["input_shape_source"] == "model attribute"
    sub = load_subject(path, arch=f"{arch_file}:PooledWithShape", input_shape=(3, 8, 8), device="cpu")
    assert sub.input_shape == (3, 8, 8)
    assert_same_logits(sub, model, (3, 8, 8))


def test_loader_explicit_wrong_shape_is_clear(saved):
    bad = (saved.shape[0], saved.shape[1] * 2, saved.shape[2] * 2)
    with pytest.raises(ProbeError) as err:
        load_subject(saved.files["torch-zip"], arch=saved.spec, input_shape=bad, device="cpu")
    assert "fails on input shape" in str(err.value) and "\n" not in str(err.value)
