"""Issue 18 item 3: ``case verify`` covers the evidence rows the audit trail attests, not only the audit rows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from casefiles import CaseStore
from casefiles import audit as chain
from casefiles.export import render_markdown
from tests.cli.helpers import wb


def build(path: Path) -> tuple[int, int]:
    with CaseStore(path, actor="examiner@lab") as s:
        cid = s.new_case("Vendor model")
        sid = s.add_subject(cid, path="/evidence/model.pt", sha256="5" * 64, size=10, format="torch-zip",
                            kind="image-classifier", files=[])
        r = s.start_run(cid, sid, "static", {})
        s.finish_run(r, status="done", result={"probe": "static", "verdict": "malicious", "score": 1.0,
                                               "summary": "os.system in data.pkl"},
                     findings=[{"severity": "critical", "title": "os.system call", "detail": "data.pkl"}])
        s.add_note(cid, "Looks planted.")
    return cid, r


def sql(path: Path, statement: str, *args) -> None:
    conn = sqlite3.connect(path)
    conn.execute(statement, args)
    conn.commit()
    conn.close()


def test_a_verdict_edited_to_clean_fails_verify_naming_the_run_and_the_report_says_so(tmp_path):
    db = tmp_path / "case.db"
    cid, run = build(db)
    assert wb("case", "verify", cid, "--db", db).code == 0
    result = json.dumps({"probe": "static", "verdict": "clean", "score": 0.0, "summary": "nothing found"})
    sql(db, "update runs set verdict = 'clean', score = 0.0, summary = 'nothing found', result = ? where id = ?",
        result, run)
    r = wb("case", "verify", cid, "--db", db)
    assert r.code == 1
    assert f"run {run}" in r.out and "verdict='clean'" in r.out and "edited outside the tool" in r.out
    report = wb("case", "export", cid, "--db", db)
    assert report.code == 0
    assert "WARNING: `workbench case verify 1` fails" in report.out
    assert "Overall verdict: **clean** (UNVERIFIED" in report.out


def test_edits_to_notes_findings_subjects_and_deletions_are_named(tmp_path):
    cases = [
        ("update notes set body = 'Benign.'", "note 1 was edited"),
        ("update findings set severity = 'info'", "finding 1"),
        ("update subjects set sha256 = '" + "6" * 64 + "'", "subject 1 (model.pt) was edited"),
        ("delete from findings", "finding 1, attested by audit row seq"),
        ("insert into notes (case_id, body, created, updated) values (1, 'planted', 'x', 'x')", "no audit record"),
    ]
    for i, (statement, expected) in enumerate(cases):
        db = tmp_path / f"case{i}.db"
        cid, _ = build(db)
        sql(db, statement)
        with CaseStore(db, create=False) as s:
            report = s.verify(cid)
        assert not report.ok, statement
        assert any(expected in p for p in report.problems), (statement, report.problems)


def _as_older_workbench(path: Path) -> None:
    """Rewrite the audit trail as the v3 workbench wrote it (no row attestations), chain re-hashed."""
    conn = sqlite3.connect(path)
    conn.execute("drop trigger audit_no_update")
    prev = chain.GENESIS
    for rowid, seq, case_id, ts, actor, action, detail in conn.execute(
            "select id, seq, case_id, ts, actor, action, detail from audit order by id").fetchall():
        d = json.loads(detail)
        d.pop("rows", None)
        row = {"seq": seq, "case_id": case_id, "ts": ts, "actor": actor, "action": action, "detail": chain.canonical(d)}
        h = chain.chain_hash(prev, chain.row_content(row))
        conn.execute("update audit set detail = ?, prev_hash = ?, hash = ? where id = ?", (row["detail"], prev, h, rowid))
        prev = h
    conn.execute("update cases set audit_head = ?", (prev,))
    conn.commit()
    conn.close()


def test_an_older_case_file_still_verifies_and_says_what_is_not_covered(tmp_path):
    db = tmp_path / "old.db"
    cid, run = build(db)
    _as_older_workbench(db)
    r = wb("case", "verify", cid, "--db", db)
    assert r.code == 0, r.out
    assert "older workbench" in r.out and "not covered" in r.out
    with CaseStore(db, create=False) as s:  # a write by this workbench is attested and checked in full
        s.add_note(cid, "Second look.")
    sql(db, "update notes set body = 'edited' where id = 2")
    assert "note 2 was edited" in wb("case", "verify", cid, "--db", db).out
    sql(db, "update notes set body = 'Second look.' where id = 2")
    # What the old audit rows recorded (the verdict) is still checked.
    sql(db, "update runs set verdict = 'clean' where id = ?", run)
    r = wb("case", "verify", cid, "--db", db)
    assert r.code == 1 and f"run {run}" in r.out and "verdict='clean'" in r.out
    with CaseStore(db, create=False) as s:
        assert "older workbench" in render_markdown(s.case_bundle(cid))


def test_a_result_json_stripped_outside_the_tool_still_exports_with_the_warning(tmp_path):
    db = tmp_path / "case.db"
    cid, run = build(db)
    sql(db, "update runs set verdict = 'clean', result = '{\"verdict\": \"clean\"}' where id = ?", run)
    report = wb("case", "export", cid, "--db", db)
    assert report.code == 0, report.err
    assert "WARNING" in report.out and "Traceback" not in report.err
