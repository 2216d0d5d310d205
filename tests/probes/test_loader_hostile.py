"""Hostile or broken input: each ends in one clear one-line ProbeError for that subject, nothing worse."""

from __future__ import annotations

import textwrap
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
nn = torch.nn

from probes.errors import ProbeError, UnsafeModelError  # noqa: E402
from probes.subjects.loader import load_subject  # noqa: E402

ARCH_SRC = textwrap.dedent('''
    import torch.nn as nn

    def Tiny():
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 3))

    def Wider():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))

    class NeedsArgs(nn.Module):
        def __init__(self, width):
            super().__init__()

    def NotAModule():
        return 42

    class Features(nn.Module):
        """Returns feature maps, not logits."""
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
        def forward(self, x):
            return self.conv(x)

    def OneLogit():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 1))

    class TupleOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 3)
        def forward(self, x):
            return self.fc(x.flatten(1)), x
''')


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    arch = d / "arch.py"
    arch.write_text(ARCH_SRC)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 3))
    good = d / "good.pt"
    torch.save(model.state_dict(), good)
    legacy = d / "good_legacy.pt"
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    return type("Env", (), {"dir": d, "arch": arch, "model": model, "good": good, "legacy": legacy,
                            "spec": f"{arch}:Tiny"})


def refuse(path, *, exc=ProbeError, **kw):
    kw.setdefault("device", "cpu")
    with pytest.raises(exc) as err:
        load_subject(path, **kw)
    msg = str(err.value)
    assert msg and "\n" not in msg and len(msg) < 600, msg
    return msg


def test_loader_good_baseline_loads(env):
    sub = load_subject(env.good, arch=env.spec, device="cpu")
    assert sub.input_shape == (1, 8, 8) and sub.num_classes == 3


def test_loader_missing_file(env):
    assert "no such file" in refuse(env.dir / "nope.pt", arch=env.spec)


def test_loader_empty_file(env, tmp_path):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    assert "empty (0 bytes)" in refuse(p, arch=env.spec)


def test_loader_directory_that_is_not_a_model(env, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a Hugging Face model folder" in refuse(tmp_path)


def test_loader_unknown_bytes_and_numpy(env, tmp_path):
    p = tmp_path / "noise.bin"
    p.write_bytes(b"\x00\x01\x02garbage" * 50)
    assert "unrecognised file format" in refuse(p)
    npy = tmp_path / "arr.npy"
    np.save(npy, np.zeros(3))
    assert "numpy" in refuse(npy)


def test_loader_truncated_zip(env, tmp_path):
    data = env.good.read_bytes()
    p = tmp_path / "trunc.pt"
    p.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt zip" in refuse(p, arch=env.spec)


def test_loader_truncated_legacy_file(env, tmp_path):
    data = env.legacy.read_bytes()
    p = tmp_path / "trunc_legacy.pt"
    p.write_bytes(data[: len(data) - 40])
    msg = refuse(p, arch=env.spec)
    assert "could not be read" in msg


def _copy_zip(src, dst, extra):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        extra(zout)


def test_loader_zip_bomb(env, tmp_path):
    p = tmp_path / "bomb.pt"
    big = b"\x00" * (24 * 1024 * 1024)
    _copy_zip(env.good, p, lambda z: z.writestr("good/data/99", big, compress_type=zipfile.ZIP_DEFLATED))
    assert p.stat().st_size < 1024 * 1024
    assert "zip bomb" in refuse(p, arch=env.spec)


def test_loader_zip_path_traversal(env, tmp_path):
    p = tmp_path / "traversal.pt"
    _copy_zip(env.good, p, lambda z: z.writestr("good/../../../../tmp/evil.txt", b"x"))
    assert "path traversal" in refuse(p, arch=env.spec)
    q = tmp_path / "absolute.pt"
    _copy_zip(env.good, q, lambda z: z.writestr(zipfile.ZipInfo("/etc/evil"), b"x"))
    assert "path traversal" in refuse(q, arch=env.spec)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_loader_non_finite_weights(env, tmp_path, bad):
    from safetensors.torch import save_file

    sd = {k: v.clone() for k, v in env.model.state_dict().items()}
    sd["3.weight"][0, 5] = bad
    p = tmp_path / "nan.pt"
    torch.save(sd, p)
    msg = refuse(p, arch=env.spec)
    assert "not finite" in msg and "3.weight" in msg
    s = tmp_path / "nan.safetensors"
    save_file(sd, str(s))
    assert "not finite" in refuse(s, arch=env.spec)


def test_loader_non_finite_torchscript(env, tmp_path, monkeypatch):
    import sys
    import types

    from probes.result import ProbeResult

    fake = types.ModuleType("probes.static_scan")  # isolate from the scanner: this tests the weights check
    fake.scan_path = lambda p: ProbeResult("static", "clean", 0.0, "ok", details={"findings": []})
    monkeypatch.setitem(sys.modules, "probes.static_scan", fake)
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 3))
    with torch.no_grad():
        m[0].bias[1] = float("nan")
    p = tmp_path / "nan_ts.pt"
    torch.jit.save(torch.jit.script(m), str(p))
    assert "not finite" in refuse(p)


def test_loader_shapes_do_not_fit_arch(env):
    msg = refuse(env.good, arch=f"{env.arch}:Wider")
    assert "does not fit --arch Wider" in msg and "shape mismatch" in msg and "0.weight" in msg


def test_loader_missing_and_unexpected_keys(env, tmp_path):
    sd = dict(env.model.state_dict())
    sd["extra.weight"] = sd.pop("3.bias")
    p = tmp_path / "keys.pt"
    torch.save(sd, p)
    msg = refuse(p, arch=env.spec)
    assert "1 missing, e.g. 3.bias" in msg and "1 unexpected, e.g. extra.weight" in msg


def test_loader_not_a_state_dict(env, tmp_path):
    p = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), p)
    assert "not a state_dict" in refuse(p, arch=env.spec)
    q = tmp_path / "dict.pt"
    torch.save({"epoch": 3, "lr": 0.1}, q)
    assert "not a state_dict" in refuse(q, arch=env.spec)


@pytest.mark.parametrize("spec, expect", [
    ("no-colon-here", "--arch must look like"),
    ("{arch}:", "--arch must look like"),
    ("{arch}:not valid", "--arch must look like"),
    ("{dir}/missing.py:Tiny", "--arch file not found"),
    ("{arch}:NoSuchClass", "has no 'NoSuchClass'; it defines"),
    ("{arch}:NeedsArgs", "could not be constructed without arguments"),
    ("{arch}:NotAModule", "not a torch nn.Module"),
    ("{broken}:X", "failed to import: SyntaxError"),
])
def test_loader_bad_arch_spec(env, spec, expect):
    broken = env.dir / "broken_arch.py"
    broken.write_text("def oops(:\n")
    spec = spec.format(arch=env.arch, dir=env.dir, broken=broken)
    assert expect in refuse(env.good, arch=spec)


@pytest.mark.parametrize("cls, expect", [("Features", "not a classifier"), ("TupleOut", "not a classifier"),
                                         ("OneLogit", "one logit per input")])
def test_loader_not_a_classifier(env, tmp_path, cls, expect):
    from probes.subjects.arch import build_arch

    model = build_arch(f"{env.arch}:{cls}")
    p = tmp_path / f"{cls}.pt"
    torch.save(model.state_dict(), p)
    assert expect in refuse(p, arch=f"{env.arch}:{cls}", input_shape=(1, 8, 8))


def test_loader_invalid_safetensors(env, tmp_path):
    import json
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}).encode()
    p = tmp_path / "lying.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 16)
    assert "invalid safetensors" in refuse(p, arch=env.spec)


def test_loader_joblib_like_compressed_pickle_refused(tmp_path):
    import pickle
    import zlib

    p = tmp_path / "model.joblib"
    p.write_bytes(zlib.compress(pickle.dumps({"coef": [1.0, 2.0]})))
    msg = refuse(p, exc=UnsafeModelError)
    assert "full unpickler" in msg and "--arch" in msg
