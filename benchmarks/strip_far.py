"""STRIP figures on the digits zoo: FRR and FAR at a 1% FRR target, next to a wrong-axis baseline.

For each subject: the clean digits test split plus 100 test images carrying the
model's real trigger (``is_poison``), and the Neural Cleanse-recovered trigger
stamped on clean inputs. Prints, per model, the measured FRR, the FAR on the
poisoned inputs (ground truth) and on the stamped ones, and the time.

The baseline in the same process is the peer toolbox's bug: the entropy taken
along the wrong axis (``scipy.stats.entropy(P)`` of the copies x classes matrix,
i.e. across the superimposed copies for each class, averaged over classes),
computed on exactly the same predictions and calibrated the same way.

    .venv/bin/python benchmarks/strip_far.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUBJECTS = [("cnn", "badnets", 3, 0), ("cnn", "blended", 5, 1), ("mlp", "badnets", 7, 1),
            ("wide-cnn", "badnets", 9, 0), ("cnn", "clean", 0, 0)]


def both_entropies(subject, x, pool, n_copies, rng, value_range):
    """Per input: STRIP entropy across classes per copy (the paper) and the wrong-axis variant, same predictions."""
    import numpy as np
    import torch
    from scipy.stats import entropy

    picks = rng.integers(0, len(pool), size=(len(x), n_copies))
    right, wrong = np.zeros(len(x)), np.zeros(len(x))
    with torch.no_grad():
        for i in range(len(x)):
            mix = np.clip(x[i][None] + pool[picks[i]], *value_range).astype(np.float32)
            p = torch.softmax(subject.forward(torch.from_numpy(mix)).float(), dim=1).numpy()  # (copies, classes)
            right[i] = entropy(p, axis=1, base=2).mean()
            wrong[i] = entropy(p, axis=0, base=2).mean()
    return right, wrong


def main() -> int:
    import numpy as np

    from workbench.threads import apply_threads
    threads = apply_threads()  # the product's default, as a user gets it
    print(f"torch threads: {threads} (the workbench default, workbench/threads.py)")
    from probes import neural_cleanse, strip
    from probes.context import context_for
    from probes.data import LabelledData
    from probes.zoo.digits import AttackSpec, apply_trigger, build_model, load_digits

    _, _, xte, yte = load_digits()
    print(f"{'model':24s} {'asr':>5s} {'FRR':>6s} {'FAR poisoned':>13s} {'FAR stamped':>12s} {'verdict':>11s} "
          f"{'STRIP s':>8s} | wrong-axis baseline: {'FRR':>6s} {'FAR poisoned':>13s}")
    for arch, kind, target, seed in SUBJECTS:
        zm = build_model(arch, AttackSpec(kind, target=target, rate=0.1), seed=seed)
        subject = zm.subject()
        attack = zm.attack if kind != "clean" else AttackSpec("badnets", target=target)
        sel = np.flatnonzero(yte != target)[:100]
        x = np.concatenate([xte, apply_trigger(xte[sel], attack)])
        y = np.concatenate([yte, yte[sel]])
        is_p = np.r_[np.zeros(len(xte), bool), np.ones(len(sel), bool)]
        data = LabelledData(x, y, is_p, source="digits test + 100 triggered")
        nc = neural_cleanse.run(subject, context_for("neural-cleanse",
                                                     data=LabelledData(xte, yte, source="digits test"))).to_dict()
        trig = {k: nc[k] for k in ("mask", "pattern", "suspected_target")}
        t = time.perf_counter()
        d = strip.run(subject, context_for("strip", data=data, earlier={"neural-cleanse": trig})).to_dict()
        t_strip = time.perf_counter() - t
        # the baseline on the same split sizes: overlay pool / calibration / test thirds of the clean part
        rng = np.random.default_rng(0)
        perm = rng.permutation(len(xte))
        third = len(perm) // 3
        pool, cal, test = xte[perm[:third]], xte[perm[third:2 * third]], xte[perm[2 * third:]]
        poisoned = x[is_p]
        r_cal, w_cal = both_entropies(subject, cal, pool, 32, rng, (0.0, 1.0))
        r_test, w_test = both_entropies(subject, test, pool, 32, rng, (0.0, 1.0))
        r_p, w_p = both_entropies(subject, poisoned, pool, 32, rng, (0.0, 1.0))
        thr_w = np.quantile(w_cal, 0.01)
        frr_w, far_w = float((w_test < thr_w).mean()), float((w_p >= thr_w).mean())
        label = f"{zm.name}" + (" (BadNets stamp)" if kind == "clean" else "")
        print(f"{label:24s} {zm.asr:5.2f} {100 * d['frr']:5.1f}% {100 * d['far_poisoned']:12.1f}% "
              f"{(100 * d['far_stamped']) if d['far_stamped'] is not None else float('nan'):11.1f}% "
              f"{d['verdict']:>11s} {t_strip:8.2f} | {'':20s} {100 * frr_w:5.1f}% {100 * far_w:12.1f}%", flush=True)
    print("\nFAR = triggered inputs NOT flagged (lower is better); FRR = clean inputs flagged; target FRR 1%.\n"
          "For the clean model the 'poisoned' inputs carry a BadNets stamp that the model never learned: "
          "a high FAR there is right (nothing to detect).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
