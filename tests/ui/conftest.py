"""UI test fixtures: a synthetic case file per test (fast, no torch) and session-cached real subjects."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ui_synthetic as synthetic  # noqa: E402
from ui_fixtures import build_digits_case, copy_db  # noqa: E402


@pytest.fixture
def syn(tmp_path):
    """A deterministic case file (4 subjects, finished runs) for this test only."""
    return synthetic.build(tmp_path / "case.db")


@pytest.fixture(scope="session")
def digits_case_session(tmp_path_factory):
    return build_digits_case(tmp_path_factory.mktemp("ui-digits"), nc_steps=60)


@pytest.fixture
def digits_case(digits_case_session, tmp_path):
    """The session's digits case, copied so the test may write to it."""
    return {**digits_case_session, "db": copy_db(digits_case_session["db"], tmp_path)}


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from probes.zoo import tiny_lm as T

    return T.build_subject(tmp_path_factory.mktemp("ui-lm") / "tiny-lm-trigger1", "trigger1", preset="ci")
