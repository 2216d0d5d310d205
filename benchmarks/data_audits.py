"""Data-audit figures: spectral signatures and activation clustering on the digits zoo.

Prints, for BadNets (10% of the whole training set poisoned into class 0),
blended, and clean training sets: verdict, poisoned classes, precision /
recall / F1 over the whole set, and the flags in clean sets; side by side
with the textbook versions (spectral: remove the top 1.5*eps of *every*
class by squared projection, eps = 0.1; activation clustering: flag the
smaller 2-means cluster of every class whose relative size <= 0.35). Then the
time of a 2,000-sample spectral audit against a naive per-class full-SVD
implementation run in the same process.

    .venv/bin/python benchmarks/data_audits.py [--archs cnn,mlp] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # 2 shared cores: one BLAS thread (set before numpy loads)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def textbook_spectral(reps: np.ndarray, y: np.ndarray, eps: float = 0.1) -> np.ndarray:
    """Tran et al. as usually shipped: per class, full SVD, drop the top 1.5*eps by squared projection."""
    flagged = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        r = reps[idx] - reps[idx].mean(0)
        _, _, vt = np.linalg.svd(r, full_matrices=True)
        s = (r @ vt[0]) ** 2
        k = int(round(1.5 * eps * len(idx)))
        flagged.append(idx[np.argsort(s)[::-1][:k]])
    return np.sort(np.concatenate(flagged))


def textbook_ac(reps: np.ndarray, y: np.ndarray, seed: int = 0, max_rel: float = 0.35) -> np.ndarray:
    """Chen et al. as usually shipped: PCA-10, 2-means, the smaller cluster when its size <= 0.35."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    flagged = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        z = PCA(min(10, reps.shape[1]), random_state=seed).fit_transform(reps[idx] - reps[idx].mean(0))
        lab = KMeans(2, n_init=10, random_state=seed).fit_predict(z).astype(bool)
        small = lab if lab.mean() <= 0.5 else ~lab
        if small.mean() <= max_rel:
            flagged.append(idx[small])
    return np.sort(np.concatenate(flagged)) if flagged else np.zeros(0, np.int64)


def pr(flagged, truth):
    from probes.audit_decision import precision_recall

    return precision_recall(flagged, truth, len(truth))


def fmt(p):
    return f"P {p['precision']:.3f}  R {p['recall']:.3f}  F1 {p['f1']:.3f}  flagged {p['n_flagged']:4d}/{p['n_poison']:3d} poison"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="cnn")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--speed-only", action="store_true", help="skip the quality table")
    args = ap.parse_args()


    from workbench.threads import apply_threads
    threads = apply_threads()  # the product's default, as a user gets it
    print(f"torch threads: {threads} (the workbench default, workbench/threads.py)")
    from probes import activation_clustering, spectral
    from probes.context import context_for
    from probes.data import LabelledData
    from probes.zoo.digits import AttackSpec, build_model, load_digits

    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    print("== quality (audit = the model's own training set) ==")
    for arch in ([] if args.speed_only else args.archs.split(",")):
        for kind in ("badnets", "blended", "clean"):
            for seed in seeds:
                zm = build_model(arch, AttackSpec(kind, target=0, rate=0.1), seed)
                x, y, is_p = zm.train
                audit = LabelledData(x, y, is_p, source=zm.name)
                subject = zm.subject()
                reps = subject.activations(x)
                print(f"{zm.name:28s} clean_acc {zm.clean_acc:.3f} asr {zm.asr:.2f}  n={len(y)}")
                for name, probe, book in (("spectral", spectral, textbook_spectral(reps, y)),
                                          ("activation-clustering", activation_clustering, textbook_ac(reps, y, seed))):
                    t = time.perf_counter()
                    r = probe.run(subject, context_for(probe.PROBE, audit=audit)).to_dict()
                    dt = time.perf_counter() - t
                    ours = pr(np.asarray(r["flagged_indices"], np.int64), is_p)
                    theirs = pr(book, is_p)
                    rows.append((arch, kind, seed, name, ours, r["poisoned_classes"]))
                    print(f"  {name:22s} ours     {r['verdict']:10s} classes {str(r['poisoned_classes']):8s} {fmt(ours)}  {dt:5.2f}s")
                    print(f"  {'':22s} textbook {'':10s} {'':16s} {fmt(theirs)}")
    print("\n== summary ==")
    for name in ("spectral", "activation-clustering"):
        for kind in ("badnets", "blended", "clean"):
            sel = [r for r in rows if r[3] == name and r[1] == kind]
            if not sel:
                continue
            if kind == "clean":
                flags = [r[4]["n_flagged"] for r in sel]
                print(f"{name:22s} {kind:8s} flags in clean sets: {flags} (target: all 0)")
            else:
                hit = sum(r[4]["recall"] >= 0.9 and r[4]["precision"] >= 0.8 for r in sel)
                print(f"{name:22s} {kind:8s} recall>=0.9 & precision>=0.8 on {hit}/{len(sel)} models; "
                      f"mean P {np.mean([r[4]['precision'] for r in sel]):.3f} R {np.mean([r[4]['recall'] for r in sel]):.3f}")

    print(f"\n(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; times are wall-clock)")
    print("\n== speed: spectral audit of 2,000 samples (cnn, BadNets seed 0) ==")
    zm = build_model("cnn", AttackSpec("badnets", target=0, rate=0.1), 0)
    x, y, is_p = zm.train
    _, _, xte, yte = load_digits(16, seed=0)
    extra = np.arange(2000 - len(y)) % len(yte)  # the clean test split, repeated as needed
    x2 = np.concatenate([x, xte[extra]])
    y2 = np.concatenate([y, yte[extra]])
    p2 = np.r_[is_p, np.zeros(len(extra), bool)]
    audit = LabelledData(x2, y2, p2, source="train+test")
    subject = zm.subject()
    spectral.run(subject, context_for("spectral", audit=audit))  # warm-up
    naive_t, ours_t, naive_c, ours_c = [], [], [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        reps = subject.activations(x2)
        textbook_spectral(reps, y2)
        naive_t.append(time.perf_counter() - t)
        naive_c.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        r = spectral.run(subject, context_for("spectral", audit=audit)).to_dict()
        ours_t.append(time.perf_counter() - t)
        ours_c.append(time.process_time() - c)
    naive, ours = min(naive_t), min(ours_t)
    print(f"naive per-class full-SVD (activations + np.linalg.svd, top-1.5eps rule): wall {naive:.3f} s, "
          f"cpu {min(naive_c):.3f} s")
    print(f"spectral probe (activations + eigh + transplant tests + refinement):   wall {ours:.3f} s, "
          f"cpu {min(ours_c):.3f} s  (wall ratio ours/naive {ours / naive:.2f}; "
          f"target < 2 s: {'met' if ours < 2 else 'NOT met'} on wall clock)")
    print(f"  on 2,000 samples: P {r.get('precision')} R {r.get('recall')} classes {r['poisoned_classes']}")
    reps = subject.activations(x2)
    t = time.perf_counter()
    for _ in range(5):
        textbook_spectral(reps, y2)
    svd_t = (time.perf_counter() - t) / 5
    t = time.perf_counter()
    for _ in range(5):
        for c in np.unique(y2):
            spectral.class_scores(reps[y2 == c], 2)
    eig_t = (time.perf_counter() - t) / 5
    print(f"  math only: full SVD {svd_t * 1e3:.1f} ms vs top-2 eigh {eig_t * 1e3:.1f} ms (ratio {eig_t / svd_t:.2f})")


if __name__ == "__main__":
    main()
