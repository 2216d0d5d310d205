"""`workbench registry scan` end to end: a local Ray instance over loopback, kill -9 of the driver and resume,
bad input refused before the case file is touched."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from casefiles import CaseStore
from corpora.registry_gen import generate
from tests.cli.helpers import wb


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.xdist_group("ray")
def test_ray_engine_runs_a_200_subject_registry(tmp_path):
    reg = generate(tmp_path / "root", 200, seed=5, payload_every=10, hf_folders=4, hub_repos=3)
    assert reg.n_subjects >= 190
    db, jl, sf = tmp_path / "c.db", tmp_path / "o.jsonl", tmp_path / "o.sarif"
    r = wb("registry", "scan", reg.root, "--engine", "ray", "--workers", "2", "--db", db, "--json-lines", jl,
           "--sarif", sf, "--json", "-q", timeout=600)
    assert r.code == 0, r.err[-3000:]
    out = json.loads(r.out)
    assert out["engine"]["engine"] == "ray" and out["engine"]["workers"] == 2
    assert out["subjects"] == reg.n_subjects and out["failed"] == 0
    got = {x["path"]: x["verdict"] for x in _lines(jl) if x["status"] == "done"}
    assert got == {p: ("malicious" if lab == "malicious" else "clean") for p, lab in reg.subjects.items()}
    assert out["verdicts"] == {"clean": reg.n_subjects - len(reg.malicious), "malicious": len(reg.malicious)}
    assert [w["path"] for w in out["worst"]][:1] and all(w["verdict"] == "malicious" for w in out["worst"])
    sarif = json.loads(sf.read_text())
    assert sarif["version"] == "2.1.0" and len(sarif["runs"]) == 1 and sarif["runs"][0]["results"]
    assert wb("case", "verify", str(out["case_id"]), "--db", db).code == 0
    # the same registry again: everything is already in the case, Ray is not even started
    t0 = time.perf_counter()
    r2 = wb("registry", "scan", reg.root, "--engine", "ray", "--db", db, "--json", "-q")
    assert r2.code == 0, r2.err[-2000:]
    out2 = json.loads(r2.out)
    assert out2["resumed"] == reg.n_subjects and out2["scanned"] == 0 and out2["engine"]["started"] is False
    assert time.perf_counter() - t0 < 60


def _items(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("select count(*) from registry_items").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_kill_9_of_the_driver_then_resume_finishes_every_subject_once(tmp_path):
    reg = generate(tmp_path / "root", 900, seed=7, torch_zips=False, hf_folders=5, hub_repos=4)
    db = tmp_path / "c.db"
    cmd = [sys.executable, "-m", "workbench", "registry", "scan", str(reg.root), "--workers", "1", "--db", str(db),
           "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while _items(db) < reg.n_subjects // 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished before it could be killed: make the registry bigger"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers are orphaned mid-task
        proc.wait(30)
    finally:
        time.sleep(0.5)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # tidy the orphaned workers up
        except ProcessLookupError:
            pass
    partial = _items(db)
    assert 0 < partial < reg.n_subjects
    jl = tmp_path / "o.jsonl"
    r = wb("registry", "scan", reg.root, "--db", db, "--json-lines", jl, "--json", "-q", timeout=600)
    assert r.code == 0, r.err[-2000:]
    out = json.loads(r.out)
    assert out["resumed"] >= partial and out["subjects"] == reg.n_subjects
    with CaseStore(db) as store:
        cid = out["case_id"]
        subjects = store.list_subjects(cid)
        assert len(subjects) == reg.n_subjects == len({s["path"] for s in subjects})  # every subject exactly once
        runs = store.list_runs(case_id=cid)
        assert len(runs) == reg.n_subjects and len({r["subject_id"] for r in runs}) == reg.n_subjects
        assert {r["status"] for r in runs} == {"done"}
    lines = [x for x in _lines(jl) if x["status"] != "problem"]
    assert {x["path"] for x in lines} == set(reg.subjects)
    assert {x["path"] for x in lines if x["verdict"] == "malicious"} == reg.malicious
    v = wb("case", "verify", str(cid), "--db", db)
    assert v.code == 0, v.out


def test_bad_input_exits_2_and_writes_nothing(tmp_path):
    db = tmp_path / "c.db"
    root = tmp_path / "r"
    root.mkdir()
    for args, msg in ((["--engine", "spark"], "unknown engine"), (["--probes", "strip"], "needs --data"),
                      (["--param", "nope=1"], "nope"), (["--address", "127.0.0.1:1"], "--engine ray")):
        r = wb("registry", "scan", root, "--db", db, *args)
        assert r.code == 2 and msg in r.err and len(r.err.strip().splitlines()) == 1, (args, r.err)
    r = wb("registry", "scan", tmp_path / "missing", "--db", db)
    assert r.code == 2 and "no such file" in r.err
    assert not db.exists()
