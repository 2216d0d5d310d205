"""Issue 18 item 6: a case file that cannot grow (``database or disk is full``) never leaves a run
``running`` with its result lost: the run is recorded failed with why, and the result is still reported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from casefiles import CaseStore
from casefiles.errors import CaseFileFull
from workbench.scan import ScanOptions, prepare, run_scan


def many_globals_pickle(path, n=300):
    """A harmless review-tier pickle whose static-scan result is a few pages of findings."""
    body = b"".join(b"cvendorlib.m%d\nC%d\n" % (i, i) for i in range(n))
    path.write_bytes(b"\x80\x02(" + body + b"l.")
    return path


def test_a_full_case_file_records_the_run_failed_and_keeps_the_result(tmp_path):
    subject = many_globals_pickle(tmp_path / "vendor.pkl")
    store = CaseStore(tmp_path / "case.db")
    cid = store.new_case("full disk")
    real_finish = store.finish_run
    calls = []

    def finish_on_a_full_file(run_id, **kw):
        if not calls:  # from now on the file cannot grow by a single page (SQLite's own SQLITE_FULL)
            pages = store.db.conn.execute("PRAGMA page_count").fetchone()[0]
            store.db.conn.execute(f"PRAGMA max_page_count = {pages}")
        calls.append(kw.get("status"))
        return real_finish(run_id, **kw)

    store.finish_run = finish_on_a_full_file
    report = run_scan(prepare(subject, ScanOptions(probes=["static"])), store=store, case_id=cid)
    assert report.results and report.results[0]["verdict"] in ("suspicious", "malicious", "inconclusive")
    not_stored = [e for e in report.errors if e["status"] == "not-stored"]
    assert not_stored and "cannot grow" in not_stored[0]["error"], report.errors
    store.db.conn.execute("PRAGMA max_page_count = 1073741823")
    runs = store.list_runs(case_id=cid)
    assert [r["status"] for r in runs] == ["failed"], runs
    assert "could not be stored" in runs[0]["error"] and report.results[0]["verdict"] in runs[0]["error"]
    assert store.verify(cid).ok
    store.close()


def test_a_write_to_a_full_file_is_a_one_line_case_file_error(tmp_path):
    with CaseStore(tmp_path / "case.db") as store:
        cid = store.new_case("full")
        pages = store.db.conn.execute("PRAGMA page_count").fetchone()[0]
        store.db.conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(CaseFileFull, match="cannot grow"):
            store.add_note(cid, "x" * 20000)


def test_cli_scan_on_a_full_tmpfs_records_the_run_failed_and_shows_the_verdict(tmp_path):
    """A real full file system: a 1 MB tmpfs, filled after the case is made until 120 KB are left, enough
    to start the run but not to store its 2000 findings."""
    if not shutil.which("unshare"):
        pytest.skip("util-linux unshare not available")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subject = many_globals_pickle(tmp_path / "vendor.pkl", 2000)
    py, db = sys.executable, f"{mnt}/c.db"
    script = (f"mount -t tmpfs -o size=1m tmpfs {mnt} || exit 99; {py} -m workbench case new full --db {db} >/dev/null && "
              f"{py} -m workbench subject add 1 {subject} --db {db} >/dev/null && "
              f"avail=$(df -k {mnt} | tail -1 | awk '{{print $4}}') && "
              f"dd if=/dev/zero of={mnt}/filler bs=1k count=$((avail - 120)) 2>/dev/null; "
              f"{py} -m workbench scan {subject} --probes static --case 1 --db {db}; echo rc=$?; "
              f"rm {mnt}/filler; {py} -m workbench case show 1 --db {db}")
    r = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                       env={**os.environ})
    if r.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    assert "Traceback" not in r.stderr, r.stderr[-800:]
    assert "rc=0" in r.stdout and "Verdict: suspicious" in r.stdout, (r.stdout[-1500:], r.stderr[-800:])
    assert "not-stored" in r.stdout and "cannot grow" in r.stdout
    shown = r.stdout.split("rc=0", 1)[1]
    assert " running " not in shown and " failed " in shown and "could not be stored" in shown, shown
