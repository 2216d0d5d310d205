"""Session-cached digits-zoo models and data shared by the zoo / Neural Cleanse / STRIP tests.

Import the fixtures you need into a test module (``from tests.probes.digits_fixtures import ...``
or ``from digits_fixtures import ...``); each model is trained once per test session
(per xdist worker: mark heavy tests ``@pytest.mark.xdist_group("digits")`` so they share one).
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def torch_one_thread():
    import torch

    torch.set_num_threads(1)
    return torch


@pytest.fixture(scope="session")
def digits(torch_one_thread):
    from probes.zoo.digits import load_digits

    return load_digits(16, seed=0)


@pytest.fixture(scope="session")
def clean_data(digits):
    from probes.data import LabelledData

    _, _, xte, yte = digits
    return LabelledData(xte, yte, source="digits-test")


@pytest.fixture(scope="session")
def badnets_cnn(torch_one_thread):
    from probes.zoo.digits import AttackSpec, build_model

    return build_model("cnn", AttackSpec("badnets", target=3), seed=0)


@pytest.fixture(scope="session")
def clean_cnn(torch_one_thread):
    from probes.zoo.digits import AttackSpec, build_model

    return build_model("cnn", AttackSpec("clean"), seed=0)


@pytest.fixture(scope="session")
def badnets_mlp(torch_one_thread):
    from probes.zoo.digits import AttackSpec, build_model

    return build_model("mlp", AttackSpec("badnets", target=7), seed=1)


@pytest.fixture(scope="session")
def rgb_badnets(torch_one_thread):
    """Colour 3x24x24 digits, 5 classes, BadNets -> 2: the shape-independence subject."""
    from probes.zoo.digits import AttackSpec, build_model

    return build_model("cnn", AttackSpec("badnets", target=2), seed=0, size=24, channels=3, n_classes=5)


@pytest.fixture(scope="session")
def nc_badnets_result(badnets_cnn, clean_data):
    """One default Neural Cleanse run on the BadNets CNN, shared by several tests."""
    from probes import neural_cleanse
    from probes.context import context_for

    return neural_cleanse.run(badnets_cnn.subject(), context_for("neural-cleanse", {"seed": 0}, data=clean_data))


def poisoned_mix(zm, n_poison: int = 100):
    """The clean test split plus ``n_poison`` triggered test images, with ``is_poison``."""
    from probes.data import LabelledData
    from probes.zoo.digits import apply_trigger

    xte, yte = zm.test
    sel = np.flatnonzero(yte != zm.attack.target)[:n_poison]
    x = np.concatenate([xte, apply_trigger(xte[sel], zm.attack)])
    y = np.concatenate([yte, yte[sel]])
    is_p = np.r_[np.zeros(len(xte), bool), np.ones(len(sel), bool)]
    return LabelledData(x, y, is_p, source="digits-test+poison")
