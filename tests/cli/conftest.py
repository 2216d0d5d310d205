"""Subjects for CLI scans, built once per test session by the project's own code."""

from __future__ import annotations

import pickle

import pytest


@pytest.fixture(scope="session")
def digits_subjects(tmp_path_factory):
    """A BadNets-backdoored and a clean digits CNN (TorchScript), clean test data and the poisoned training set."""
    import torch

    from probes.data import save_npz
    from probes.zoo.digits import AttackSpec, build_model, save_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("digits-cli")
    bad = build_model("cnn", AttackSpec(kind="badnets", target=0, rate=0.1), seed=1)
    clean = build_model("cnn", AttackSpec(kind="clean"), seed=1)
    xte, yte = bad.test
    x, y, is_p = bad.train
    return {
        "backdoored": save_model(bad, root / "bad", "torchscript"),
        "clean": save_model(clean, root / "clean", "torchscript"),
        "state_dict": save_model(bad, root / "sd", "state_dict"),
        "data": save_npz(root / "clean-test.npz", xte[:300], yte[:300]),
        "audit": save_npz(root / "train-poisoned.npz", x, y, is_p),
        "root": root,
    }


class _Payload:
    """Harmless payload: unpickling it would call os.getpid (the tests never unpickle it)."""

    def __reduce__(self):
        import os

        return (os.getpid, ())


@pytest.fixture(scope="session")
def booby_trapped(tmp_path_factory):
    path = tmp_path_factory.mktemp("payload") / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0], "hook": _Payload()}, protocol=4))
    return path
