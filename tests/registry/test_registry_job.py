"""Registry jobs in process: discovery by content, verdicts against the generator's manifest, dedup, resume,
outputs that agree, and a worker killed mid-task (retried once, then recorded failed)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import threading
import time
from pathlib import Path

import pytest

from casefiles import CaseStore
from corpora.registry_gen import generate
from workbench.registry.discover import Problem, Subject, discover
from workbench.registry.engines import LocalEngine
from workbench.registry.job import JobOptions, build_plan, run_job

pytestmark = pytest.mark.xdist_group("registry")


@pytest.fixture(scope="module")
def small_registry(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("reg") / "root", 120, seed=3, payload_every=9, dup_every=11,
                    hf_folders=4, hub_repos=5)


def _job(root, db, **kw):
    opts = JobOptions(workers=2, json_lines=db.with_suffix(".jsonl"), sarif=db.with_suffix(".sarif"),
                      batch_size=25, **kw)
    with CaseStore(db) as store:
        cid = store.list_cases()[0]["id"] if store.list_cases() else store.new_case("reg")
        summary = run_job(root, opts, store=store, case_id=cid)
    return cid, summary


def test_discovery_finds_every_layout_by_content(small_registry):
    subjects, problems = [], []
    for item in discover(small_registry.root):
        (subjects if isinstance(item, Subject) else problems).append(item)
    assert {s.path for s in subjects} == set(small_registry.subjects)
    layouts = {s.layout for s in subjects}
    assert layouts == {"file", "folder", "hf-cache"}
    assert not any(s.path.endswith(("README.md", "LICENSE")) for s in subjects)  # text is not a model
    hub = [s for s in subjects if s.layout == "hf-cache"]
    assert len(hub) == small_registry.hub_revisions == 10
    assert all(f.link and f.link.startswith("../../blobs/") for s in hub for f in s.files)
    reasons = sorted(p.reason for p in problems)
    assert len(problems) == small_registry.problems
    assert any("looping" in r for r in reasons) and any("not followed" in r for r in reasons)
    assert all(isinstance(p, Problem) for p in problems)


def test_job_verdicts_dedup_outputs_and_resume(small_registry, tmp_path):
    db = tmp_path / "case.db"
    cid, s = _job(small_registry.root, db)
    reg = small_registry
    assert s.subjects == reg.n_subjects and s.failed == 0 and s.problems == reg.problems
    # identical bytes under two names: scanned once, reported under both
    assert s.duplicates >= reg.duplicates and s.scanned == reg.n_subjects - s.duplicates
    lines = [json.loads(x) for x in db.with_suffix(".jsonl").read_text().splitlines()]
    subj_lines = [x for x in lines if x["status"] != "problem"]
    assert len(subj_lines) == reg.n_subjects and len({x["path"] for x in subj_lines}) == reg.n_subjects
    by_path = {x["path"]: x for x in subj_lines}
    for path, label in reg.subjects.items():
        want = "malicious" if label == "malicious" else "clean"
        assert by_path[path]["verdict"] == want, (path, by_path[path])
    dups = [x for x in subj_lines if x["how"] == "duplicate"]
    assert dups and all(x["top_finding"]["file"] == x["path"] and Path(x["path"]).name in x["summary"]
                        for x in dups if x["verdict"] == "malicious")
    assert any(x["verdict"] == "malicious" for x in dups)  # a booby-trapped copy is named under its own path
    # hub cache: a booby-trapped revision is caught through its blob and named by its snapshot path
    bad_hub = [x for x in subj_lines if x["layout"] == "hf-cache" and x["verdict"] == "malicious"]
    assert bad_hub and all("/snapshots/" in x["top_finding"]["file"] for x in bad_hub)
    sarif = json.loads(db.with_suffix(".sarif").read_text())
    arts = sarif["runs"][0]["artifacts"]

    def top_uri(i: int) -> str:  # archive members are nested artifacts: follow parentIndex to the file
        while "parentIndex" in arts[i]:
            i = arts[i]["parentIndex"]
        return arts[i]["location"]["uri"]

    uris = {top_uri(r["locations"][0]["physicalLocation"]["artifactLocation"]["index"])
            for r in sarif["runs"][0]["results"]}
    flagged = {x["path"] for x in subj_lines if x["verdict"] != "clean"}
    assert flagged == reg.malicious
    assert all(any(u.startswith(Path(p).as_uri()) for u in uris) for p in flagged)  # SARIF names every flagged one
    with CaseStore(db) as store:
        subjects = store.list_subjects(cid)
        assert len(subjects) == reg.n_subjects == len({x["path"] for x in subjects})
        runs = store.list_runs(case_id=cid)
        assert len(runs) == reg.n_subjects and {r["status"] for r in runs} == {"done"}
        case_bad = {x["path"] for x in subjects
                    if any(r["verdict"] == "malicious" for r in runs if r["subject_id"] == x["id"])}
        assert case_bad == reg.malicious  # case file, JSON lines and SARIF agree
        assert store.verify(cid).ok
    # a re-run scans nothing and writes nothing: every subject is already in the case under the same plan
    cid2, s2 = _job(small_registry.root, db)
    assert cid2 == cid and s2.resumed == reg.n_subjects and s2.scanned == 0 and s2.engine.get("started") is False
    lines2 = [json.loads(x) for x in db.with_suffix(".jsonl").read_text().splitlines()]
    assert {x["path"]: x["verdict"] for x in lines2 if x["status"] != "problem"} == \
        {p: x["verdict"] for p, x in by_path.items()}
    with CaseStore(db) as store:
        assert len(store.list_runs(case_id=cid)) == reg.n_subjects


def test_other_parameters_are_another_plan(small_registry, tmp_path):
    """A stored result is reused only for the same probe version and parameters."""
    a, key_a = build_plan(JobOptions())
    b, key_b = build_plan(JobOptions(params={"crc_limit_mb": 1}))
    assert key_a != key_b and b["static"]["crc_limit_mb"] == 1
    assert build_plan(JobOptions())[1] == key_a


def test_changed_and_unreadable_files_are_reported_not_fatal(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "ok.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    (root / "gone.pkl").write_bytes(pickle.dumps({"b": 2}, protocol=4))
    items = list(discover(root))
    (root / "gone.pkl").unlink()  # vanished between discovery and hashing
    from workbench.registry.discover import Hasher, hash_subject

    with pytest.raises(OSError):
        hash_subject(next(i for i in items if i.path.endswith("gone.pkl")), Hasher())
    db = tmp_path / "c.db"
    (root / "gone.pkl").write_bytes(b"\x80\x04K\x01.")
    with CaseStore(db) as store:
        cid = store.new_case("x")
        s = run_job(root, JobOptions(workers=1), store=store, case_id=cid)
    assert s.subjects == 2 and s.failed == 0


def _maps_mention(pid: int, needle: str) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_worker_killed_mid_task_is_retried_once_then_failed(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    slow = root / "a-slow.pkl"  # first in discovery order; its scan takes seconds (many opcodes)
    slow.write_bytes(pickle.dumps([(i, str(i)) for i in range(800_000)], protocol=2))
    for i in range(6):
        (root / f"b-{i}.pkl").write_bytes(pickle.dumps({"i": i}, protocol=4))
    engine = LocalEngine(1, memory_mb=None)
    kills: list[int] = []
    stop = threading.Event()

    def killer() -> None:  # SIGKILL whichever worker has the slow file mapped, twice
        while not stop.is_set() and len(kills) < 2:
            for pid in engine.worker_pids():
                if pid not in kills and _maps_mention(pid, "a-slow.pkl"):
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
            time.sleep(0.02)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    db = tmp_path / "c.db"
    try:
        with CaseStore(db) as store:
            cid = store.new_case("x")
            s = run_job(root, JobOptions(workers=1, json_lines=tmp_path / "o.jsonl"), store=store, case_id=cid,
                        engine=engine)
    finally:
        stop.set()
        t.join(5)
    lines = {json.loads(x)["path"]: json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()}
    bad = lines[str(slow)]
    assert len(kills) == 2, (kills, bad)
    assert bad["status"] == "failed" and "died" in bad["error"] and "retried once" in bad["error"]
    assert s.failed == 1 and s.subjects == 7
    assert all(v["status"] == "done" and v["verdict"] == "clean" for p, v in lines.items() if p != str(slow))
    with CaseStore(db) as store:
        runs = store.list_runs(case_id=cid)
        assert sorted(r["status"] for r in runs) == ["done"] * 6 + ["failed"]
        assert store.verify(cid).ok


def test_hub_snapshot_folder_rules_apply_through_the_symlinks(tmp_path):
    """Custom code in a hub-cache revision is found (its entries are symlinks into blobs/) and named by snapshot path."""
    import hashlib

    repo = tmp_path / "hub" / "models--acme--net"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    files = {"config.json": json.dumps({"model_type": "gpt2", "auto_map": {"AutoModel": "modeling_x.Net"}}).encode(),
             "modeling_x.py": b"import os\nclass Net: pass\n",
             "model.bin": pickle.dumps({"w": [1.0]}, protocol=4)}
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        os.symlink(f"../../blobs/{digest}", snap / name)
    db = tmp_path / "c.db"
    with CaseStore(db) as store:
        cid = store.new_case("x")
        s = run_job(tmp_path / "hub", JobOptions(workers=1, json_lines=tmp_path / "o.jsonl"), store=store, case_id=cid)
        static = store.list_runs(case_id=cid)[0]["result"]
    assert s.subjects == 1
    rules = {(f["rule"], Path(f["file"]).name) for f in static["findings"]}
    assert ("remote-code", "modeling_x.py") in rules and ("remote-code", "config.json") in rules
    assert all(f["file"].startswith(str(snap)) for f in static["findings"])
    assert static["verdict"] == "suspicious" and not any(f["rule"] == "symlink-outside" for f in static["findings"])


def test_plan_layers_dynamic_and_model_probes_only_when_asked():
    plan, _ = build_plan(JobOptions())
    assert plan["dynamic"] is None and plan["model_probes"] == []
    plan, _ = build_plan(JobOptions(probes=["dynamic"], params={"dynamic.timeout_s": 5}))
    assert plan["dynamic"]["timeout_s"] == 5
    from probes.errors import ProbeError

    with pytest.raises(ProbeError, match="needs --audit"):
        build_plan(JobOptions(probes=["spectral"]))


def _limited_job(tmp_path, files: dict[str, bytes], expect_failed: bool = True, **limits) -> tuple[dict[str, dict], object]:
    root = tmp_path / "r"
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "ok.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with CaseStore(tmp_path / "c.db") as store:
        cid = store.new_case("x")
        s = run_job(root, JobOptions(workers=1, json_lines=tmp_path / "o.jsonl", **limits), store=store, case_id=cid)
        assert store.verify(cid).ok
    lines = {Path(x["path"]).name: x for x in map(json.loads, (tmp_path / "o.jsonl").read_text().splitlines())}
    assert lines["ok.pkl"]["verdict"] == "clean" and (s.failed == 1 or not expect_failed)
    return lines, s


def test_a_subject_over_the_memory_limit_fails_alone(tmp_path):
    """6M distinct strings (a 59 MB pickle) whose scan needs more than --memory-mb 256 of heap. (A 600 MB zlib
    stream no longer does: the scanner inflates it in bounded steps.)"""
    lines, _ = _limited_job(tmp_path, {"big.pkl": pickle.dumps([str(i) for i in range(6_000_000)], protocol=4)},
                            expect_failed=False, memory_mb=256)
    line = lines["big.pkl"]
    err = line["error"] or line["summary"] or ""
    # the worker dies (retried once, then failed), or the scanner catches the MemoryError: never clean
    # without the limit this file scans clean; under it the worker dies (retried, then failed) or the scanner
    # catches the MemoryError and says so: never clean
    assert line["verdict"] != "clean", line
    assert (line["status"] == "failed" and "died" in err) or "out of memory" in err, line


def test_a_subject_over_the_time_limit_fails_alone(tmp_path):
    lines, _ = _limited_job(tmp_path, {"slow.pkl": pickle.dumps([(i, str(i)) for i in range(800_000)], protocol=2)},
                            time_limit_s=0.5)
    assert lines["slow.pkl"]["status"] == "failed" and "time limit of 0.5s" in lines["slow.pkl"]["error"]
