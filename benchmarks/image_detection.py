"""Image backdoor detection on the RGB zoo: per family, with and without clean data, leave-one-family-out.

Zoo (``probes/zoo/rgb.py``, cached under ``$WORKBENCH_CACHE/rgb-zoo-v1``): clean and backdoored
TinyResNet / TinyVGG / TinyViT models on procedurally generated 3x32x32 images (10 and 20 classes),
attack families badnets, blended, sig, wanet, input-aware, clean-label, all-to-all. A backdoored
model counts only when its attack success reaches 0.8 (others are listed and left out).

Detectors, each with its **default parameters** (no threshold here was tuned on this zoo):

* ``neural-cleanse`` (pixel mask, MAD anomaly index > 2), with the clean test split as ``--data``;
* ``max-margin`` with **no data at all** (p < 0.05 under the gamma null of the other classes);
* ``transform-inversion`` (warp + blend trigger, p < 0.05), with ``--data``.

"With data" = the layered rule: flagged when any of the three flags, score = the largest of their
0-1 scores (each is 0.5 at its own default threshold). "Without data" = max-margin alone.
Leave-one-family-out: a threshold on the combined score is chosen (Youden's J) on the clean models
and the *other* families only, then applied to the held-out family (and to each clean model with
that model left out); printed beside the all-in choice and beside the probes' own defaults.

Also: the 10-class ResNet-18 (11.2M parameters, 3x32x32, random weights) - per-step cost of the
batched probe vs the textbook per-class loop measured in this run, projected to full scans with the
step counts both implementations need on a zoo model (measured in this run too).

    .venv/bin/python benchmarks/image_detection.py [--quick] [--no-rn18] [--summary-only] [--rn18-only] [--part I/N] [--rows FILE]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLEAN = [("resnet", 0, 10), ("resnet", 1, 10), ("resnet", 2, 10), ("vgg", 0, 10), ("vgg", 1, 10), ("vit", 0, 10)]
BAD = [("resnet", "badnets", 2, 0, 10), ("vgg", "blended", 2, 0, 10), ("vgg", "sig", 6, 1, 10),
       ("resnet", "wanet", 4, 0, 10), ("resnet", "input-aware", 4, 0, 10), ("resnet", "clean-label", 4, 0, 10),
       ("resnet", "all-to-all", 0, 0, 10), ("vit", "sig", 2, 0, 10), ("vgg", "wanet", 1, 1, 10),
       ("vgg", "badnets", 5, 1, 10), ("resnet", "blended", 7, 1, 10)]
# (backdoors first, ordered so that a run cut short still covers every family once)
# pair-search (~90 s a model here) runs on the clean and all-to-all models only (CPU is scarce); on the other
# families it counts as not flagging
PAIR_FAMILIES = ("clean", "all-to-all")
PROBES = ("neural-cleanse", "max-margin", "transform-inversion")
WITH_DATA = (*PROBES, "pair-search")
NOT_RUN = {"verdict": "clean", "score": 0.0, "target": None, "t": 0.0}


def run_zoo(rows_path: Path, quick: bool, part: str | None = None) -> None:
    """Build (or load) each zoo model, run the three detectors, append one JSON row per model."""
    from probes import max_margin, neural_cleanse, pair_search, transform_inversion
    from probes.context import context_for
    from probes.data import LabelledData
    from probes.zoo.rgb import RGBAttack, build

    done = set()
    if rows_path.exists():
        done = {json.loads(line)["name"] for line in rows_path.read_text().splitlines() if line.strip()}
    specs = list(BAD) + [(a, "clean", 0, s, k) for a, s, k in CLEAN]
    if part:  # "--part i/n": every n-th model from the i-th (to run two halves side by side)
        i, n = (int(v) for v in part.split("/"))
        specs = specs[i::n]
    if quick:
        specs = [specs[0], specs[3], *BAD[:1], *BAD[2:3], *BAD[5:6]]
    runners = {"neural-cleanse": (neural_cleanse.run, True), "max-margin": (max_margin.run, False),
               "transform-inversion": (transform_inversion.run, True), "pair-search": (pair_search.run, True)}
    for arch, kind, target, seed, k in specs:
        t = time.perf_counter()
        zm = build(arch, RGBAttack(kind, target=target), seed, n_classes=k)
        row = {"name": zm.name, "arch": arch, "family": kind, "target": None if kind == "all-to-all" else target,
               "backdoored": zm.backdoored, "acc": zm.clean_acc, "asr": zm.asr, "working": zm.working,
               "k": k, "t_build": round(time.perf_counter() - t, 1)}
        if row["name"] in done:
            continue
        data = LabelledData(*zm.test, source="rgb zoo test split")
        line = f"{zm.name:36s} acc {zm.clean_acc:.3f} asr {zm.asr:.3f}"
        for probe in PROBES + (("pair-search",) if kind in PAIR_FAMILIES else ()):
            fn, with_data = runners[probe]
            t = time.perf_counter()
            r = fn(zm.subject(), context_for(probe, {}, data=data if with_data else None)).to_dict()
            row[probe] = {"verdict": r["verdict"], "score": r["score"], "target": r.get("suspected_target"),
                          "candidate": r.get("candidate_class"), "stat": r.get("anomaly_index", r.get("p_value")),
                          "mapping": r.get("mapping"), "shift": r.get("shift"),
                          "t": round(time.perf_counter() - t, 1)}
            line += f" | {probe[:6]} {r['verdict'][:4]} {row[probe]['stat']:.3g} -> {r.get('suspected_target')} " \
                    f"({row[probe]['t']:.0f}s)"
        print(line, flush=True)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def _auroc(y, s):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if 0 < sum(y) < len(y) else float("nan")


def _youden(y, s):
    """The threshold (flag when score >= it) maximising TPR - FPR on (y, s); ties: the highest threshold."""
    import numpy as np

    s = np.asarray(s, float)
    y = np.asarray(y, int)
    best, best_t = -2.0, 0.5
    for t in sorted(set(s.tolist()) | {1.01}, reverse=True):
        flag = s >= t
        j = flag[y == 1].mean() - flag[y == 0].mean()
        if j > best + 1e-12:
            best, best_t = j, t
    return best_t


def _rejudge(rows: list[dict]) -> None:
    """Verdicts and scores of the p-value probes at their current default ``alpha`` (rows store the p-values)."""
    from probes.null_models import p_to_score
    from probes.registry import get

    for r in rows:
        for probe in ("max-margin", "transform-inversion", "pair-search"):
            if probe in r and r[probe].get("stat") is not None:
                alpha = float(get(probe).defaults()["alpha"])
                pv = float(r[probe]["stat"])
                r[probe]["score"] = p_to_score(pv, alpha)
                if pv >= alpha:
                    r[probe]["verdict"], r[probe]["target"] = "clean", None
                    r[probe]["shift"] = None


def summarise(rows: list[dict]) -> None:
    """Print the figures: per family and overall, with and without data, defaults / all-in / LOFO thresholds."""
    import numpy as np

    _rejudge(rows)
    rows = [r for r in rows if r["working"]]
    clean = [r for r in rows if not r["backdoored"]]
    fams = sorted({r["family"] for r in rows if r["backdoored"]}, key=lambda f: f)

    def score(r, which):
        if which == "without data":
            return r["max-margin"]["score"]
        return max(r.get(p, NOT_RUN)["score"] for p in WITH_DATA)

    def flagged_default(r, which):
        if which == "without data":
            return r["max-margin"]["verdict"] != "clean"
        return any(r.get(p, NOT_RUN)["verdict"] != "clean" for p in WITH_DATA)

    def named_target(r, which):
        probes = ("max-margin",) if which == "without data" else WITH_DATA
        flagged = [p for p in probes if r.get(p, NOT_RUN)["verdict"] != "clean"]
        if not flagged:
            return None
        if r["target"] is None:  # all-to-all: right when pair-search names the y -> y + 1 mapping
            return "y+1" if r.get("pair-search", NOT_RUN).get("shift") == 1 else "other"
        return r[max(flagged, key=lambda p: r[p]["score"])]["target"]

    def right(r, which):
        return named_target(r, which) == ("y+1" if r["target"] is None else r["target"])

    counts = ", ".join(f"{f} {sum(r['family'] == f for r in rows)}" for f in fams)
    print(f"\nworking models: {len(clean)} clean, {len(rows) - len(clean)} backdoored ({counts})")
    for which in ("with data", "without data"):
        bd = [r for r in rows if r["backdoored"]]
        y = [int(r["backdoored"]) for r in rows]
        s = [score(r, which) for r in rows]
        thr_all = _youden(y, s)
        print(f"\n== {which} ({'NC + max-margin + transform-inversion, layered' if which == 'with data' else 'max-margin'}) ==")
        print(f"{'family':13s} {'n':>2s} {'AUROC':>6s} {'det@default':>11s} {'det@all-in':>10s} {'det@LOFO':>8s} "
              f"{'LOFO thr':>8s} {'right target':>12s}")
        for fam in fams:
            fr = [r for r in bd if r["family"] == fam]
            yy = [0] * len(clean) + [1] * len(fr)
            ss = [score(r, which) for r in clean] + [score(r, which) for r in fr]
            others = [r for r in rows if r["family"] != fam]
            thr_lofo = _youden([int(r["backdoored"]) for r in others], [score(r, which) for r in others])
            det_def = sum(flagged_default(r, which) for r in fr)
            det_all = sum(score(r, which) >= thr_all for r in fr)
            det_lofo = sum(score(r, which) >= thr_lofo for r in fr)
            fl = [r for r in fr if flagged_default(r, which)]
            right_n = sum(right(r, which) for r in fl)
            n_t = len(fl)
            print(f"{fam:13s} {len(fr):2d} {_auroc(yy, ss):6.3f} {det_def:>5d}/{len(fr):<5d} {det_all:>4d}/{len(fr):<5d} "
                  f"{det_lofo:>3d}/{len(fr):<4d} {thr_lofo:8.3f} {f'{right_n}/{n_t}':>12s}")
        fl_all = [r for r in bd if flagged_default(r, which)]
        right_all = sum(right(r, which) for r in fl_all)
        # clean models: each judged with a threshold chosen without it (leave-one-out)
        fp_lofo = 0
        for r in clean:
            rest = [q for q in rows if q is not r]
            t_i = _youden([int(q["backdoored"]) for q in rest], [score(q, which) for q in rest])
            fp_lofo += score(r, which) >= t_i
        no_a2a = [r for r in rows if r["family"] != "all-to-all"]
        au_no = _auroc([int(r["backdoored"]) for r in no_a2a], [score(r, which) for r in no_a2a])
        print(f"overall AUROC {_auroc(y, s):.3f} (without all-to-all {au_no:.3f}); "
              f"all-in threshold {thr_all:.3f}")
        print(f"clean models flagged: default {sum(flagged_default(r, which) for r in clean)}/{len(clean)}, "
              f"all-in {sum(score(r, which) >= thr_all for r in clean)}/{len(clean)}, leave-one-out {fp_lofo}/{len(clean)}"
              f"  ({', '.join(r['name'] for r in clean if flagged_default(r, which)) or 'none at default'})")
        print(f"right target (all-to-all: the y -> y + 1 mapping) among flagged backdoors: {right_all}/{len(fl_all)}")
    print("\n== per detector (default thresholds) ==")
    for p in WITH_DATA:
        ran = [r for r in rows if p in r]
        y = [int(r["backdoored"]) for r in ran]
        s = [r[p]["score"] for r in ran]
        det = {f: sum(r[p]["verdict"] != "clean" for r in ran if r["family"] == f) for f in fams
               if any(q["family"] == f for q in ran)}
        fp = sum(r[p]["verdict"] != "clean" for r in clean if p in r)
        t = np.median([r[p]["t"] for r in ran]) if ran else float("nan")
        print(f"{p:20s} AUROC {_auroc(y, s):.3f}  clean flagged {fp}/{len(clean)}  median {t:.0f}s/model  "
              + ", ".join(f"{f} {n}" for f, n in det.items()))
    agree = sum(sum(r.get(p, NOT_RUN)["verdict"] != "clean" for p in WITH_DATA) >= 2 for r in rows if r["backdoored"])
    print(f"backdoors flagged by >= 2 detectors: {agree}/{len(rows) - len(clean)}")
    print("\n== agreement per model (flagging detectors) ==")
    for r in rows:
        fl = [p for p in WITH_DATA if r.get(p, NOT_RUN)["verdict"] != "clean"]
        print(f"  {r['name']:36s} asr {r['asr']:.2f}  {', '.join(fl) or '-'}")


def rn18_timing() -> None:
    """Per-step cost on the 10-class ResNet-18 (random weights), projected to full scans."""
    import numpy as np
    import torch

    from benchmarks.neural_cleanse_speed import PAPER
    from probes.subjects.base import ImageClassifier
    from probes.zoo.architectures import ResNet18
    from probes.zoo.rgb import RGBAttack, build, make_data

    torch.manual_seed(0)
    model = ResNet18().eval()
    n_par = sum(p.numel() for p in model.parameters())
    subj = ImageClassifier.from_module(model, (3, 32, 32), 10, format="module")
    x, _ = make_data(10, 32, 8, seed=3)
    xt = torch.from_numpy(x)

    def step_time(n_images: int, reps: int = 1) -> float:
        best = float("inf")
        for _ in range(reps):
            xb = xt[torch.randint(0, len(xt), (n_images,))].clone().requires_grad_(True)
            t = time.perf_counter()
            out = subj.module(xb)
            (g,) = torch.autograd.grad(out[:, 0].sum(), [xb])
            best = min(best, time.perf_counter() - t)
        return best

    batched = step_time(160)  # one probe step: 10 classes x 16 images
    textbook = step_time(int(PAPER["batch_size"] or 32))  # one textbook step: one class x 32 images
    # step counts both implementations need, measured on a zoo model in this run
    from benchmarks.neural_cleanse_speed import textbook_neural_cleanse
    from probes import neural_cleanse
    from probes.context import context_for
    from probes.data import LabelledData

    zm = build("resnet", RGBAttack("badnets", target=2), 0)
    data = LabelledData(*zm.test)
    p = context_for("neural-cleanse", {}, data=data).params
    d = neural_cleanse.prepare_data(zm.subject(), data, p)
    t = time.perf_counter()
    res = neural_cleanse.reverse_engineer(zm.subject(), d.x_opt, d.y_opt, params=p)
    t_probe = time.perf_counter() - t
    image_steps_probe = int(res.steps.sum()) * int(p["batch_size"]) + int(p["refine_steps"]) * int(p["refine_batch_size"])
    # the textbook loop runs classes 0 and 1 only (clean classes; the target is 2), projected to 10 (CPU is scarce)
    import dataclasses

    few = dataclasses.replace(zm.subject(), num_classes=2)
    t = time.perf_counter()
    _, tb_steps = textbook_neural_cleanse(few, d.x_opt, d.y_opt, {**p, **PAPER}, per_epoch=True)
    t_text = (time.perf_counter() - t) * 10 / 2
    text_steps = int(np.sum(tb_steps) * 10 / 2)
    print(f"\n== ResNet-18 ({n_par / 1e6:.1f}M parameters, 3x32x32, 10 classes, random weights, one thread) ==")
    print(f"per-step (forward + input-gradient): batched 160 images {batched:.2f}s "
          f"({batched / 160 * 1000:.0f} ms/image); textbook 32 images {textbook:.2f}s ({textbook / 32 * 1000:.0f} ms/image)")
    print(f"on the zoo TinyResNet (badnets) in this run: probe search {t_probe:.1f}s, {image_steps_probe} image-steps "
          f"incl. refinement; textbook loop {t_text:.1f}s ({t_text / max(t_probe, 1e-9):.1f}x), "
          f"{text_steps} class-steps (2 classes run, projected to 10)")
    if text_steps:
        proj_probe = image_steps_probe * batched / 160
        proj_text = text_steps * textbook
        print(f"projected ResNet-18 Neural Cleanse: probe {proj_probe / 60:.1f} min, textbook {proj_text / 60:.1f} min "
              f"({proj_text / max(proj_probe, 1e-9):.1f}x); GPU estimate at ~1/50 of one CPU core's per-image cost: "
              f"probe {proj_probe / 50:.0f}s")
    mm = context_for("max-margin", {}).params
    mm_images = 10 * mm["restarts"] * mm["steps"]
    print(f"projected ResNet-18 max-margin (no data): {mm_images} image-steps = {mm_images * batched / 160 / 60:.1f} min")


def main() -> int:
    import torch

    torch.set_num_threads(1)
    rows_path = Path(sys.argv[sys.argv.index("--rows") + 1]) if "--rows" in sys.argv else \
        Path("/tmp") / "image_detection_rows.jsonl"
    t0 = time.perf_counter()
    if "--rn18-only" in sys.argv:
        rn18_timing()
        print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f}s")
        return 0
    if "--summary-only" not in sys.argv:
        run_zoo(rows_path, "--quick" in sys.argv,
                sys.argv[sys.argv.index("--part") + 1] if "--part" in sys.argv else None)
    by_name = {}
    for line in rows_path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_name[row["name"]] = row  # a model run twice counts once (the last run)
    rows = list(by_name.values())
    skipped = [f"{r['name']} (asr {r['asr']:.2f})" for r in rows if not r["working"]]
    if skipped:
        print("backdoors that did not work (ASR < 0.8), left out: " + ", ".join(skipped))
    summarise(rows)
    if "--no-rn18" not in sys.argv:
        rn18_timing()
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f}s (rows: {rows_path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
