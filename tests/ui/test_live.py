"""Real probes behind the UI: a digits BadNets CNN (Neural Cleanse, cancel) and a tiny LM (live hunt).

Heavy fixtures are built once per session (per xdist worker; the group keeps them on one).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, SelectionList
from ui_fixtures import DIGITS_TARGET
from ui_helpers import plain, settle, wait_for

from casefiles import CaseStore
from workbench.ui.app import WorkbenchApp
from workbench.ui.widgets.hunt import HuntPane
from workbench.ui.widgets.norms import NormsPane

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("digits")


async def test_real_neural_cleanse_result_in_the_norms_pane(digits_case):
    app = WorkbenchApp(digits_case["db"], subject_id=digits_case["subject_id"])
    async with app.run_test(size=(150, 50)) as pilot:
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        head = str(app.query_one(NormsPane).query_one("#norms-head").render())
        assert f"suspected target class {DIGITS_TARGET}" in head
        bars = str(app.query_one("#norms-bars").render())
        assert f"▶ class   {DIGITS_TARGET}" in bars and "median" in bars
        maps = str(app.query_one("#norms-maps").render())
        assert "mask × pattern" in maps and any(ch in maps for ch in "▀▄█")
        await pilot.press("4")
        await pilot.pause()
        audit = plain(app.query_one("#audit-body"))
        assert "spectral (run" in audit and "transplant vs baseline" in audit
        row = next(ln for ln in audit.splitlines() if ln.split()[:1] == [str(DIGITS_TARGET)])
        assert " yes " in row  # the poisoned class is flagged


async def test_run_probes_then_cancel_with_escape(digits_case):
    """Neural Cleanse in a thread worker: progress reaches the strip, Esc cancels, the run says so."""
    app = WorkbenchApp(digits_case["db"], subject_id=digits_case["subject_id"],
                       probe_params={"steps": 2000, "early_stop_patience": 2000})
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        picker = app.screen.query_one(SelectionList)
        assert app.screen.query_one("#picker-data").value == str(digits_case["data"])  # prefilled from the runs
        picker.deselect_all()
        picker.select("neural-cleanse")
        await pilot.press("ctrl+r")

        def nc_running() -> bool:
            with CaseStore(digits_case["db"]) as st:
                runs = st.list_runs(subject_id=digits_case["subject_id"])
            return runs[-1]["probe"] == "neural-cleanse" and runs[-1]["status"] == "running"

        await wait_for(pilot, nc_running, rounds=1200, step=0.1)
        await wait_for(pilot, lambda: "neural-cleanse" in str(app.query_one("#job-label").render()), rounds=600)
        await pilot.press("q")  # a job is running: quitting asks to be repeated
        await pilot.pause()
        assert app.is_running and any("quit again" in n.message for n in app._notifications)
        await pilot.press("escape")
        await settle(app, pilot)
        assert app.finished_jobs[-1].status == "cancelled"
        with CaseStore(digits_case["db"]) as st:
            last = st.list_runs(subject_id=digits_case["subject_id"])[-1]
        assert (last["probe"], last["status"]) == ("neural-cleanse", "cancelled")
        assert any(str(n.label).startswith("⊘ neural-cleanse") for n in app.tree.nodes_by_key.values())


@pytest.mark.xdist_group("tinylm")  # its own worker: built while the digits model trains on the other
async def test_live_trigger_hunt_pin_custom_and_confirm(tiny_lm, tmp_path):
    from casefiles import CaseStore as Store
    from workbench.subject_files import describe

    db = tmp_path / "lm.db"
    info = describe(tiny_lm)
    with Store(db) as st:
        cid = st.new_case("LM")
        sid = st.add_subject(cid, path=info.path, sha256=info.sha256, size=info.size, format=info.format,
                             kind="causal-lm", files=info.files, name=info.name)
    app = WorkbenchApp(db, subject_id=sid, kl_params={"batch_size": 64, "extend": False, "confirm_top": 1,
                                                      "partial_interval": 0.0, "max_prompts": 8})
    partials: list[int] = []
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        hunt = app.query_one(HuntPane)
        original = hunt.update_ranking
        hunt.update_ranking = lambda r: (partials.append(len(r)), original(r))  # type: ignore[method-assign]
        await pilot.press("t")
        await pilot.pause()
        await pilot.press("enter")  # default hunt: the whole (small) vocabulary
        await settle(app, pilot, rounds=2000)
        assert app.finished_jobs[-1].status == "done", app.finished_jobs[-1]
        assert len(partials) >= 2  # the table filled in while batches finished
        table = app.query_one("#hunt-table", DataTable)
        assert table.row_count >= 5
        assert str(table.get_row_at(0)[2]) == "zephyr"
        assert hunt.rate and hunt.rate > 0
        await pilot.press("3")
        table.move_cursor(row=2)
        third = hunt.highlighted()["candidate"]
        await pilot.press("p")  # pin the third: it moves to the top
        assert hunt.rows()[0]["candidate"] == third and str(table.get_row_at(0)[0]) == "★"
        await pilot.press("c")
        await pilot.press(*"silver lantern", "enter")
        await settle(app, pilot)
        assert "silver lantern" in hunt.custom
        table.move_cursor(row=[e["candidate"] for e in hunt.rows()].index("zephyr"))
        await pilot.press("g")  # confirm by generation
        await settle(app, pilot)
        compare = app.query_one("#hunt-compare", DataTable)
        assert compare.row_count == 8
        assert "CONFIRMED" in str(app.query_one("#hunt-compare-head").render())
    with Store(db) as st:
        runs = st.list_runs(subject_id=sid)
        actions = [a["action"] for a in st.audit_rows(cid)]
    assert runs[-1]["probe"] == "kl" and runs[-1]["status"] == "done" and runs[-1]["verdict"] == "backdoored"
    assert "hunt.pinned" in actions and "hunt.confirmed" in actions

    # one language model is kept loaded at a time; the follow-ups report the engine's own errors
    from workbench.ui import tasks

    assert tasks.SESSIONS.key == (sid, info.path)
    first = tasks.SESSIONS.session
    seen: list = []
    tasks.custom(tasks.Job("custom", cid, sid + 100, path=info.path,
                           params={"candidate": "zephyr", "kl_params": {"max_prompts": 4}}), db, seen.append)
    assert seen[-1].status == "done" and tasks.SESSIONS.session is not first and tasks.SESSIONS.key[0] == sid + 100
    tasks.custom(tasks.Job("custom", cid, sid + 100, path=info.path,
                           params={"candidate": "zephyr", "kl_params": {"builtin_prompts": False}}), db, seen.append)
    assert seen[-1].status == "failed" and "no prompts" in seen[-1].text
