"""UI test fixtures: a synthetic case file per test (fast, no torch) and session-cached real subjects."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic  # noqa: E402
from fixtures import build_digits_case, copy_db  # noqa: E402


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


async def settle(app, pilot, rounds: int = 400) -> None:
    """Wait until the job queue is empty (workers awaited, not slept on)."""
    for _ in range(rounds):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if app.current is None and not app.queue:
            return
    raise AssertionError("jobs did not finish")


async def wait_for(pilot, cond, rounds: int = 300, step: float = 0.05) -> None:
    for _ in range(rounds):
        if cond():
            return
        await pilot.pause(step)
    raise AssertionError("condition not reached")


def plain(static, width: int = 200) -> str:
    """The text a Static shows (rich renderables included), without styles."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(static.content)
    return console.file.getvalue()
