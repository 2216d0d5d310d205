"""The static scan's findings in the Scores pane: one row per finding, Enter shows the opcodes (pickles) or the
offending graph node (other formats) - read from the files, never executed."""

from __future__ import annotations

from textual.widgets import DataTable, Static
from ui_helpers import wait_for

from casefiles import CaseStore
from probes.static_scan import scan_path
from workbench.ui.app import WorkbenchApp
from workbench.ui.screens.finding import FindingScreen

EVIL = b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x8c\x06getpid\x93)R."


def _case(tmp_path, subject_path):
    result = scan_path(subject_path).to_dict()
    db = tmp_path / "case.db"
    with CaseStore(db, actor="examiner@lab") as store:
        cid = store.new_case("Static findings", "")
        sid = store.add_subject(cid, path=str(subject_path), sha256="e" * 64, size=1, format="pickle",
                                kind="unknown", files=[], name=subject_path.name)
        rid = store.start_run(cid, sid, "static", {})
        store.finish_run(rid, status="done", result=result, duration_s=0.01)
    return db, sid, result


async def _open_first_finding(app, pilot) -> str:
    table = app.query_one("#scores-findings", DataTable)
    await wait_for(pilot, lambda: table.display and table.row_count > 0)
    table.focus()
    await pilot.pause()
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, FindingScreen))
    return str(app.screen.query_one("#finding-text", Static).render())


async def test_pickle_finding_row_and_opcode_listing(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(EVIL)
    db, sid, result = _case(tmp_path, p)
    assert result["verdict"] == "malicious"
    app = WorkbenchApp(db, subject_id=sid)
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        table = app.query_one("#scores-findings", DataTable)
        await wait_for(pilot, lambda: table.row_count > 0)
        assert [str(c.label) for c in table.columns.values()] == ["severity", "file", "member", "offset", "opcode",
                                                                   "target", "why"]
        row = [str(c) for c in table.get_row_at(0)]
        assert row[0] == "critical" and row[1] == "evil.pkl" and row[4] == "STACK_GLOBAL" and row[5] == "posix.getpid"
        text = await _open_first_finding(app, pilot)
        assert "opcodes (read, never executed)" in text
        assert "=>" in text and "STACK_GLOBAL" in text and "'posix'" in text and "REDUCE" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, FindingScreen))


async def test_graph_finding_shows_the_node(tmp_path):
    from corpora.format_corpus import _benign_graph_nodes, _node, _str_const

    p = tmp_path / "frozen.pb"
    p.write_bytes(_benign_graph_nodes() + _str_const("path", "/etc/shadow") + _node("read", "ReadFile", ("path",)))
    db, sid, result = _case(tmp_path, p)
    assert result["verdict"] == "malicious"
    app = WorkbenchApp(db, subject_id=sid)
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        text = await _open_first_finding(app, pilot)
        assert "ReadFile" in text and "/etc/shadow" in text and "constant inputs" in text


async def test_no_findings_no_table(tmp_path):
    p = tmp_path / "clean.pkl"
    p.write_bytes(b"\x80\x04K\x01.")
    db, sid, result = _case(tmp_path, p)
    assert result["verdict"] == "clean"
    app = WorkbenchApp(db, subject_id=sid)
    async with app.run_test(size=(150, 45)) as pilot:
        await pilot.pause()
        await pilot.pause()
        assert not app.query_one("#scores-findings", DataTable).display
