"""Custody (provenance at add time, re-hash before every run), the examiner on audit rows, and the export contract."""

from __future__ import annotations

import json
import pickle

from casefiles import CaseStore
from tests.cli.helpers import wb
from workbench import jobs
from workbench.scan import ScanOptions, context_for, prepare, run_scan


def _case(tmp_path, *extra: str):
    db = tmp_path / "case.db"
    assert wb("case", "new", "Custody", "--db", db).code == 0
    model = tmp_path / "weights.pkl"
    model.write_bytes(pickle.dumps({"w": [1.0, 2.0, 3.0]}, protocol=4))
    r = wb("subject", "add", "1", model, "--db", db, *extra)
    assert r.code == 0, r.err
    return db, model


def test_subject_add_records_custody_and_the_report_shows_it(tmp_path):
    db, _ = _case(tmp_path, "--source", "ticket INC-7", "--acquired-by", "J. Doe", "--acquired-at", "2026-11-20T14:00Z",
                  "--origin", "Acme Vision GmbH", "--provenance", "USB stick, sealed bag 0042")
    with CaseStore(db) as st:
        added = [a for a in st.audit_rows(1) if a["action"] == "subject.added"][0]
    assert json.loads(added["detail"])["custody"]["claimed_origin"] == "Acme Vision GmbH"  # in the hash chain
    out = wb("case", "export", "1", "--db", db)
    assert out.code == 0
    for line in ("- Source: ticket INC-7", "- Acquired by: J. Doe", "- Acquired at: 2026-11-20T14:00Z",
                 "- Claimed origin / vendor: Acme Vision GmbH", "- Provenance: USB stick, sealed bag 0042"):
        assert line in out.out
    bad = wb("subject", "add", "1", tmp_path / "weights.pkl", "--db", db, "--acquired-at", "last tuesday")
    assert bad.code == 2 and bad.err.count("\n") == 1 and "--acquired-at" in bad.err


def test_a_file_changed_between_two_runs_is_refused_and_reported(tmp_path):
    db, model = _case(tmp_path)
    with CaseStore(db) as st:
        sid = st.list_subjects(1)[0]["id"]
        prepared = prepare(model, ScanOptions(probes=["static"]))
        first = jobs.run_probe(str(model), context_for("static", prepared, {}), store=st, case_id=1, subject_id=sid)
        assert first.status == "done"
        model.write_bytes(pickle.dumps({"w": [1.0, 2.0, 666.0]}, protocol=4))  # swapped under the examiner
        second = jobs.run_probe(str(model), context_for("static", prepared, {}), store=st, case_id=1, subject_id=sid)
        assert second.status == "failed" and "changed since it was added" in second.error
        run = st.get_run(second.run_id)
        assert run["status"] == "failed" and run["result"] is None  # the probe never ran on the changed file
        assert [a["action"] for a in st.audit_rows(1)].count("custody.changed") == 1
    report = wb("case", "export", "1", "--db", db).out
    assert "**Custody warning**" in report and "weights.pkl" in report


def test_a_rescan_of_a_changed_path_warns_on_the_earlier_subject(tmp_path):
    db, model = _case(tmp_path)
    model.write_bytes(pickle.dumps({"w": [9.0]}, protocol=4))
    with CaseStore(db) as st:
        report = run_scan(prepare(model, ScanOptions(probes=["static"])), store=st, case_id=1)
        assert report.subject_id != 1  # the new content is a new subject
        rows = [json.loads(a["detail"]) for a in st.audit_rows(1) if a["action"] == "custody.changed"]
    assert rows and rows[0]["subject_id"] == 1 and rows[0]["new_subject_id"] == report.subject_id
    text = wb("case", "export", "1", "--db", db).out
    assert text.count("**Custody warning**") == 1


def test_examiner_name_signs_audit_rows(tmp_path):
    db = tmp_path / "case.db"
    assert wb("--examiner", "Dana Scully", "case", "new", "X", "--db", db).code == 0
    assert wb("note", "add", "1", "checked", "--db", db, env={"WORKBENCH_EXAMINER": "Fox Mulder"}).code == 0
    with CaseStore(db) as st:
        actors = [a["actor"] for a in st.audit_rows(1)]
    assert actors[0].startswith("Dana Scully@") and actors[1].startswith("Fox Mulder@")


def test_export_contract_and_bad_input(tmp_path):
    db, _ = _case(tmp_path)
    for fmt, dest in (("html", "r.html"), ("md", "r-md"), ("jsonl", "r.jsonl"), ("cyclonedx", "r.cdx.json")):
        r = wb("case", "export", "1", "--format", fmt, "-o", tmp_path / dest, "--db", db, "--json")
        assert r.code == 0, r.err
        assert json.loads(r.out)["format"] == fmt and (tmp_path / dest).exists()
    assert (tmp_path / "r-md" / "report.md").exists()
    with CaseStore(db) as st:
        n_audit = len(st.audit_rows(1))
    for args, words in ((["--format", "pdf", "-o", tmp_path / "x.pdf"], "unknown export format"),
                        (["--format", "html", "-o", tmp_path / "no" / "such" / "x.html"], "does not exist"),
                        (["--format", "md", "-o", tmp_path / "r.html"], "a file is in the way")):
        r = wb("case", "export", "1", *args, "--db", db)
        assert r.code == 2 and r.err.startswith("error: ") and r.err.count("\n") == 1 and words in r.err, r.err
        assert r.out == ""
    assert not (tmp_path / "x.pdf").exists() and not (tmp_path / "no").exists()
    with CaseStore(db) as st:
        assert len(st.audit_rows(1)) == n_audit  # nothing recorded either
