"""Report export speed and size: the demo case and a 10,000-subject registry-sized case.

    WORKBENCH_THREADS=1 .venv/bin/python benchmarks/report_export.py [--demo-db PATH] [--subjects 10000]

* Demo case (a copy of ``workbench demo``'s case file; built when missing, a few
  minutes): HTML + markdown folder + figures, cold (figures drawn and stored)
  and warm (figures reused from the case file). Target < 3 s.
* Large case: ``--subjects`` subjects inserted directly into a case file (with a
  valid audit chain), 2% of them flagged by a Neural Cleanse-shaped run with a
  stored trigger, 1% by a static payload. HTML, markdown, JSON lines and
  CycloneDX are exported; target < 30 s and < 20 MB for the HTML / markdown.

The baseline, timed in the same process on the same case, is the plain
markdown report (``render_markdown`` of the bundle, no figures, no files) -
what ``case export`` printed before figures and formats existed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _setup  # noqa: F401  (the checkout on sys.path)
import numpy as np


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def build_large(db: Path, n: int, seed: int = 0) -> int:
    """A case of ``n`` subjects written by direct inserts (one transaction), with an intact audit chain."""
    from casefiles import CaseStore, attest
    from casefiles import audit as chain
    from casefiles.store import now

    rng = np.random.default_rng(seed)
    store = CaseStore(db, actor="bench@lab")
    cid = store.new_case(f"Registry sweep ({n} models)", "Every model of a registry job, scanned.")
    case = store.get_case(cid)
    prev, seq = case["audit_head"], case["audit_count"]
    audit_rows, subjects, runs, arts = [], [], [], []
    ts = now()

    def audit(action: str, detail: dict, rows: list) -> None:
        """One chained audit row attesting ``rows`` (table, row dict), as the store's own writes do."""
        nonlocal prev, seq
        seq += 1
        detail = {**detail, "rows": {f"{t}/{r['id']}": attest.digest(t, r) for t, r in rows}}
        row = {"case_id": cid, "seq": seq, "ts": ts, "actor": "bench@lab", "action": action,
               "detail": chain.canonical(detail)}
        row["prev_hash"] = prev
        row["hash"] = chain.chain_hash(prev, chain.row_content(row))
        prev = row["hash"]
        audit_rows.append(row)

    mask = np.zeros((8, 8), np.float32)
    mask[5:8, 5:8] = 1
    pattern = rng.random((1, 8, 8)).astype(np.float32)
    run_id = 0
    for i in range(1, n + 1):
        sha = hashlib.sha256(f"model-{i}".encode()).hexdigest()
        subjects.append({"id": i, "case_id": cid, "name": f"org{i % 97}/model-{i}", "path": f"/registry/org{i % 97}/model-{i}",
                         "sha256": sha, "size": int(rng.integers(100_000, 1_000_000_000)), "format": "safetensors",
                         "kind": "image-classifier", "files": json.dumps([{"path": "model.safetensors", "sha256": sha}]),
                         "metadata": "{}", "added": ts})
        audit("subject.added", {"subject_id": i, "sha256": sha}, [("subjects", subjects[-1])])
        malicious = i % 100 == 7
        run_id += 1
        runs.append({"id": run_id, "case_id": cid, "subject_id": i, "probe": "static", "params": "{}", "status": "done",
                     "started": ts, "finished": ts, "duration_s": 0.01,
                     "verdict": "malicious" if malicious else "clean", "score": 1.0 if malicious else 0.0,
                     "summary": "malicious: os.system in data.pkl @12" if malicious else "clean: no findings in 1 file",
                     "result": json.dumps({"probe": "static", "verdict": "malicious" if malicious else "clean",
                                           "findings": [{"file": "data.pkl", "offset": 12, "opcode": "STACK_GLOBAL",
                                                         "module": "os", "name": "system", "severity": "critical"}]
                                           if malicious else []})})
        audit("run.done", {"run_id": run_id, "probe": "static"}, [("runs", runs[-1])])
        if i % 50 == 3:  # 2% carry a backdoor found by Neural Cleanse
            run_id += 1
            l1 = rng.uniform(25, 40, 10)
            l1[0] = 4.0
            runs.append({"id": run_id, "case_id": cid, "subject_id": i, "probe": "neural-cleanse",
                         "params": json.dumps({"threshold": 2.0}), "status": "done", "started": ts, "finished": ts,
                         "duration_s": 5.0, "verdict": "backdoored", "score": 0.7,
                         "summary": "class 0 needs a trigger of L1 4.0 vs median 32: anomaly index 5.1 > 2",
                         "result": json.dumps({"probe": "neural-cleanse", "verdict": "backdoored", "anomaly_index": 5.1,
                                               "suspected_target": 0, "clean_accuracy": 0.97,
                                               "trigger_attack_success_heldout": 0.99,
                                               "per_class": [{"class": c, "l1_norm": float(v)} for c, v in enumerate(l1)],
                                               "impact": {"trigger": {"bbox": [5, 5, 7, 7], "location": "bottom-right",
                                                                      "active_pixels": 9, "bbox_fraction": 0.14},
                                                          "attack_type_guess": "patch"}})})
            for name, data in (("mask.npy", _npy(mask)), ("pattern.npy", _npy(pattern))):
                arts.append({"id": len(arts) + 1, "case_id": cid, "subject_id": i, "run_id": run_id, "name": name,
                             "media_type": "application/x-npy", "sha256": hashlib.sha256(data).hexdigest(),
                             "size": len(data), "data": data, "created": ts})
            audit("run.done", {"run_id": run_id, "probe": "neural-cleanse"}, [("runs", runs[-1]), *(("artifacts", a) for a in arts[-2:])])
    with store.write():
        store.db.table("subjects").insert_all(subjects, batch_size=2000)
        store.db.table("runs").insert_all(runs, batch_size=2000)
        store.db.table("artifacts").insert_all(arts, batch_size=500)
        store.db.table("audit").insert_all(audit_rows, batch_size=2000)
        store.db.table("cases").update(cid, {"audit_head": prev, "audit_count": seq, "updated": ts})
    assert store.verify(cid).ok
    store.close()
    return cid


def _baseline(store, case_id: int) -> tuple[float, int]:
    from casefiles.export import render_markdown

    t0 = time.perf_counter()
    text = render_markdown(store.case_bundle(case_id))
    return time.perf_counter() - t0, len(text.encode())


CPU: dict[str, float] = {}  # CPU seconds of the last export of each label (this machine is shared: wall time
#                             under load is several times the CPU a quiet machine would need)


def _export(store, case_id: int, fmt: str, dest: Path) -> tuple[float, int, int]:
    from casefiles.report import export_case

    t0, c0 = time.perf_counter(), time.process_time()
    out, _ = export_case(store, case_id, fmt, dest)
    CPU[dest.name] = time.process_time() - c0
    return time.perf_counter() - t0, _size(dest), out.figures


def _cpu(*names: str) -> str:
    return f"cpu {sum(CPU[n] for n in names):.2f} s"


def demo_case(src: Path, work: Path) -> None:
    from casefiles import CaseStore

    db = work / "demo.db"
    shutil.copy(src, db)
    with CaseStore(db) as store:
        cid = store.list_cases()[-1]["id"]
        base_s, base_b = _baseline(store, cid)
        t_html, s_html, figs = _export(store, cid, "html", work / "demo.html")
        t_md, s_md, _ = _export(store, cid, "md", work / "demo-md")
        cold = t_html + t_md
        w_html, _, _ = _export(store, cid, "html", work / "demo2.html")
        w_md, _, _ = _export(store, cid, "md", work / "demo2-md")
        warm = w_html + w_md
    print(f"demo case ({figs} figures): baseline plain markdown {base_s:.3f} s ({base_b / 1e3:.0f} kB); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  cold (figures drawn, matplotlib imported): html {t_html:.2f} s ({s_html / 1e3:.0f} kB) + "
          f"md folder {t_md:.2f} s ({s_md / 1e3:.0f} kB) = {cold:.2f} s wall, {_cpu('demo.html', 'demo-md')}  "
          f"[{cold / base_s:.0f}x baseline] target < 3 s: {'met' if cold < 3 else 'MISSED'}")
    print(f"  warm (figures reused from the case file): html {w_html:.2f} s + md {w_md:.2f} s = {warm:.2f} s wall, "
          f"{_cpu('demo2.html', 'demo2-md')}  "
          f"[{warm / base_s:.1f}x baseline]")


def large_case(n: int, work: Path) -> None:
    from casefiles import CaseStore

    db = work / "large.db"
    t0 = time.perf_counter()
    cid = build_large(db, n)
    print(f"\nlarge case: {n} subjects built by direct inserts in {time.perf_counter() - t0:.1f} s "
          f"({db.stat().st_size / 1e6:.1f} MB case file)")
    with CaseStore(db) as store:
        base_s, base_b = _baseline(store, cid)
        print(f"  baseline plain markdown (now summarised for large cases): {base_s:.2f} s ({base_b / 1e6:.1f} MB)")
        total = 0.0
        for fmt, dest in (("html", "large.html"), ("md", "large-md"), ("jsonl", "large.jsonl"),
                          ("cyclonedx", "large.cdx.json")):
            t, size, figs = _export(store, cid, fmt, work / dest)
            total += t if fmt in ("html", "md") else 0.0
            ok = "met" if t < 30 and (size < 20e6 or fmt not in ("html", "md")) else "MISSED"
            print(f"  {fmt:<9} {t:6.2f} s ({_cpu(dest)})  {size / 1e6:6.2f} MB  {figs:3d} figures  [{t / base_s:.1f}x baseline]"
                  + (f"  target < 30 s and < 20 MB: {ok}" if fmt in ("html", "md") else ""))
        t, _, _ = _export(store, cid, "html", work / "large2.html")
        print(f"  html again (figures reused): {t:.2f} s ({_cpu('large2.html')})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo-db", type=Path, help="the demo case file (default: workbench demo's, built if missing)")
    ap.add_argument("--subjects", type=int, default=10_000)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    demo = args.demo_db
    if demo is None:
        from workbench.paths import default_db_path

        demo = default_db_path().with_name("demo.db")
    work = Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        if not demo.exists():
            from workbench.demo import build_demo_case

            print(f"building the demo case at {demo} (a few minutes, once) …", file=sys.stderr)
            build_demo_case(demo)
        t0 = time.perf_counter()
        demo_case(demo, work)
        large_case(args.subjects, work)
        print(f"\nbenchmark wall time {time.perf_counter() - t0:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
