"""Static scan vs picklescan on the labelled payload corpus, plus large-checkpoint timing.

    .venv/bin/python benchmarks/static_scan.py [--large-mb 300] [--small-files 2000] [--repeat 3] [--keep DIR]

Builds corpora.payload_corpus in a temp dir, scans every subject with this
scanner and with picklescan (its Python API; default and --strict modes), and
prints side by side:

* detection: malicious subjects flagged / total, and flagged *with the real
  payload named* (the expected module.name among the reported globals);
* false positives: benign subjects flagged malicious (picklescan: "infected");
* errors / inconclusive;
* speed: subjects/s, MB/s of pickle (pickle bytes as measured by this scanner,
  the same numerator for both tools) and MB/s of all bytes.

Then a large synthetic state_dict (zip and legacy) and a many-tensor
checkpoint show that scan time follows the pickle part, not the tensor bytes.
Nothing in the corpus is ever executed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _setup  # noqa: F401  (the checkout on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _ours(path: Path):
    from probes.static_scan import scan_path

    return scan_path(path).to_dict()


def _picklescan(path: Path, strict: bool):
    from picklescan.scanner import scan_directory_path, scan_file_path

    try:
        return scan_directory_path(str(path), strict=strict) if path.is_dir() else scan_file_path(str(path), strict=strict)
    except Exception as exc:  # picklescan raising is an error result, not a benchmark crash
        return exc


CPU: dict[str, float] = {}  # best CPU seconds (time.process_time) of the last _timed call per label


def _timed(fn, repeat: int, label: str = ""):
    """Best wall time of ``repeat`` runs (and, under ``label``, the best CPU time: on a loaded machine the
    wall clock mostly measures waiting for a core)."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    if label:
        CPU[label] = best_cpu
    return best, out


def corpus_table(dest: Path, repeat: int) -> dict:
    from corpora.payload_corpus import build_corpus

    t0 = time.perf_counter()
    entries = build_corpus(dest)
    build_s = time.perf_counter() - t0
    mal = [e for e in entries if e.label == "malicious"]
    ben = [e for e in entries if e.label == "benign"]
    total_bytes = sum(f.stat().st_size for e in entries for f in ([e.path] if e.path.is_file() else
                                                                   [p for p in e.path.rglob("*") if p.is_file()]))

    rows = {}
    t_ours, ours = _timed(lambda: [_ours(e.path) for e in entries], repeat, "ours")
    pickle_bytes = sum(r["pickle_bytes"] for r in ours)
    names = lambda r: {f"{f['module']}.{f['name']}" for f in r["findings"] if f["module"] and f["name"]}  # noqa: E731
    rows["this scanner"] = {
        "caught": sum(r["verdict"] == "malicious" for e, r in zip(entries, ours) if e.label == "malicious"),
        "named": sum(r["verdict"] == "malicious" and (e.payload is None or e.payload in names(r))
                     for e, r in zip(entries, ours) if e.label == "malicious"),
        "fp": sum(r["verdict"] == "malicious" for e, r in zip(entries, ours) if e.label == "benign"),
        "review": sum(r["verdict"] == "suspicious" for e, r in zip(entries, ours) if e.label == "benign"),
        "errors": sum(r["verdict"] == "inconclusive" for r in ours),
        "time": t_ours,
        "missed": [e.path.name for e, r in zip(entries, ours) if e.label == "malicious" and r["verdict"] != "malicious"],
        "fps": [e.path.name for e, r in zip(entries, ours) if e.label == "benign" and r["verdict"] == "malicious"],
        "errored": [e.path.name for e, r in zip(entries, ours) if r["verdict"] == "inconclusive"],
    }
    logging.getLogger("picklescan").setLevel(logging.CRITICAL)
    for strict in (False, True):
        t_ps, ps = _timed(lambda strict=strict: [_picklescan(e.path, strict) for e in entries], repeat,
                          "picklescan" + (" --strict" if strict else ""))
        flagged = lambda r: not isinstance(r, Exception) and r.infected_files > 0  # noqa: E731
        psnames = lambda r: set() if isinstance(r, Exception) else {f"{g.module}.{g.name}" for g in r.globals}  # noqa: E731
        rows["picklescan" + (" --strict" if strict else "")] = {
            "caught": sum(flagged(r) for e, r in zip(entries, ps) if e.label == "malicious"),
            "named": sum(flagged(r) and (e.payload is None or e.payload in psnames(r))
                         for e, r in zip(entries, ps) if e.label == "malicious"),
            "fp": sum(flagged(r) for e, r in zip(entries, ps) if e.label == "benign"),
            "review": 0,
            "errors": sum(isinstance(r, Exception) or r.scan_err for r in ps),
            "time": t_ps,
            "missed": [e.path.name for e, r in zip(entries, ps) if e.label == "malicious" and not flagged(r)],
            "fps": [e.path.name for e, r in zip(entries, ps) if e.label == "benign" and flagged(r)],
            "errored": [e.path.name for e, r in zip(entries, ps) if isinstance(r, Exception) or r.scan_err],
        }
    print(f"corpus: {len(mal)} malicious + {len(ben)} benign subjects, {total_bytes / 1e6:.1f} MB, "
          f"{pickle_bytes / 1e6:.2f} MB of pickle opcodes; built in {build_s:.1f} s")
    hdr = f"{'scanner':<22}{'caught':>10}{'named':>10}{'FP':>6}{'review':>8}{'errors':>8}{'subj/s':>10}{'MB/s pkl':>10}{'MB/s all':>10}"
    print(hdr)
    print("-" * len(hdr))
    for name, r in rows.items():
        print(f"{name:<22}{r['caught']:>5}/{len(mal):<4}{r['named']:>5}/{len(mal):<4}{r['fp']:>6}{r['review']:>8}{r['errors']:>8}"
              f"{len(entries) / r['time']:>10.0f}{pickle_bytes / 1e6 / r['time']:>10.2f}{total_bytes / 1e6 / r['time']:>10.1f}")
    for name, r in rows.items():
        for key, what in (("missed", "missed"), ("fps", "false positives"), ("errored", "errors/inconclusive")):
            if r[key]:
                print(f"  {name} {what} ({len(r[key])}): {', '.join(r[key])}")
    print(f"  ratio ours/picklescan, subjects/s: wall {rows['picklescan']['time'] / rows['this scanner']['time']:.2f}, "
          f"CPU {CPU['picklescan'] / CPU['ours']:.2f} (best of {repeat} each)")
    print("  caught = malicious subjects flagged (ours: verdict malicious; picklescan: infected files > 0)")
    print("  named  = flagged with the real payload's module.name among the reported globals")
    print("  FP     = benign subjects flagged malicious; review = benign subjects in our review tier (suspicious)")
    return rows


def small_files_table(dest: Path, n: int, repeat: int) -> float:
    """Files/s on a folder of ``n`` small benign model files (plain pickles of configs and lists, numpy arrays
    pickled, small torch zip state_dicts), both scanners walking the same folder; returns ours / picklescan."""
    import io
    import pickle

    import numpy as np
    import torch

    torch.set_num_threads(1)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            data = pickle.dumps({"lr": 0.001 * i, "layers": [64, 32, i], "name": f"run{i}", "tags": ["a", "b"]},
                                protocol=(i % 4) + 2)
        elif kind == 1:
            data = pickle.dumps([float(x) for x in rng.standard_normal(50)], protocol=4)
        elif kind == 2:
            data = pickle.dumps({"w": rng.standard_normal((8, 8)), "b": np.arange(8)}, protocol=4)
        else:
            buf = io.BytesIO()
            torch.save({"fc.weight": torch.zeros(4, 4), "fc.bias": torch.zeros(4)}, buf)
            data = buf.getvalue()
        (dest / f"f{i:05d}.pkl").write_bytes(data)
    t_ours = t_ps = c_ours = c_ps = float("inf")
    for _ in range(repeat):  # alternate so both see the same machine load
        t, r = _timed(lambda: _ours(dest), 1, "ours")
        t_ours, c_ours = min(t_ours, t), min(c_ours, CPU["ours"])
        t, rps = _timed(lambda: _picklescan(dest, False), 1, "picklescan")
        t_ps, c_ps = min(t_ps, t), min(c_ps, CPU["picklescan"])
    ratio = t_ps / t_ours
    print()
    print(f"small files: {n} in one folder ({sum(f.stat().st_size for f in dest.iterdir()) / 1e3:.0f} kB), best of "
          f"{repeat}, alternating")
    print(f"  this scanner: {n / t_ours:>8.0f} files/s   verdict {r['verdict']}, {r['files_scanned']} files")
    err = " (error)" if isinstance(rps, Exception) else f", {rps.scanned_files} files, {rps.infected_files} infected"
    print(f"  picklescan:   {n / t_ps:>8.0f} files/s{err}")
    print(f"  ratio ours/picklescan, files/s: wall {ratio:.2f}, CPU {c_ps / c_ours:.2f} (target >= 1.0)")
    return ratio


def large_table(dest: Path, large_mb: int, repeat: int) -> None:
    import torch

    from workbench.threads import apply_threads
    threads = apply_threads()  # the product's default, as a user gets it
    print(f"torch threads: {threads} (the workbench default, workbench/threads.py)")
    cases = []
    n = large_mb * (1 << 20) // 4 // 4
    big = {f"layer{i}.weight": torch.zeros(n) for i in range(4)}
    p = dest / "large_state_dict.pt"
    torch.save(big, p)
    cases.append(("large zip state_dict", p))
    p = dest / "large_state_dict_legacy.pt"
    torch.save(big, p, _use_new_zipfile_serialization=False)
    cases.append(("large legacy state_dict", p))
    del big
    many = {f"blocks.{i}.{k}": torch.zeros(4) for i in range(5000) for k in ("w", "b", "g", "h")}
    p = dest / "many_tensors.pt"
    torch.save(many, p)
    cases.append(("20k-tensor state_dict", p))
    import pickle

    import numpy as np

    p = dest / "large_plain.pkl"
    with open(p, "wb") as fh:
        pickle.dump({f"a{i}": np.zeros(large_mb * (1 << 20) // 8 // 8) for i in range(8)}, fh, protocol=4)
    cases.append(("large numpy pickle (p4)", p))
    print()
    print(f"{'file':<26}{'size MB':>9}{'pickle MB':>10}{'ours ms':>10}{'MB/s pkl':>10}{'picklescan ms':>15}")
    for label, path in cases:
        t, r = _timed(lambda path=path: _ours(path), repeat)
        t_ps, rps = _timed(lambda path=path: _picklescan(path, False), repeat)
        err = " (error)" if isinstance(rps, Exception) or getattr(rps, "scan_err", False) else ""
        print(f"{label:<26}{path.stat().st_size / 1e6:>9.1f}{r['pickle_bytes'] / 1e6:>10.3f}{t * 1e3:>10.1f}"
              f"{r['pickle_bytes'] / 1e6 / t:>10.2f}{t_ps * 1e3:>15.1f}{err}   verdict {r['verdict']}")
        path.unlink()


def format_table(dest: Path, repeat: int) -> None:
    """The non-pickle format corpus (corpora.format_corpus): verdicts against expectations, and speed."""
    from corpora.format_corpus import build_format_corpus

    t0 = time.perf_counter()
    entries = build_format_corpus(dest)
    build_s = time.perf_counter() - t0
    t, ours = _timed(lambda: [_ours(e.path) for e in entries], repeat)
    mal = [(e, r) for e, r in zip(entries, ours) if e.label == "malicious"]
    ben = [(e, r) for e, r in zip(entries, ours) if e.label == "benign"]
    right = sum(r["verdict"] == e.expect for e, r in zip(entries, ours))
    flagged = sum(r["verdict"] in ("malicious", "suspicious") for e, r in mal if e.expect in ("malicious", "suspicious"))
    want = sum(e.expect in ("malicious", "suspicious") for e, _ in mal)
    fp = sum(r["verdict"] == "malicious" for _, r in ben)
    logging.getLogger("picklescan").setLevel(logging.CRITICAL)
    t_ps, ps = _timed(lambda: [_picklescan(e.path, False) for e in entries], repeat)
    ps_flag = sum(not isinstance(r, Exception) and r.infected_files > 0 for (e, _), r in zip(mal, [
        p for e, p in zip(entries, ps) if e.label == "malicious"]) if e.expect in ("malicious", "suspicious"))
    print(f"format corpus: {len(mal)} hostile + {len(ben)} benign subjects (Keras, HDF5, SavedModel, ONNX, GGUF, "
          f"chat templates, NeMo/tar/7z); built in {build_s:.1f} s")
    print(f"  this scanner: expected verdict {right}/{len(entries)}, hostile flagged {flagged}/{want}, "
          f"benign called malicious {fp}/{len(ben)}, {len(entries) / t:.0f} subjects/s")
    print(f"  picklescan:   hostile flagged {ps_flag}/{want} (it reads pickles only), {len(entries) / t_ps:.0f} subjects/s;"
          f" speed ratio ours/picklescan {t_ps / t:.2f}")
    for e, r in zip(entries, ours):
        if r["verdict"] != e.expect:
            print(f"  MISMATCH {e.path.name}: expected {e.expect}, got {r['verdict']} ({r['summary'][:100]})")


def header_table(dest: Path, repeat: int) -> None:
    """1 GiB sparse GGUF / ONNX (external data) / safetensors files: header-only scan time vs reading the file."""
    import json
    import struct

    from corpora.chat_templates import LLAMA3
    from corpora.format_corpus import write_sparse_gguf, write_sparse_onnx

    size = 1 << 30
    print()
    print(f"{'1 GiB file':<14}{'scan ms':>10}{'full read ms':>14}{'ratio':>8}   verdict")
    for kind in ("gguf", "onnx", "safetensors"):
        p = dest / f"big.{kind}"
        total = size
        if kind == "gguf":
            write_sparse_gguf(p, size, LLAMA3)
            total = p.stat().st_size
        elif kind == "onnx":
            write_sparse_onnx(p, size)
            total = p.stat().st_size
        else:
            hdr = json.dumps({"w": {"dtype": "F32", "shape": [size // 4], "data_offsets": [0, size]}}).encode()
            p.write_bytes(struct.pack("<Q", len(hdr)) + hdr)
            total = 8 + len(hdr) + size
        with open(p, "r+b") as fh:
            fh.truncate(total)  # sparse: no disk blocks for the holes
        try:
            t_scan, r = _timed(lambda p=p: _ours(p), repeat)

            def read_all(p=p) -> None:
                with open(p, "rb") as fh:
                    while fh.read(16 << 20):
                        pass

            t_read, _ = _timed(read_all, 1)
            print(f"{kind:<14}{t_scan * 1e3:>10.1f}{t_read * 1e3:>14.1f}{t_read / t_scan:>8.0f}x  {r['verdict']}")
        finally:
            p.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--large-mb", type=int, default=300, help="size of the large synthetic state_dict (0 = skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--small-files", type=int, default=2000, help="small files in the files/s run (0 = skip)")
    ap.add_argument("--keep", type=Path, help="build the corpus here and keep it")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dest = args.keep or Path(tempfile.mkdtemp(prefix="static-bench-"))
    dest.mkdir(parents=True, exist_ok=True)
    try:
        corpus_table(dest / "corpus", args.repeat)
        print()
        format_table(dest / "formats", args.repeat)
        header_table(dest, args.repeat)
        if args.small_files:
            small_files_table(dest / "small", args.small_files, args.repeat)
        if args.large_mb:
            large_table(dest, args.large_mb, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    main()
