"""Benchmark the opt-in ``dynamic`` probe: detection on the payload corpus and per-file overhead.

    .venv/bin/python benchmarks/dynamic_load.py [--keep DIR]

Prints, side by side with a baseline measured in this same process:
- detection: every payload that executes at load time caught (and by which event),
  benign files flagged, the no-denylist payloads;
- timing: cold start (zygote: Python + torch import + sealing), one-off baseline
  training, per-file wall time with the warm zygote, and the ratio of each to a bare
  in-process ``pickle.load`` / ``torch.load`` of a benign file (the baseline; benign
  files only: this process never unpickles a suspect file).
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _setup  # noqa: F401  (the checkout on sys.path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _bare_baseline(benign: list[tuple[Path, str]], reps: int = 20) -> dict[str, float]:
    """Median in-process load time of our own benign files (trusted: we just wrote them)."""
    import joblib
    import torch

    out = {}
    for path, loader in benign:
        data = path.read_bytes()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            if loader == "torch":
                torch.load(io.BytesIO(data), weights_only=False)
            elif loader == "joblib":
                joblib.load(io.BytesIO(data))
            else:
                pickle.loads(data)
            times.append(time.perf_counter() - t)
        out[path.name] = statistics.median(times)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="build the files here instead of a temp dir")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-dynamic-"))
    os.environ.setdefault("WORKBENCH_CACHE", str(tmp / "cache"))  # measure a first use, not someone's cache


    from workbench.threads import apply_threads
    threads = apply_threads()  # the product's default, as a user gets it
    print(f"torch threads: {threads} (the workbench default, workbench/threads.py)")
    from corpora import dynamic_payloads as payloads
    from probes.context import context_for
    from probes.dynamic_load import run, sandbox

    benign = payloads.build_benign_samples(tmp / "benign")
    own = payloads.build_payloads(tmp / "payloads", tmp / "markers")
    try:
        from corpora.payload_corpus import build_corpus

        corpus = build_corpus(tmp / "corpus")
    except ImportError:
        corpus = []

    bare = _bare_baseline(benign)
    bare_pickle = bare["plain.pkl"]
    print(f"baseline (this process, benign files only): pickle.load {bare_pickle * 1e6:.1f} µs, "
          f"torch.load state_dict {bare['linear.pt'] * 1e3:.2f} ms, joblib.load {bare['arrays.joblib'] * 1e3:.2f} ms")

    # Cold: fresh zygote + training the benign baseline (first use ever), then a cold zygote alone.
    t = time.perf_counter()
    res = run(str(benign[0][0]), context_for("dynamic"))
    first_use = time.perf_counter() - t
    startup = res.details["isolation"]["zygote_startup_s"]
    sandbox.shutdown()
    t = time.perf_counter()
    res = run(str(benign[0][0]), context_for("dynamic"))
    cold_file = time.perf_counter() - t
    cold_cpu = res.details["isolation"].get("startup_cpu_s")
    sandbox.shutdown()
    t = time.perf_counter()
    run(str(benign[3][0]), context_for("dynamic"))
    cold_pickle = time.perf_counter() - t
    print(f"first use ever (zygote start {startup:.2f} s + benign baseline of {res.details['baseline']['loads']} "
          f"loads, cached as JSON afterwards): {first_use:.2f} s")
    print(f"cold torch file (new zygote: python -I -S + torch/numpy/joblib import + sealing, then the load): "
          f"{cold_file:.2f} s wall, zygote start-up {cold_cpu} CPU-s  = {cold_file / bare_pickle:,.0f}x bare pickle.load, "
          f"{cold_file / bare['linear.pt']:,.0f}x bare torch.load")
    print(f"cold pickle/joblib file (same + the zygote imports scikit-learn once): {cold_pickle:.2f} s")
    iso = res.details["isolation"]
    print(f"isolation: netns={iso['netns']} interfaces={iso.get('interfaces')} read-only mount ns="
          f"{iso['mountns_readonly']} no_new_privs={iso['no_new_privs']} uid={iso['uid']} lz4={iso.get('lz4')}")

    # Warm per-file on everything.
    rows = []
    subjects = [(Path(p), "benign", "own benign", False, None) for p, _ in benign]
    subjects += [(p.path, "malicious", f"own:{p.name}", p.expect != "call" or True, p.event) for p in own]
    subjects += [(Path(e.path), e.label, e.family, e.executes_at_load, None) for e in corpus]
    for path, label, family, executes, _ in subjects:
        params = {"timeout_s": 3.0} if "hang" in path.name else {}
        t = time.perf_counter()
        r = run(str(path), context_for("dynamic", params))
        dt = time.perf_counter() - t
        ev = r.details["refused"][0]["event"] if r.details["refused"] else ""
        rows.append((path.name, label, family, executes, r.verdict, dt, ev, r.summary))

    def caught(v):
        return v in ("malicious", "suspicious")

    exec_rows = [r for r in rows if r[1] == "malicious" and r[3]]
    exec_caught = [r for r in exec_rows if caught(r[4])]
    exec_malicious = [r for r in exec_rows if r[4] == "malicious"]
    benign_rows = [r for r in rows if r[1] == "benign"]
    benign_flagged = [r for r in benign_rows if caught(r[4])]
    nonexec = [r for r in rows if r[1] == "malicious" and not r[3]]
    print()
    print(f"{'file':36s} {'label':9s} {'exec':4s} {'verdict':12s} {'time':>7s}  evidence")
    for name, label, _family, ex, verdict, dt, ev, summary in rows:
        mark = "" if (label == "benign") != caught(verdict) or (label == "malicious" and not ex) else "  <-- !"
        print(f"{name[:36]:36s} {label[:9]:9s} {'yes' if ex else 'no':4s} {verdict:12s} {dt:6.3f}s  "
              f"{(ev or summary)[:70]}{mark}")
    print()
    print(f"payloads that execute at load: {len(exec_caught)}/{len(exec_rows)} caught "
          f"({len(exec_malicious)} malicious by a refused operation, {len(exec_caught) - len(exec_malicious)} suspicious)")
    missed = [r[0] for r in exec_rows if not caught(r[4])]
    if missed:
        print(f"  not caught: {', '.join(missed)}")
    print(f"benign files flagged: {len(benign_flagged)}/{len(benign_rows)}"
          + (f" ({', '.join(r[0] for r in benign_flagged)})" if benign_flagged else ""))
    print(f"payloads that do not execute at load (dynamic analysis cannot see them; static scan's job): "
          f"{sum(caught(r[4]) for r in nonexec)}/{len(nonexec)} still flagged")
    nd = [r for r in rows if r[0].startswith(("logging-filehandler", "pathlib-write-text"))]
    print("no-denylist payloads: " + ", ".join(f"{r[0]} -> {r[4]} ({r[6]})" for r in nd))
    markers = list((tmp / "markers").glob("*")) + list((tmp / "corpus").rglob("PWNED"))
    print(f"marker files created by payloads: {len(markers)}")
    times = [r[5] for r in rows if "hang" not in r[0]]
    small = [r[5] for r in rows if r[1] == "benign"]
    print()
    print(f"warm per-file wall time (zygote already up), {len(times)} files: median {statistics.median(times):.3f} s, "
          f"mean {statistics.mean(times):.3f} s, max {max(times):.3f} s  (target < 3 s)")
    print(f"  ratio to bare in-process pickle.load of a benign file: median {statistics.median(times) / bare_pickle:,.0f}x, "
          f"max {max(times) / bare_pickle:,.0f}x; benign files median {statistics.median(small):.3f} s")
    print(f"  cold start + load (no warm zygote): torch file {cold_file:.2f} s, pickle/joblib file {cold_pickle:.2f} s "
          f"(target < 3 s; zygote start-up is {cold_cpu} CPU-seconds, the rest is waiting for the shared cores)")
    print(f"  load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"files in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
