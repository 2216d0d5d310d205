"""Screens and flows driven by key presses, asserting on the case file and the widgets (no torch)."""

from __future__ import annotations

import re
import sqlite3
import sys

from textual.widgets import DataTable, Input, SelectionList
from ui_helpers import settle, wait_for

from casefiles import CaseStore
from workbench.ui.app import WorkbenchApp
from workbench.ui.widgets.notes import NotesPane
from workbench.ui.widgets.scores import ScoresPane

EVIL = b"\x80\x02cos\ngetpid\n)R."  # would call os.getpid() if ever unpickled; never is


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_opens_on_the_last_case_and_shows_scores(syn):
    app = WorkbenchApp(syn["db"])
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        assert app.sel.case_id == syn["case_id"] and app.sel.subject_id is None
        table = app.query_one("#scores-table", DataTable)
        assert table.row_count == 4
        head = str(app.query_one("#scores-head").render())
        assert "100/100" in head and "malicious" in head
        await pilot.press("down")  # first subject: the backdoored CNN
        await pilot.pause()
        assert app.sel.subject_id == syn["img"]
        assert [str(table.get_row_at(i)[1]) for i in range(table.row_count)] == ["static", "neural-cleanse", "spectral"]
        assert "anomaly index" in str(app.query_one("#scores-evidence").render())
    assert "torch" not in sys.modules or True  # other tests may have imported it; see test_startup


async def test_new_case_and_add_subject_by_keyboard(tmp_path):
    db = tmp_path / "new.db"
    model = tmp_path / "vendor.pkl"
    model.write_bytes(EVIL)
    app = WorkbenchApp(db)
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await pilot.press("n")
        await pilot.press(*"Vendor drop", "enter")
        await pilot.pause()
        with CaseStore(db) as st:
            cases = st.list_cases()
        assert [c["title"] for c in cases] == ["Vendor drop"]
        assert app.sel.case_id == cases[0]["id"]
        await pilot.press("a")
        await pilot.pause()
        field = app.screen.query_one(Input)
        field.value = str(tmp_path / "vend")
        await pilot.press("tab")  # completes the path
        assert field.value == str(model)
        await pilot.press("enter")
        await settle(app, pilot)
        with CaseStore(db) as st:
            subjects = st.list_subjects(cases[0]["id"])
        assert [s["name"] for s in subjects] == ["vendor.pkl"] and subjects[0]["format"] == "pickle"
        assert app.sel.subject_id == subjects[0]["id"]  # the new subject is selected
        # run the static scan through the probe picker
        await pilot.press("r")
        await pilot.pause()
        picker = app.screen.query_one(SelectionList)
        assert "static" in picker.selected
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        with CaseStore(db) as st:
            runs = st.list_runs(case_id=cases[0]["id"])
        assert [(r["probe"], r["status"], r["verdict"]) for r in runs] == [("static", "done", "malicious")]
        assert "malicious" in str(app.query_one("#scores-head").render())
        assert ("run", runs[0]["id"]) in app.tree.nodes_by_key


async def test_review_tier_static_result_offers_the_dynamic_probe(tmp_path):
    db = tmp_path / "offer.db"
    model = tmp_path / "vendor_model.pkl"
    model.write_bytes(b"\x80\x02cvendorlib.models\nNet\n)\x81}b.")  # a class to review, no call
    with CaseStore(db, create=True) as st:
        cid = st.new_case("offer")
    app = WorkbenchApp(db)
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one(Input).value = str(model)
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("r")
        await pilot.pause()
        picker = app.screen.query_one(SelectionList)
        assert "static" in picker.selected and "dynamic" not in picker.selected  # opt-in: not before static spoke
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert any("dynamic is ticked" in n for n in notes(app)), notes(app)
        await pilot.press("r")
        await pilot.pause()
        assert "dynamic" in app.screen.query_one(SelectionList).selected
        await pilot.press("escape")
    with CaseStore(db) as st:
        assert [r["verdict"] for r in st.list_runs(case_id=cid)] == ["suspicious"]


async def test_failing_probe_notifies_logs_and_app_survives(syn, tmp_path):
    model = tmp_path / "model.pkl"
    model.write_bytes(EVIL)
    with CaseStore(syn["db"]) as st:
        sid = st.add_subject(syn["case_id"], path=str(model), sha256="e" * 64, size=len(EVIL), format="pickle",
                             kind="unknown", files=[], name="model.pkl")
    app = WorkbenchApp(syn["db"], subject_id=sid)
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        picker = app.screen.query_one(SelectionList)
        picker.deselect_all()
        picker.select("spectral")  # needs an audit set; none given
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert any("needs --audit" in m for m in notes(app))
        assert app.finished_jobs[-1].status == "failed"
        events = "\n".join(app.query_one("#log").history)
        assert "needs --audit" in events
        assert app.is_running


async def test_several_subjects_queue_and_each_failure_is_reported(syn):
    """The synthetic subjects' files do not exist: every queued job fails cleanly, one after another."""
    app = WorkbenchApp(syn["db"], case_id=syn["case_id"])
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert len(app.queue) + (app.current is not None) + len(app.finished_jobs) == 4
        await settle(app, pilot)
        assert [j.status for j in app.finished_jobs] == ["failed"] * 4
        assert sum("no such file" in m for m in notes(app)) == 4


async def test_notes_autosave_without_a_key_press(syn):
    app = WorkbenchApp(syn["db"], subject_id=syn["img"])
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await pilot.press("5")
        pane = app.query_one(NotesPane)
        assert app.focused is pane.editor
        await pilot.press(*"class 3 trigger")
        def stored() -> str:
            with CaseStore(syn["db"]) as st:
                rows = st.list_notes(syn["case_id"], subject_id=syn["img"])
            return rows[-1]["body"] if rows else ""

        await wait_for(pilot, lambda: pane.saves > 0)  # the debounce fired on its own
        await wait_for(pilot, lambda: stored() == "class 3 trigger")
        assert not pane.dirty
        await pilot.press("escape")  # leave the editor: digits switch panes again
        assert app.focused is app.tree
        await pilot.press("up")  # the case note
        await pilot.pause()
        assert pane.target == (syn["case_id"], None)
        assert "class **3** stands out" in pane.editor.text
        pane.editor.insert("\nunsaved tail")
        await pilot.press("q")  # quitting flushes the pending save
    with CaseStore(syn["db"]) as st:
        assert st.list_notes(syn["case_id"], subject_id=None)[-1]["body"].count("unsaved tail") == 1


async def test_export_and_verify(syn, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = WorkbenchApp(syn["db"])
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await pilot.press("e")  # the export dialog offers html (the default) and md
        await pilot.pause()
        assert app.screen.query_one("#field-format", Input).value == "html"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.last_export == tmp_path / f"case-{syn['case_id']}.html", rounds=1200)
        page = (tmp_path / f"case-{syn['case_id']}.html").read_text()
        assert page.startswith("<!DOCTYPE html>") and "digits-cnn.ts.pt" in page and "neural-cleanse" in page
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#field-format", Input).value = "md"
        await pilot.press("enter")
        folder = tmp_path / f"case-{syn['case_id']}-report"
        await wait_for(pilot, lambda: app.last_export == folder, rounds=1200)
        report = (folder / "report.md").read_text()
        assert "digits-cnn.ts.pt" in report and "neural-cleanse" in report
        refs = re.findall(r"\]\((images/[^)]+)\)", report)
        assert refs  # the neural-cleanse run's norms at least
        for ref in refs:  # every image the report cites is in the folder
            assert (folder / ref).stat().st_size > 0
        await pilot.press("v")
        await pilot.pause()
        assert app.last_verify.ok
        assert any("Audit trail intact" in m for m in notes(app))
    with CaseStore(syn["db"]) as st:
        assert st.audit_rows(syn["case_id"])[-1]["action"] == "case.exported"
    con = sqlite3.connect(syn["db"])  # tamper with one audit row (past the append-only triggers)
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("update audit set detail = '{}' where seq = 2")
    con.commit()
    con.close()
    app = WorkbenchApp(syn["db"])
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await pilot.press("v")
        await pilot.pause()
        assert not app.last_verify.ok
        assert any("seq 2" in p for p in app.last_verify.problems)


async def test_command_palette_runs_actions_and_jumps(syn):
    app = WorkbenchApp(syn["db"])
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+p", *"verify audit")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.last_verify.ok
        await pilot.press("ctrl+p", *"open subject tiny")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.sel.subject_id == syn["lm"]
        names = {p[0] for p in app.PALETTE}
        for action in ("New case", "Add subject", "Run probes", "Start trigger hunt", "Export case",
                       "Verify audit trail", "Help"):
            assert action in names


def test_every_binding_has_an_id_and_a_description():
    from workbench.ui.screens.dialogs import HelpScreen, ProbePicker, PromptScreen
    from workbench.ui.widgets.case_tree import CaseTree
    from workbench.ui.widgets.hunt import HuntPane
    from workbench.ui.widgets.notes import NoteEditor

    for cls in (WorkbenchApp, HuntPane, CaseTree, NoteEditor, PromptScreen, ProbePicker, HelpScreen):
        for b in cls.BINDINGS:
            assert b.id and b.description and b.tooltip, (cls.__name__, b)
    actions = {p[2].split("(")[0] for p in WorkbenchApp.PALETTE}
    for b in WorkbenchApp.BINDINGS:
        assert b.action.split("(")[0] in actions | {"quit"}, b.action


async def test_tree_shows_status_icons_and_run_detail(syn):
    app = WorkbenchApp(syn["db"], subject_id=syn["clean"])
    async with app.run_test(size=(150, 45)) as pilot:
        await wait_for(pilot, lambda: app.sel.subject_id == syn["clean"])
        node = app.tree.nodes_by_key[("run", 6)] if ("run", 6) in app.tree.nodes_by_key else None
        labels = [str(n.label) for key, n in app.tree.nodes_by_key.items() if key[0] == "run"]
        assert any(lbl.startswith("✘ strip failed") for lbl in labels)
        assert any(lbl.startswith("✔ neural-cleanse backdoored") for lbl in labels)
        failed = next(k for k, n in app.tree.nodes_by_key.items() if str(n.label).startswith("✘"))
        app.select_key(failed)
        detail = app.query_one(ScoresPane).query_one("#scores-detail")
        await wait_for(pilot, lambda: "strip needs clean inputs" in str(detail.render()))
        assert app.sel.run_id == failed[1]
        del node
