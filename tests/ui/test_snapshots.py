"""Snapshots of the main screens on the deterministic synthetic case (SVGs under __snapshots__)."""

from __future__ import annotations

import pytest
from textual.widgets import TabbedContent

from workbench.ui.app import WorkbenchApp

SIZE = (150, 44)


def make(syn, **kwargs) -> WorkbenchApp:
    app = WorkbenchApp(syn["db"], **kwargs)
    app.sub_title = "case.db"  # the temp path differs per run
    return app


def test_case_overview(snap_compare, syn):
    assert snap_compare(make(syn), terminal_size=SIZE)


def test_subject_scores(snap_compare, syn):
    assert snap_compare(make(syn, subject_id=syn["img"]), terminal_size=SIZE)


def test_trigger_norms_and_heatmap(snap_compare, syn):
    assert snap_compare(make(syn, subject_id=syn["img"]), press=["2"], terminal_size=SIZE)


def test_trigger_hunt(snap_compare, syn):
    assert snap_compare(make(syn, subject_id=syn["lm"]), press=["3"], terminal_size=SIZE)


def test_data_audit(snap_compare, syn):
    assert snap_compare(make(syn, subject_id=syn["img"]), press=["4"], terminal_size=SIZE)


@pytest.mark.parametrize("key", ["notes"])
def test_notes(snap_compare, syn, key):
    async def show(pilot):
        pilot.app.query_one(TabbedContent).active = f"tab-{key}"  # without focusing the editor (no cursor blink)
        await pilot.pause()

    assert snap_compare(make(syn, case_id=syn["case_id"]), run_before=show, terminal_size=SIZE)


def test_probe_picker(snap_compare, syn):
    assert snap_compare(make(syn, subject_id=syn["img"]), press=["r"], terminal_size=SIZE)


def test_static_findings(snap_compare, syn):
    """A subject whose static scan has findings: the Scores pane lists them one per row."""
    assert snap_compare(make(syn, subject_id=syn["pkl"]), terminal_size=SIZE)
