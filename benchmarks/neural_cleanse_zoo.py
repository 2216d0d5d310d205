"""Neural Cleanse detection quality on the project's digits zoo.

Trains >= 10 clean and >= 10 backdoored classifiers (BadNets patch and blended
noise; small CNN, wide CNN, MLP; several seeds and targets), runs the
``neural-cleanse`` probe with default parameters on each, using the clean
digits test split as ``--data``, and prints a table and the AUROC of the
anomaly index. Targets (issue 4): every backdoored model (ASR >= 0.9) gets an
anomaly index > 2 with the right target, every clean model < 2, AUROC >= 0.95.

Attacks outside Neural Cleanse's threat model (all-to-all, clean-label) are
run as well and reported separately; they do not count toward the targets.

    .venv/bin/python benchmarks/neural_cleanse_zoo.py [--quick] [--seeds 0,1,2] [--param KEY=VALUE ...]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from workbench.threads import apply_threads
    threads = apply_threads()  # the product's default, as a user gets it
    print(f"torch threads: {threads} (the workbench default, workbench/threads.py)")
    from probes import neural_cleanse
    from probes.context import context_for
    from probes.data import LabelledData
    from probes.zoo.digits import AttackSpec, build_model, load_digits

    quick = "--quick" in sys.argv
    overrides = {}  # --param key=value (JSON value), e.g. to compare with other settings
    for i, a in enumerate(sys.argv):
        if a == "--param":
            key, value = sys.argv[i + 1].split("=", 1)
            overrides[key] = json.loads(value)
    seeds = [0]
    if "--seeds" in sys.argv:
        seeds = [int(v) for v in sys.argv[sys.argv.index("--seeds") + 1].split(",")]
    clean = [("cnn", s) for s in range(4)] + [("mlp", s) for s in range(4)] + [("wide-cnn", s) for s in range(3)]
    bad = [("cnn", "badnets", 0, 0), ("cnn", "badnets", 3, 1), ("cnn", "badnets", 7, 2),
           ("mlp", "badnets", 1, 0), ("mlp", "badnets", 5, 1), ("wide-cnn", "badnets", 9, 0),
           ("cnn", "blended", 2, 0), ("cnn", "blended", 5, 1), ("mlp", "blended", 4, 0),
           ("mlp", "blended", 8, 1), ("wide-cnn", "blended", 6, 1)]
    extra = [("cnn", "all-to-all", 0, 0), ("cnn", "clean-label", 4, 0)]
    if quick:
        clean, bad, extra = clean[:3], bad[:3], []
    _, _, xte, yte = load_digits()
    data = LabelledData(xte, yte, source="digits test split")

    rows = []

    def one(arch, kind, target, seed, group):
        t = time.perf_counter()
        zm = build_model(arch, AttackSpec(kind, target=target, rate=0.2 if kind == "all-to-all" else 0.1), seed=seed)
        t_train = time.perf_counter() - t
        for nc_seed in seeds:
            t = time.perf_counter()
            r = neural_cleanse.run(zm.subject(), context_for("neural-cleanse", {**overrides, "seed": nc_seed},
                                                             data=data)).to_dict()
            rows.append({"name": zm.name, "group": group, "backdoored": zm.backdoored, "target": target,
                         "acc": zm.clean_acc, "asr": zm.asr, "ai": r["anomaly_index"], "found": r["suspected_target"],
                         "cand": r["candidate_class"], "held": r["trigger_attack_success_heldout"],
                         "guess": r["impact"]["attack_type_guess"], "kind": kind, "nc_seed": nc_seed,
                         "t_nc": time.perf_counter() - t, "t_train": t_train})
            row = rows[-1]
            print(f"  {row['name']:28s} seed {nc_seed} acc {row['acc']:.3f} asr {row['asr']:.3f}  AI {row['ai']:7.2f}  "
                  f"target {row['found']!s:>4}  held-out trigger ASR {row['held'] if row['held'] is None else round(row['held'], 3)!s:>5}  "
                  f"guess {row['guess']:15s} NC {row['t_nc']:5.1f}s", flush=True)

    print("clean models")
    for arch, seed in clean:
        one(arch, "clean", 0, seed, "clean")
    print("backdoored models")
    for arch, kind, target, seed in bad:
        one(arch, kind, target, seed, "backdoored")
    if extra:
        print("outside Neural Cleanse's threat model (not counted)")
        for arch, kind, target, seed in extra:
            one(arch, kind, target, seed, "extra")

    target_met = True
    for nc_seed in seeds:
        print(f"\n== Neural Cleanse seed {nc_seed} ==")
        target_met &= summarise([r for r in rows if r["nc_seed"] == nc_seed], np, roc_auc_score)
    if len(seeds) > 1:
        print(f"\n== all {len(seeds)} seeds pooled (a model counts once per seed) ==")
        target_met &= summarise(rows, np, roc_auc_score)
    print("TARGET MET" if target_met else "TARGET NOT MET" + (" (quick run)" if quick else ""))
    return 0


def summarise(rows, np, roc_auc_score) -> bool:
    """Print the target figures for these rows; True when every target holds."""
    main_rows = [r for r in rows if r["group"] != "extra"]
    eligible = [r for r in main_rows if not r["backdoored"] or r["asr"] >= 0.9]
    skipped = [r["name"] for r in main_rows if r["backdoored"] and r["asr"] < 0.9]
    cl = [r for r in eligible if not r["backdoored"]]
    bd = [r for r in eligible if r["backdoored"]]
    y = np.array([r["backdoored"] for r in eligible], int)
    s = np.array([r["ai"] for r in eligible])
    auroc = roc_auc_score(y, s) if 0 < y.sum() < len(y) else float("nan")
    ok_clean = sum(r["ai"] < 2 for r in cl)
    ok_bad = sum(r["ai"] > 2 and r["found"] == r["target"] for r in bd)
    patch_ok = sum(r["guess"] == "patch" for r in bd if r["kind"] == "badnets" and r["found"] is not None)
    blend_ok = sum(r["guess"] == "blended/diffuse" for r in bd if r["kind"] == "blended" and r["found"] is not None)
    print()
    print(f"clean models below 2:                        {ok_clean}/{len(cl)}  (max AI {max(r['ai'] for r in cl):.2f})")
    print(f"backdoored (ASR>=0.9) above 2, right target: {ok_bad}/{len(bd)}  (min AI {min(r['ai'] for r in bd):.2f})")
    if skipped:
        print(f"backdoored models skipped for ASR < 0.9:     {', '.join(skipped)}")
    print(f"AUROC of the anomaly index:                  {auroc:.4f}")
    n_patch = sum(r['kind'] == 'badnets' and r['found'] is not None for r in bd)
    print(f"attack-type guess right (flagged models):    patch {patch_ok}/{n_patch}, "
          f"blended {blend_ok}/{sum(r['kind'] == 'blended' and r['found'] is not None for r in bd)}")
    print(f"mean NC time per model:                      {np.mean([r['t_nc'] for r in rows]):.2f}s "
          f"(cnn {np.mean([r['t_nc'] for r in rows if r['name'].startswith('cnn')]):.2f}s, one torch thread)")
    misses = [f"{r['name']} (AI {r['ai']:.2f}, seed {r['nc_seed']})" for r in cl if r["ai"] >= 2] + \
        [f"{r['name']} (AI {r['ai']:.2f}, found {r['found']}, seed {r['nc_seed']})" for r in bd
         if not (r["ai"] > 2 and r["found"] == r["target"])]
    if misses:
        print(f"misses:                                      {'; '.join(misses)}")
    return ok_clean == len(cl) and ok_bad == len(bd) and auroc >= 0.95 and len(cl) >= 10 and len(bd) >= 10


if __name__ == "__main__":
    raise SystemExit(main())
