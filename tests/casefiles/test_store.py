"""The case store: lifecycle, crash recovery, migrations, corruption and tampering."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest
from sqlite_utils import Database

from casefiles import CaseFileError, CaseStore, NotFound, schema


@pytest.fixture
def store(tmp_path):
    with CaseStore(tmp_path / "case.db") as s:
        yield s


def _subject(store, case_id, name="model.pt"):
    return store.add_subject(case_id, path=f"/models/{name}", sha256="ab" * 32, size=123, format="torch-zip",
                             kind="image-classifier", files=[{"path": name, "sha256": "ab" * 32, "size": 123}])


def test_case_file_is_wal_and_current_schema(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert schema.current_version(store.db) == schema.SCHEMA_VERSION
    assert set(store.db.table_names()) >= {"cases", "subjects", "runs", "findings", "notes", "artifacts", "audit"}


def test_run_lifecycle_done_failed_cancelled(store):
    cid = store.new_case("Vendor model 2026-11")
    sid = _subject(store, cid)
    r1 = store.start_run(cid, sid, "static", {"seed": 0})
    assert store.get_run(r1)["status"] == "running"  # written before the probe starts
    store.finish_run(r1, status="done", result={"probe": "static", "verdict": "malicious", "score": 1.0,
                                                 "summary": "os.system call", "duration_s": 0.1},
                     findings=[{"severity": "critical", "title": "REDUCE posix.system", "atlas": "AML.T0010"}],
                     artifacts={"mask.npy": b"\x93NUMPY..."})
    r2 = store.start_run(cid, sid, "neural-cleanse", {})
    store.finish_run(r2, status="failed", error="data has image shape (3, 8, 8) but the model takes (1, 16, 16)")
    r3 = store.start_run(cid, sid, "strip", {})
    store.finish_run(r3, status="cancelled", error="cancelled by the examiner")
    runs = {r["id"]: r for r in store.list_runs(case_id=cid)}
    assert runs[r1]["status"] == "done" and runs[r1]["verdict"] == "malicious"
    assert runs[r1]["result"]["summary"] == "os.system call"
    assert runs[r2]["status"] == "failed" and "image shape" in runs[r2]["error"]
    assert runs[r3]["status"] == "cancelled"
    art = store.list_artifacts(run_id=r1, with_data=True)[0]
    assert art["data"] == b"\x93NUMPY..." and len(art["sha256"]) == 64
    assert store.list_findings(cid)[0]["atlas"] == "AML.T0010"
    actions = [a["action"] for a in store.audit_rows(cid)]
    assert actions == ["case.created", "subject.added", "run.started", "run.done", "run.started", "run.failed",
                       "run.started", "run.cancelled"]
    assert store.verify(cid).ok


def test_crashed_run_is_marked_interrupted_on_next_open(tmp_path):
    db = tmp_path / "case.db"
    with CaseStore(db) as s:
        cid = s.new_case("crash")
    code = textwrap.dedent(f"""
        import os
        from casefiles import CaseStore
        s = CaseStore({str(db)!r})
        s.start_run({cid}, None, "neural-cleanse", {{}})
        os._exit(9)  # the process dies mid-probe
    """)
    subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    with CaseStore(db) as s:
        run = s.list_runs(case_id=cid)[0]
        assert run["status"] == "interrupted"
        assert "ended before it finished" in run["error"]
        assert s.audit_rows(cid)[-1]["action"] == "run.interrupted"
        assert s.verify(cid).ok


def test_live_run_of_this_process_is_not_marked_interrupted(tmp_path):
    db = tmp_path / "case.db"
    with CaseStore(db) as s:
        cid = s.new_case("live")
        rid = s.start_run(cid, None, "kl", {})
        with CaseStore(db) as other:  # e.g. the TUI opening a second connection while a worker runs
            assert other.get_run(rid)["status"] == "running"


def test_old_case_file_is_upgraded_with_a_backup(tmp_path):
    db_path = tmp_path / "old.db"
    conn = sqlite3.connect(db_path, isolation_level=None)
    old = Database(conn)
    schema.apply(old, 1)  # a case file written by the v1 workbench
    old["cases"].insert({"id": 1, "title": "from v1", "created": "2026-01-01T00:00:00Z",
                         "audit_head": "0" * 64, "audit_count": 0})
    old["runs"].insert({"id": 1, "case_id": 1, "probe": "static", "status": "done",
                        "started": "2026-01-01T00:00:00Z"})
    conn.close()
    with CaseStore(db_path) as s:
        assert schema.current_version(s.db) == schema.SCHEMA_VERSION
        assert s.get_case(1)["title"] == "from v1"
        assert "pid" in s.db["runs"].columns_dict
        assert s.list_runs(case_id=1)[0]["status"] == "done"
    assert (tmp_path / "old.db.v1.bak").exists()


def test_newer_schema_is_refused_not_misread(tmp_path):
    db_path = tmp_path / "future.db"
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(CaseFileError, match="newer than this workbench"):
        CaseStore(db_path)


@pytest.mark.parametrize("content", [b"this is not a database at all" * 10, b"SQLite format 3\x00" + b"\xff" * 200])
def test_corrupt_or_foreign_file_gives_one_line_error(tmp_path, content):
    bad = tmp_path / "bad.db"
    bad.write_bytes(content)
    with pytest.raises(CaseFileError) as info:
        CaseStore(bad)
    assert "\n" not in str(info.value)
    assert bad.read_bytes() == content  # nothing written into a file we could not read


def test_missing_case_file_without_create(tmp_path):
    with pytest.raises(CaseFileError, match="not found"):
        CaseStore(tmp_path / "nope.db", create=False)


def test_unknown_ids_raise_not_found(store):
    with pytest.raises(NotFound, match="no case with id 42"):
        store.get_case(42)
    with pytest.raises(NotFound):
        store.add_note(42, "x")


def test_failed_write_leaves_nothing_half_written(store):
    cid = store.new_case("atomic")
    before = len(store.audit_rows(cid))
    with pytest.raises(RuntimeError):
        with store.write():
            store.db["notes"].insert({"case_id": cid, "body": "half", "created": "t", "updated": "t"})
            raise RuntimeError("crash between two statements")
    assert store.list_notes(cid) == [] and len(store.audit_rows(cid)) == before


def test_note_autosave_upserts_one_working_note(store):
    cid = store.new_case("notes")
    n1 = store.save_note(cid, "draft")
    n2 = store.save_note(cid, "draft, longer")
    assert n1 == n2 and store.list_notes(cid)[0]["body"] == "draft, longer"
    assert store.save_note(cid, "draft, longer") == n1  # unchanged text writes nothing
    assert [a["action"] for a in store.audit_rows(cid)].count("note.edited") == 1


# -- tampering ----------------------------------------------------------------------------------
def _tamperable(store):
    store.db.execute("DROP TRIGGER audit_no_update")
    store.db.execute("DROP TRIGGER audit_no_delete")


def _case_with_trail(store):
    cid = store.new_case("trail")
    sid = _subject(store, cid)
    store.add_note(cid, "first")
    rid = store.start_run(cid, sid, "static", {})
    store.finish_run(rid, status="done", result={"verdict": "clean", "score": 0.0, "summary": "ok"})
    return cid


def test_audit_rows_cannot_be_changed_through_sql(store):
    cid = _case_with_trail(store)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("UPDATE audit SET actor = 'x' WHERE case_id = ?", [cid])
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("DELETE FROM audit WHERE case_id = ?", [cid])


def test_verify_names_an_edited_row(store):
    cid = _case_with_trail(store)
    _tamperable(store)
    store.db.execute("UPDATE audit SET detail = '{\"title\":\"innocent\"}' WHERE case_id = ? AND seq = 3", [cid])
    report = store.verify(cid)
    assert not report.ok
    assert any("seq 3" in p and "edited" in p for p in report.problems)


def test_verify_names_a_deleted_row(store):
    cid = _case_with_trail(store)
    _tamperable(store)
    store.db.execute("DELETE FROM audit WHERE case_id = ? AND seq = 2", [cid])
    problems = store.verify(cid).problems
    assert any("2..2 are missing" in p for p in problems)
    assert any("seq 3 does not follow" in p for p in problems)


def test_verify_detects_truncation_of_the_newest_rows(store):
    cid = _case_with_trail(store)
    _tamperable(store)
    store.db.execute("DELETE FROM audit WHERE case_id = ? AND seq = (SELECT max(seq) FROM audit WHERE case_id = ?)",
                     [cid, cid])
    problems = store.verify(cid).problems
    assert any("truncated" in p for p in problems) and any("records 5 audit rows but 4" in p for p in problems)


def test_verify_detects_reordered_rows(store):
    cid = _case_with_trail(store)
    _tamperable(store)
    rows = store.audit_rows(cid)
    a, b = rows[1], rows[2]
    cols = ["seq", "ts", "actor", "action", "detail", "prev_hash", "hash"]
    store.db.execute("UPDATE audit SET seq = -1 WHERE id = ?", [a["id"]])  # dodge the unique index mid-swap
    for src, dst in ((a, b["id"]), (b, a["id"])):
        store.db.execute(f"UPDATE audit SET {', '.join(c + ' = ?' for c in cols)} WHERE id = ?",
                         [src[c] for c in cols] + [dst])
    problems = store.verify(cid).problems
    assert any("out of order" in p for p in problems)


# -- two writers ----------------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys
    from casefiles import CaseStore, CaseFileBusy
    db, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ok = busy = 0
    s = CaseStore(db, busy_timeout_s=10)
    for i in range(n):
        try:
            cid = s.new_case(f"{tag}-{i}")
            s.add_note(cid, f"note {tag} {i}")
            rid = s.start_run(cid, None, "static", {"i": i})
            s.finish_run(rid, status="done", result={"verdict": "clean", "score": 0.0, "summary": tag})
            ok += 1
        except CaseFileBusy as e:
            assert "busy" in str(e) and "retry" in str(e)
            busy += 1
    print(ok, busy)
""")


def test_two_processes_writing_one_case_file(tmp_path):
    db = tmp_path / "shared.db"
    CaseStore(db).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), tag, "40"], stdout=subprocess.PIPE, text=True)
             for tag in ("tui", "cli")]
    outs = [p.communicate(timeout=180)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    ok = sum(int(o[0]) for o in outs)
    assert ok >= 1  # each write either succeeded or was told "busy, retry"; none half-done
    with CaseStore(db) as s:
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        cases = s.list_cases()
        assert len(cases) == ok or len(cases) == ok + sum(int(o[1]) for o in outs)
        for c in cases:
            report = s.verify(c["id"])
            assert report.ok, report.problems
        complete = [c for c in cases if c["runs"] == 1]
        assert len(complete) == ok


def test_baselines_keep_each_model_once(store):
    fp = {"vector": [0.1, 0.2], "feature_names": ["a", "b"]}
    assert store.add_baseline_member("digits-cnn", path="/m/a.pt", sha256="a" * 64, fingerprint=fp, kind="image-classifier")
    assert store.add_baseline_member("digits-cnn", path="/m/b.pt", sha256="b" * 64, fingerprint=fp)
    assert not store.add_baseline_member("digits-cnn", path="/m/a-copy.pt", sha256="a" * 64, fingerprint=fp)
    assert [(b["name"], b["members"]) for b in store.list_baselines()] == [("digits-cnn", 2)]
    members = store.baseline_fingerprints("digits-cnn")
    assert [m["vector"] for m in members] == [[0.1, 0.2], [0.1, 0.2]]
    with pytest.raises(NotFound, match="no baseline named"):
        store.baseline_fingerprints("nope")
