"""The TUI's remediate action (m) on a flagged subject: a thread worker with progress, the case file updated; Esc cancels."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input
from ui_helpers import settle, wait_for

from casefiles import CaseStore
from workbench.ui.app import WorkbenchApp

FAST = {"epochs": 3, "rerun_detector": False, "strip_copies": 4}


async def _open_form(app, pilot, subject_id: int, out: Path) -> None:
    app.select_key(("subject", subject_id))
    await pilot.pause()
    await pilot.press("m")
    await pilot.pause()
    app.screen.query_one("#field-out", Input).value = str(out)


async def test_remediate_key_repairs_the_flagged_subject_and_records_it(digits_case, tmp_path):
    out = tmp_path / "repaired"
    app = WorkbenchApp(digits_case["db"], remediation_params=FAST)
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await _open_form(app, pilot, digits_case["subject_id"], out)
        assert app.screen.query_one("#field-data", Input).value == str(digits_case["data"])  # prefilled from the run
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current is not None or app.finished_jobs)
        await settle(app, pilot)
        job = app.finished_jobs[-1]
        assert job.kind == "remediate" and job.status == "done", [n.message for n in app._notifications]
    assert (out / "repaired.ts.pt").is_file() and (out / "filter.json").is_file()
    with CaseStore(digits_case["db"]) as store:
        runs = store.list_runs(case_id=digits_case["case_id"])
        rem = [r for r in runs if r["probe"] == "remediation"]
        assert rem and rem[0]["subject_id"] == digits_case["subject_id"]
        names = [s["name"] for s in store.list_subjects(digits_case["case_id"])]
        assert "repaired.ts.pt" in names


async def test_escape_cancels_the_remediation_and_writes_nothing(digits_case, tmp_path):
    out = tmp_path / "never"
    app = WorkbenchApp(digits_case["db"], remediation_params={**FAST, "epochs": 1000, "patience": 1000,
                                                                  "acc_margin": 0.0, "asr_target": 0.0})
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await _open_form(app, pilot, digits_case["subject_id"], out)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current is not None or app.finished_jobs, rounds=1200)
        assert not app.finished_jobs
        await pilot.press("escape")  # while the worker loads the model / starts the repair
        await settle(app, pilot)
        assert app.finished_jobs[-1].status == "cancelled"
    assert not out.exists() and not list(tmp_path.glob(".never.*"))
    with CaseStore(digits_case["db"]) as store:
        assert not [r for r in store.list_runs(case_id=digits_case["case_id"]) if r["probe"] == "remediation"]


def test_the_action_has_a_binding_with_id_and_tooltip_and_a_palette_entry():
    b = next(b for b in WorkbenchApp.BINDINGS if getattr(b, "action", "") == "remediate")
    assert b.key == "m" and b.id == "subject.remediate" and b.tooltip
    assert any(action == "remediate" for _, _, action in WorkbenchApp.PALETTE)
