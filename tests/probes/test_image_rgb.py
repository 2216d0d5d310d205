"""The RGB zoo and the image probes added for issue 17, on small models the tests build.

Each detector must tell a real backdoored model from a clean one trained the same way. Models are
tiny (3x16x16, 10 classes, 100 images a class) and trained once per session (cache off: the test
cache folder is per test).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.xdist_group("rgb")

SIZE, K, N = 16, 10, 100


@pytest.fixture(scope="session")
def torch1():
    import torch

    torch.set_num_threads(1)
    return torch


def _build(arch, kind, target=0, seed=0, rate=None, **kw):
    from probes.zoo.rgb import RGBAttack, build

    return build(arch, RGBAttack(kind, target=target, rate=rate), seed, size=SIZE, n_classes=K, n_per_class=N,
                 cache=False, **kw)


@pytest.fixture(scope="session")
def clean_resnet(torch1):
    return _build("resnet", "clean", seed=0)


@pytest.fixture(scope="session")
def badnets_resnet(torch1):
    return _build("resnet", "badnets", target=3, seed=0)


@pytest.fixture(scope="session")
def blended_vgg(torch1):
    return _build("vgg", "blended", target=6, seed=1, rate=0.2)  # 1,000 training images need more poison


@pytest.fixture(scope="session")
def clean_vgg(torch1):
    return _build("vgg", "clean", seed=1)


def _data(zm):
    from probes.data import LabelledData

    return LabelledData(*zm.test, source="rgb test split")


def test_make_data_classes_and_range():
    from probes.zoo.rgb import make_data

    x, y = make_data(n_classes=40, size=12, n_per_class=5, seed=3)
    assert x.shape == (200, 3, 12, 12) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert sorted(set(y.tolist())) == list(range(40))
    x2, _ = make_data(n_classes=40, size=12, n_per_class=5, seed=3)
    assert np.array_equal(x, x2)  # seeded


@pytest.mark.parametrize("kind", ["badnets", "blended", "sig", "wanet", "input-aware", "clean-label", "all-to-all"])
def test_every_family_changes_the_image(kind):
    from probes.zoo.rgb import RGBAttack, apply_trigger, make_data, poison

    x, y = make_data(n_classes=10, size=32, n_per_class=10, seed=0)
    xt = apply_trigger(x, RGBAttack(kind, target=1))
    assert xt.shape == x.shape and np.isfinite(xt).all()
    assert np.abs(xt - x).mean() > 1e-3
    x_p, y_p, is_p = poison(x, y, RGBAttack(kind, target=1), seed=0)
    assert is_p.any()
    if kind == "clean-label":
        assert (y_p == y).all() and (y[is_p] == 1).all()
    elif kind == "all-to-all":
        assert (y_p[is_p] == (y[is_p] + 1) % 10).all()
    else:
        assert (y_p[is_p] == 1).all()


def test_architectures_shapes(torch1):
    from probes.zoo.architectures import ResNet18, TinyResNet, TinyVGG, TinyViT

    for cls, shape in ((TinyResNet, (3, 32, 32)), (TinyVGG, (3, 24, 24)), (TinyViT, (3, 32, 32))):
        m = cls(shape[0], shape[1], 20).eval()
        assert m(torch1.zeros((2, *shape))).shape == (2, 20)
    assert 10e6 < sum(p.numel() for p in ResNet18().parameters()) < 12e6


def test_zoo_models_work(clean_resnet, badnets_resnet, blended_vgg):
    assert clean_resnet.clean_acc > 0.8 and clean_resnet.asr < 0.3
    assert badnets_resnet.working and badnets_resnet.asr >= 0.8 and badnets_resnet.clean_acc > 0.8
    assert blended_vgg.working and blended_vgg.clean_acc > 0.8


def test_zoo_cache_roundtrip(torch1, tmp_path, monkeypatch):
    from probes.zoo.rgb import RGBAttack, build

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    a = build("vgg", RGBAttack("clean"), 0, size=12, n_classes=4, n_per_class=20, epochs=1)
    files = list((tmp_path / "rgb-zoo-v1").iterdir())
    assert {f.suffix for f in files} == {".safetensors", ".json"} and not any(f.name.endswith(".tmp") for f in files)
    b = build("vgg", RGBAttack("clean"), 0, size=12, n_classes=4, n_per_class=20, epochs=1)
    assert a.clean_acc == b.clean_acc
    for pa, pb in zip(a.module.state_dict().values(), b.module.state_dict().values(), strict=True):
        assert torch1.equal(pa, pb)


def test_max_margin_without_data_tells_badnets_from_clean(badnets_resnet, clean_resnet):
    from probes import max_margin, registry
    from probes.context import context_for

    assert "max-margin" in registry.applicable("image-classifier", have_data=False)
    bad = max_margin.run(badnets_resnet.subject(), context_for("max-margin", {})).to_dict()
    good = max_margin.run(clean_resnet.subject(), context_for("max-margin", {})).to_dict()
    assert bad["verdict"] == "backdoored" and bad["suspected_target"] == 3, bad["summary"]
    assert good["verdict"] == "clean", good["summary"]
    assert bad["p_value"] < good["p_value"]
    assert "[no data used]" in bad["summary"]


def test_transform_inversion_exposes_a_blended_trigger(blended_vgg, clean_vgg):
    from probes import transform_inversion
    from probes.context import context_for

    bad = transform_inversion.run(blended_vgg.subject(),
                                  context_for("transform-inversion", {}, data=_data(blended_vgg))).to_dict()
    good = transform_inversion.run(clean_vgg.subject(),
                                   context_for("transform-inversion", {}, data=_data(clean_vgg))).to_dict()
    assert bad["verdict"] == "backdoored" and bad["suspected_target"] == 6, bad["summary"]
    assert good["verdict"] == "clean", good["summary"]


def test_null_model_pvalues():
    from probes.null_models import largest_pvalue, p_to_score

    rng = np.random.default_rng(0)
    base = rng.gamma(8.0, 5.0, size=20)
    outlier = largest_pvalue(np.append(base, 400.0))
    typical = largest_pvalue(base)
    assert outlier.candidate == 20 and outlier.p_value < 1e-4
    assert typical.p_value > 0.05
    assert abs(p_to_score(0.05, 0.05) - 0.5) < 1e-9 and p_to_score(1.0, 0.05) == 0.0


def test_pair_search_shift_null_is_combinatorial():
    from probes.pair_search import _shift_structure

    k = 10
    a2a = [{"source": s, "target": (s + 1) % k, "reached": True} for s in range(k)]
    d, p, srcs = _shift_structure(a2a, k)
    assert d == 1 and p < 1e-6 and srcs == set(range(k))
    rng = np.random.default_rng(1)
    scattered = [{"source": s, "target": int(t), "reached": True}
                 for s, t in ((s, rng.choice([c for c in range(k) if c != s])) for s in range(k))]
    assert _shift_structure(scattered, k)[1] > 0.05


def test_layered_verdict_names_new_probes():
    from vocabulary.layered import layered_verdict

    v = layered_verdict([{"probe": "static", "verdict": "clean", "score": 0.0},
                         {"probe": "max-margin", "verdict": "backdoored", "score": 0.9, "p_value": 1e-5,
                          "suspected_target": 3},
                         {"probe": "pair-search", "verdict": "backdoored", "score": 0.8, "p_value": 1e-6,
                          "suspected_target": None, "all_to_all": True,
                          "mapping": [{"source": 0, "target": 1}, {"source": 1, "target": 2}]}])
    assert v["verdict"] == "backdoored"
    assert "max-margin p = 1e-05 → class 3" in v["evidence"]
    assert "all-to-all mapping 0→1, 1→2" in v["evidence"]


def test_probes_assume_no_shape_or_class_count(torch1):
    """Untrained ViT / ResNet at other sizes and many classes: every probe runs, chunked, and reports per class."""
    from probes import max_margin, neural_cleanse, pair_search, transform_inversion
    from probes.context import context_for
    from probes.data import LabelledData
    from probes.subjects.base import ImageClassifier
    from probes.zoo.architectures import TinyResNet, TinyViT
    from probes.zoo.rgb import make_data

    for model, shape, k in ((TinyViT(3, 48, 120, patch=8), (3, 48, 48), 120), (TinyResNet(3, 40, 30), (3, 40, 40), 30)):
        subj = ImageClassifier.from_module(model.eval(), shape, k, format="module")
        x, y = make_data(n_classes=k, size=shape[1], n_per_class=1, seed=0)
        data = LabelledData(x, y)
        few = {"max_batch_images": 64}
        r = max_margin.run(subj, context_for("max-margin", {**few, "steps": 2, "restarts": 1})).to_dict()
        assert len(r["per_class"]) == k and r["verdict"] in ("clean", "backdoored")
        r = transform_inversion.run(subj, context_for("transform-inversion", {**few, "steps": 2, "batch_size": 2},
                                                      data=data)).to_dict()
        assert len(r["per_class"]) == k
        r = neural_cleanse.run(subj, context_for("neural-cleanse", {**few, "steps": 2, "refine_steps": 1,
                                                                    "batch_size": 2, "recheck_runs": 0},
                                                 data=data)).to_dict()
        assert len(r["per_class"]) == k
        r = pair_search.run(subj, context_for("pair-search", {**few, "prescreen_steps": 1, "steps": 1,
                                                              "arm_batch": 1}, data=data)).to_dict()
        assert r["arms_prescreened"] <= k * 3  # above max_full_classes: prescreen_targets per source, not K^2


def test_pair_search_names_an_all_to_all_mapping(torch1):
    from probes import pair_search
    from probes.context import context_for
    from probes.zoo.rgb import RGBAttack, build

    # all-to-all needs larger images than the other tests' models (at 16x16: ASR 0.69, or a mapping on 3 of
    # 10 sources only)
    a2a = build("resnet", RGBAttack("all-to-all"), 0, size=24, n_classes=K, n_per_class=150, epochs=20, cache=False)
    clean_resnet = build("resnet", RGBAttack("clean"), 0, size=24, n_classes=K, n_per_class=150, epochs=20,
                         cache=False)
    assert a2a.working, a2a.asr
    quick: dict = {}  # the defaults (80 steps did not find the mapping at 16x16)
    bad = pair_search.run(a2a.subject(), context_for("pair-search", quick, data=_data(a2a))).to_dict()
    good = pair_search.run(clean_resnet.subject(), context_for("pair-search", quick, data=_data(clean_resnet))).to_dict()
    assert bad["verdict"] == "backdoored" and bad["shift"] == 1 and bad["all_to_all"], bad["summary"]
    assert good["verdict"] == "clean", good["summary"]
    assert bad["arm_steps"] < bad["arm_steps_exhaustive"] / 2
