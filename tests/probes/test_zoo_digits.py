"""The digits zoo: data, poisoning, training quality, saving in every supported format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from digits_fixtures import badnets_cnn, clean_cnn, digits, rgb_badnets, torch_one_thread  # noqa: F401

from probes.zoo.digits import AttackSpec, ZooModel, apply_trigger, load_digits, poison, save_model

pytestmark = pytest.mark.xdist_group("digits")


def test_load_digits_shapes_range_and_stratified_split(digits):
    xtr, ytr, xte, yte = digits
    assert xtr.dtype == np.float32 and xtr.shape[1:] == (1, 16, 16) and xte.shape[1:] == (1, 16, 16)
    assert 0.0 <= xtr.min() and xtr.max() <= 1.0
    assert len(xtr) + len(xte) == 1797 and abs(len(xte) / 1797 - 0.25) < 0.01
    assert np.allclose(np.bincount(ytr) / len(ytr), np.bincount(yte) / len(yte), atol=0.01)
    x3 = load_digits(24, channels=3, n_classes=5)
    assert x3[0].shape[1:] == (3, 24, 24) and set(np.unique(x3[1])) == set(range(5))


@pytest.mark.parametrize("kind", ["badnets", "blended", "all-to-all", "clean-label"])
def test_poison_marks_and_relabels(digits, kind):
    xtr, ytr, _, _ = digits
    atk = AttackSpec(kind, target=4, rate=0.1)
    xp, yp, isp = poison(xtr, ytr, atk, seed=1)
    assert isp.dtype == bool and 0 < isp.sum() <= round(0.1 * len(ytr))
    assert np.array_equal(xp[~isp], xtr[~isp]) and not np.array_equal(xp[isp], xtr[isp])
    if kind in ("badnets", "blended"):
        assert (yp[isp] == 4).all() and (ytr[isp] != 4).all()
    elif kind == "all-to-all":
        assert (yp[isp] == (ytr[isp] + 1) % 10).all()
    else:
        assert (yp == ytr).all() and (ytr[isp] == 4).all()
    # deterministic for the seed
    assert np.array_equal(poison(xtr, ytr, atk, seed=1)[2], isp)


def test_badnets_trigger_is_a_corner_patch(digits):
    x = digits[2][:5]
    xt = apply_trigger(x, AttackSpec("badnets", patch_size=3))
    changed = np.argwhere((xt != x).any(axis=(0, 1)))
    assert changed.min() >= 16 - 4 and changed.max() <= 14


def test_zoo_models_train_well(badnets_cnn, clean_cnn):
    assert badnets_cnn.clean_acc >= 0.9 and badnets_cnn.asr >= 0.9
    assert clean_cnn.clean_acc >= 0.93 and clean_cnn.asr < 0.2
    assert badnets_cnn.name == "cnn-badnets->3-s0"


def test_save_model_round_trips_every_format(tmp_path, badnets_cnn, rgb_badnets):
    import importlib.util

    import torch
    from safetensors.torch import load_file

    for zm in (badnets_cnn, rgb_badnets):
        x = torch.rand((4, *zm.input_shape))
        want = zm.module(x)
        ts = save_model(zm, tmp_path, "torchscript")
        assert torch.allclose(torch.jit.load(str(ts))(x), want, atol=1e-5)
        for fmt in ("state_dict", "safetensors"):
            path = save_model(zm, tmp_path / fmt, fmt)
            meta = json.loads(path.with_name(path.name.split(".")[0] + ".json").read_text())
            file, cls = meta["arch"].rsplit(":", 1)
            spec = importlib.util.spec_from_file_location("arch_under_test", file)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            model = getattr(mod, cls)()
            assert tuple(model.input_shape) == zm.input_shape
            state = torch.load(path, weights_only=True) if fmt == "state_dict" else load_file(str(path))
            model.load_state_dict(state)
            assert torch.allclose(model.eval()(x), want, atol=1e-5)


def test_save_model_writes_an_arch_file_for_non_default_shapes(tmp_path, torch_one_thread):
    import importlib.util

    import torch

    from probes.zoo.architectures import MLP

    zm = ZooModel(MLP(3, 24, 5), "mlp", AttackSpec(), 0, 0.0, 0.0, (3, 24, 24), 5)
    path = save_model(zm, tmp_path, "safetensors")
    meta = json.loads(path.with_name(path.name.split(".")[0] + ".json").read_text())
    file, cls = meta["arch"].rsplit(":", 1)
    assert file.endswith("_arch.py") and cls == "Model"
    spec = importlib.util.spec_from_file_location("gen_arch", file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.Model()(torch.zeros(1, 3, 24, 24)).shape == (1, 5)
