"""Evaluate the fingerprint ensemble on a locally trained zoo (issue 6); one command:

    .venv/bin/python benchmarks/fingerprint_eval.py [--cache DIR] [--no-nc] [--seeds 5] [--no-data]

1. Builds (or loads from ``<cache>/fingerprint-zoo-v1``) the zoo below
   (:func:`zoo_entries`): 40 clean digit classifiers (cnn, mlp,
   wide-cnn; different seeds) and 30 backdoored ones (15 BadNets, 15 blended;
   targets, poison rates, patch sizes and blend strengths varied).
   A backdoored model whose attack failed (ASR < 0.5 on held-out data) is not
   counted as a positive (listed separately).
2. Fingerprints every model (reference inputs: the seeded synthetic set plus
   192 held-out digits, as ``--data``), optionally with Neural Cleanse
   meta-features (cached per model).
3. For 5 seeds: 80/20 split of the clean models; the 80% is the baseline; test
   on the held-out 20% clean plus every backdoored model. Each of 6 detectors ×
   4 representations is fitted on the baseline; the trust score is the
   calibrated ensemble of :mod:`probes.fingerprint.calibration`.
4. Writes the markdown table (mean AUROC, detection rate at 10% FPR) to stdout
   and to ``docs/fingerprint-eval.md``, with speed figures and ratios to a
   plain forward pass measured in the same process.

Cost: the first run trains 70 small models and runs Neural Cleanse on each
(about 30 minutes on a loaded 2-core machine; ``--no-nc`` skips Neural
Cleanse); re-runs only load the cache and take about two minutes.

Detection at 10% FPR is read from each split's ROC curve (interpolated; with 8
clean test models per split a 10% FPR allows no false positive at a step), and,
for the trust score, also at a threshold fixed in advance from the baseline
alone (its calibrated 90th percentile), with the realised FPR on held-out clean.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# -- the zoo: clean and backdoored digit classifiers, trained once and cached on disk ------------
# Each model is kept as a state_dict (torch.save) plus a JSON sidecar under
# <cache>/fingerprint-zoo-v<ZOO_VERSION>/; Neural Cleanse results are cached next to it.

ZOO_VERSION = 1
ARCHS = ("cnn", "mlp", "wide-cnn")


@dataclass(frozen=True)
class Entry:
    arch: str
    kind: str  # clean | badnets | blended
    seed: int
    target: int = 0
    rate: float = 0.1
    patch_size: int = 3
    blend_alpha: float = 0.2

    @property
    def name(self) -> str:
        if self.kind == "clean":
            return f"{self.arch}-clean-s{self.seed}"
        extra = f"p{self.patch_size}" if self.kind == "badnets" else f"a{self.blend_alpha:g}"
        return f"{self.arch}-{self.kind}-t{self.target}-r{self.rate:g}-{extra}-s{self.seed}"


def zoo_entries(n_clean: int = 40, n_badnets: int = 15, n_blended: int = 15) -> list[Entry]:
    """The zoo's recipe: architectures round-robin, attack targets / rates / sizes varied by a seeded RNG."""
    rng = np.random.default_rng(2026)
    out = [Entry(ARCHS[i % 3], "clean", 100 + i) for i in range(n_clean)]
    for i in range(n_badnets):
        out.append(Entry(ARCHS[i % 3], "badnets", 300 + i, target=int(rng.integers(10)),
                         rate=float(rng.choice([0.05, 0.1, 0.15])), patch_size=int(rng.choice([3, 4]))))
    for i in range(n_blended):
        out.append(Entry(ARCHS[i % 3], "blended", 500 + i, target=int(rng.integers(10)),
                         rate=float(rng.choice([0.05, 0.1, 0.15])), blend_alpha=float(rng.choice([0.15, 0.2]))))
    return out


def cache_root(cache_dir: str | None = None) -> Path:
    base = cache_dir or os.environ.get("WORKBENCH_CACHE") or os.path.join(tempfile.gettempdir(), "trojan-workbench-cache")
    p = Path(base) / f"fingerprint-zoo-v{ZOO_VERSION}"
    p.mkdir(parents=True, exist_ok=True)
    return p


def _attack(e: Entry):
    from probes.zoo.digits import AttackSpec

    if e.kind == "clean":
        return AttackSpec()
    return AttackSpec(e.kind, target=e.target, rate=e.rate, patch_size=e.patch_size, blend_alpha=e.blend_alpha,
                      seed=e.seed)


def load_or_build(e: Entry, root: Path, log=print):
    """``(ImageClassifier subject, meta dict)`` for a zoo entry, training it the first time."""
    import torch

    from probes.subjects.base import ImageClassifier
    from probes.zoo.digits import build_model, make_architecture

    wpath, mpath = root / f"{e.name}.pt", root / f"{e.name}.json"
    if wpath.exists() and mpath.exists():
        meta = json.loads(mpath.read_text())
        module = make_architecture(e.arch, tuple(meta["input_shape"]), meta["num_classes"])
        module.load_state_dict(torch.load(wpath, weights_only=True))
    else:
        t0 = time.perf_counter()
        zm = build_model(e.arch, _attack(e), seed=e.seed)
        module = zm.module
        meta = {"entry": asdict(e), "name": e.name, "clean_acc": zm.clean_acc, "asr": zm.asr,
                "input_shape": list(zm.input_shape), "num_classes": zm.num_classes,
                "train_s": time.perf_counter() - t0}
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, wpath)
        mpath.write_text(json.dumps(meta, indent=1))
        log(f"  trained {e.name}: acc {zm.clean_acc:.3f} asr {zm.asr:.3f} ({meta['train_s']:.1f}s)")
    subj = ImageClassifier.from_module(module, tuple(meta["input_shape"]), meta["num_classes"], device="cpu",
                                       path=str(wpath), format="state_dict", zoo=e.name)
    return subj, meta


def reference_data():
    """The examiner's clean reference images: the digits test split (never used for training)."""
    from probes.data import LabelledData
    from probes.zoo.digits import load_digits

    _, _, xte, yte = load_digits(16, seed=0)
    return LabelledData(xte, yte, source="digits-test")


def nc_result(subject, name: str, root: Path, data, steps: int = 150) -> dict:
    """Neural Cleanse on a zoo model (cached): the result dict without masks/patterns."""
    import hashlib

    from probes.context import context_for
    from probes.neural_cleanse import defaults as nc_defaults
    from probes.neural_cleanse import run as nc_run

    # keyed by the probe's settings too: results of an older Neural Cleanse are not reused
    settings = hashlib.sha256(json.dumps(nc_defaults(), sort_keys=True, default=str).encode()).hexdigest()[:10]
    path = root / f"{name}.nc{steps}-{settings}.json"
    if path.exists():
        return json.loads(path.read_text())

    r = nc_run(subject, context_for("neural-cleanse", {"steps": steps, "refine_steps": 0}, data=data)).to_dict()
    keep = {k: r[k] for k in ("probe", "verdict", "score", "anomaly_index", "suspected_target", "per_class",
                              "duration_s")}
    path.write_text(json.dumps(keep))
    return keep



# feature sets compared (prefix lists; None = every feature the models share)
FEATURE_SETS = {
    "behaviour": ("trig.", "pen.trig.", "out.", "w.head.", "meta."),  # the probe's default groups
    "all": None,
}


def tpr_at_fpr(y, s, fpr_target=0.10) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    return float(np.interp(fpr_target, fpr, tpr))


def auroc(y, s) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def build(args, log):

    from workbench.threads import apply_threads
    threads = apply_threads()  # the product's default, as a user gets it
    print(f"torch threads: {threads} (the workbench default, workbench/threads.py)")
    from probes.fingerprint import compute_fingerprint

    root = cache_root(args.cache)
    data = None if args.no_data else reference_data()
    models = []
    t_build = time.perf_counter()
    for e in zoo_entries():
        if args.only_cached and not (root / f"{e.name}.json").exists():
            continue
        subj, meta = load_or_build(e, root, log=log)
        prior = None
        if not args.no_nc:
            prior = {"neural-cleanse": nc_result(subj, e.name, root, data)}
        fkey = root / f"{e.name}.fp-{'d' if data is not None else 'n'}{'-nc' if prior else ''}.json"
        from probes.fingerprint.features import FEATURE_VERSION, Fingerprint

        fp = None
        if fkey.exists():
            rec = json.loads(fkey.read_text())
            if rec.get("version") == FEATURE_VERSION:
                fp = Fingerprint.from_record(rec)
        if fp is None:
            fp = compute_fingerprint(subj, data=data, seed=0, prior_results=prior, sha256=e.name)
            fkey.write_text(json.dumps(fp.to_record()))
        models.append({"entry": e, "meta": meta, "fp": fp, "subject": subj})
    log(f"zoo ready: {len(models)} models in {time.perf_counter() - t_build:.0f}s")
    return models, data


def evaluate(models, *, seeds: int, feature_groups, log):
    from probes.fingerprint import DEFAULT_REPRESENTATIONS, common_features, feature_matrix
    from probes.fingerprint import calibration as C
    from probes.fingerprint.ensemble import DETECTORS, REPRESENTATIONS, Pipeline

    clean = [m for m in models if m["entry"].kind == "clean"]
    bad = [m for m in models if m["entry"].kind != "clean" and m["meta"]["asr"] >= 0.5]
    combos = [(d, r) for d in DETECTORS for r in REPRESENTATIONS]
    res = {c: {"auroc": [], "tpr": []} for c in combos}
    trust = {"auroc": [], "tpr": [], "cal_tpr": [], "cal_fpr": [], "high_tpr": [], "high_fpr": []}
    per_kind = {"badnets": [], "blended": []}
    names_used = None
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        perm = rng.permutation(len(clean))
        n_base = int(round(0.8 * len(clean)))
        base = [clean[i]["fp"] for i in perm[:n_base]]
        test = [clean[i] for i in perm[n_base:]] + bad
        y = np.array([m["entry"].kind != "clean" for m in test])
        # features every zoo model has (one alignment for the whole split); B = baseline rows only
        names = common_features(base + [m["fp"] for m in test], feature_groups)
        names_used = names
        B, T = feature_matrix(base, names), feature_matrix([m["fp"] for m in test], names)
        for det, rep in combos:
            s = Pipeline(det, rep, seed).fit(B).score(T)
            res[(det, rep)]["auroc"].append(auroc(y, s))
            res[(det, rep)]["tpr"].append(tpr_at_fpr(y, s))
        cal = C.calibrate(B, representations=DEFAULT_REPRESENTATIONS, seed=seed)
        out = C.score_against(cal, B, T)
        ts = out["trust_score"]
        agg, a_null = out["aggregate"], out["aggregate_null"]
        trust["auroc"].append(auroc(y, agg))
        trust["tpr"].append(tpr_at_fpr(y, agg))
        thr = np.quantile(a_null, 0.90)
        trust["cal_tpr"].append(float((agg[y] > thr).mean()))
        trust["cal_fpr"].append(float((agg[~y] > thr).mean()))
        trust["high_tpr"].append(float((ts[y] > 60).mean()))
        trust["high_fpr"].append(float((ts[~y] > 60).mean()))
        for kind in per_kind:
            sel = np.array([m["entry"].kind in ("clean", kind) for m in test])
            per_kind[kind].append(auroc(y[sel], agg[sel]))
        log(f"  split {seed}: trust AUROC {trust['auroc'][-1]:.3f}, TPR@10%FPR {trust['tpr'][-1]:.2f}")
    return res, trust, per_kind, names_used, len(clean), len(bad)


ABLATION = {
    "trigger sensitivity only (trig., pen.trig.)": ("trig.", "pen.trig."),
    "output distribution only (out.)": ("out.",),
    "head weights only (w.head.)": ("w.head.",),
    "per-layer activations + per-tensor weights (act., w.<tensor>)": ("act.", "w."),
}


def drivers(models, *, seeds: int, log) -> list[str]:
    """Which features drive the result: single-feature AUROC and a trust-score ablation by feature group."""
    from probes.fingerprint import common_features, feature_matrix

    pos = [m for m in models if m["entry"].kind == "clean" or m["meta"]["asr"] >= 0.5]
    y = np.array([m["entry"].kind != "clean" for m in pos])
    names = common_features([m["fp"] for m in pos])
    X = feature_matrix([m["fp"] for m in pos], names)
    single = sorted(((max(a, 1 - a), a, n) for n, a in ((n, auroc(y, X[:, j])) for j, n in enumerate(names))),
                    reverse=True)[:10]
    lines = ["## What drives the result", "",
             "Single features, AUROC of the raw value over the whole zoo (no fitting; < 0.5 means lower in "
             "backdoored models):", "", "| feature | AUROC |", "|---|---|"]
    lines += [f"| `{n}` | {a:.3f} |" for _, a, n in single]
    lines += ["", "Trust score with one feature group at a time (same protocol):", "",
              "| features | n | trust AUROC | detection @10% FPR |", "|---|---|---|---|"]
    for label, groups in ABLATION.items():
        if groups == ("act.", "w."):
            groups_eff = ("act.", "w.")
            arch_models = [m for m in models if m["entry"].arch == "cnn"]
            res = _trust_only(arch_models, seeds, groups_eff, exclude=("w.head.", "w.all.", "w.log_params"))
            label += " — cnn models only (same architecture)"
        else:
            res = _trust_only(models, seeds, groups)
        if res is None:
            continue
        lines.append(f"| {label} | {res[2]} | {res[0]:.3f} | {100 * res[1]:.1f}% |")
        log(f"  ablation {label}: {res[0]:.3f}")
    return lines + [""]


def _trust_only(models, seeds, groups, exclude=()):
    from probes.fingerprint import DEFAULT_REPRESENTATIONS, common_features, feature_matrix
    from probes.fingerprint import calibration as C

    clean = [m for m in models if m["entry"].kind == "clean"]
    bad = [m for m in models if m["entry"].kind != "clean" and m["meta"]["asr"] >= 0.5]
    if len(clean) < 10 or not bad:
        return None
    au, tp = [], []
    n_feat = 0
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        perm = rng.permutation(len(clean))
        n_base = int(round(0.8 * len(clean)))
        base = [clean[i]["fp"] for i in perm[:n_base]]
        test = [clean[i] for i in perm[n_base:]] + bad
        y = np.array([m["entry"].kind != "clean" for m in test])
        names = [n for n in common_features(base + [m["fp"] for m in test], groups) if not n.startswith(exclude)]
        n_feat = len(names)
        B, T = feature_matrix(base, names), feature_matrix([m["fp"] for m in test], names)
        cal = C.calibrate(B, representations=DEFAULT_REPRESENTATIONS, seed=seed)
        agg = C.score_against(cal, B, T)["aggregate"]
        au.append(auroc(y, agg))
        tp.append(tpr_at_fpr(y, agg))
    return float(np.mean(au)), float(np.mean(tp)), n_feat


def speed(models, data, log):
    """Fingerprint one small classifier; score against a 50-model baseline; a plain forward pass as the ratio base."""
    import torch

    from probes.fingerprint import compute_fingerprint, score_fingerprint

    subj = next(m["subject"] for m in models if m["entry"].arch == "cnn")
    x = np.random.default_rng(0).uniform(0, 1, size=(1000, *subj.input_shape)).astype(np.float32)

    def timed(fn, reps=3):
        best_w, best_c = 1e9, 1e9
        for _ in range(reps):
            w, c = time.perf_counter(), time.process_time()
            fn()
            best_w, best_c = min(best_w, time.perf_counter() - w), min(best_c, time.process_time() - c)
        return best_w, best_c

    def fwd():
        with torch.no_grad():
            subj.module(torch.from_numpy(x))

    base_w, base_c = timed(fwd)
    fp_w, fp_c = timed(lambda: compute_fingerprint(subj, data=data, seed=0))
    # a 50-model baseline: the 40 clean zoo fingerprints plus 10 of them re-fingerprinted with another seed
    clean = [m for m in models if m["entry"].kind == "clean"]
    extra = [compute_fingerprint(m["subject"], data=data, seed=1, sha256=f"{m['entry'].name}-s1")
             for m in clean[:50 - len(clean)]]
    base = [m["fp"] for m in clean] + extra
    base = base[:50]
    probe = next(m["fp"] for m in models if m["entry"].kind != "clean")
    groups = FEATURE_SETS["behaviour"]
    t0w, t0c = time.perf_counter(), time.process_time()
    score_fingerprint(probe, base, feature_groups=groups, cache_dir=None)
    cold_w, cold_c = time.perf_counter() - t0w, time.process_time() - t0c
    import tempfile

    with tempfile.TemporaryDirectory() as td:
        score_fingerprint(probe, base, feature_groups=groups, cache_dir=td)  # fills the calibration cache
        warm_w, warm_c = timed(lambda: score_fingerprint(probe, base, feature_groups=groups, cache_dir=td))
    return {"forward_1000": (base_w, base_c), "fingerprint": (fp_w, fp_c), "score_cold": (cold_w, cold_c),
            "score_cached": (warm_w, warm_c), "baseline_n": len(base)}


def table(res, trust, per_kind, names, n_clean, n_bad, seeds, label) -> str:
    from probes.fingerprint.ensemble import DETECTORS, REPRESENTATIONS

    lines = [f"### Feature set `{label}` ({len(names)} features)", "",
             "Mean over splits: AUROC / detection rate at 10% FPR (ROC-interpolated).", "",
             "| detector | " + " | ".join(REPRESENTATIONS) + " |", "|---|" + "---|" * len(REPRESENTATIONS)]
    for d in DETECTORS:
        cells = [f"{np.mean(res[(d, r)]['auroc']):.3f} / {100 * np.mean(res[(d, r)]['tpr']):.0f}%"
                 for r in REPRESENTATIONS]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    t = trust
    lines += ["", f"**Trust score** (6 detectors on the standardised raw features, leave-one-out calibrated, "
                  f"max-exceedance aggregate): "
                  f"AUROC **{np.mean(t['auroc']):.3f}** (min {np.min(t['auroc']):.3f}), detection at 10% FPR "
                  f"**{100 * np.mean(t['tpr']):.1f}%**; at the threshold fixed from the baseline alone "
                  f"(its 90th percentile): detection {100 * np.mean(t['cal_tpr']):.1f}% with "
                  f"{100 * np.mean(t['cal_fpr']):.1f}% FPR on held-out clean; high band (> 60): detection "
                  f"{100 * np.mean(t['high_tpr']):.1f}%, FPR {100 * np.mean(t['high_fpr']):.1f}%. "
                  f"Per attack AUROC: BadNets {np.mean(per_kind['badnets']):.3f}, blended "
                  f"{np.mean(per_kind['blended']):.3f}.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None, help="zoo cache dir (default $WORKBENCH_CACHE or a temp dir)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--no-nc", action="store_true", help="skip Neural Cleanse meta-features")
    ap.add_argument("--no-data", action="store_true", help="synthetic reference inputs only")
    ap.add_argument("--only-cached", action="store_true", help="use only zoo models already on disk")
    ap.add_argument("--out", default=str(ROOT / "docs" / "fingerprint-eval.md"))
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    models, data = build(args, log)
    failed = [m["entry"].name + f" (ASR {m['meta']['asr']:.2f})" for m in models
              if m["entry"].kind != "clean" and m["meta"]["asr"] < 0.5]
    parts = []
    summary = {}
    sets = dict(FEATURE_SETS)
    if args.no_nc:
        sets["behaviour"] = tuple(g for g in sets["behaviour"] if g != "meta.")
    else:
        sets["behaviour, no NC"] = tuple(g for g in FEATURE_SETS["behaviour"] if g != "meta.")
        sets["NC meta only"] = ("meta.",)
    for label, groups in sets.items():
        log(f"evaluating feature set {label}")
        res, trust, per_kind, names, n_clean, n_bad = evaluate(models, seeds=args.seeds, feature_groups=groups, log=log)
        parts.append(table(res, trust, per_kind, names, n_clean, n_bad, args.seeds, label))
        summary[label] = (np.mean(trust["auroc"]), np.mean(trust["tpr"]))
    parts += drivers(models, seeds=args.seeds, log=log)
    sp = speed(models, data, log)
    fw = sp["forward_1000"]
    speed_lines = [
        "| operation | wall s | CPU s | ratio to forward pass (CPU) | target |", "|---|---|---|---|---|",
        f"| plain forward pass, 1000 images (baseline) | {fw[0]:.3f} | {fw[1]:.3f} | 1.0x | |",
        f"| fingerprint one cnn classifier | {sp['fingerprint'][0]:.3f} | {sp['fingerprint'][1]:.3f} | "
        f"{sp['fingerprint'][1] / max(fw[1], 1e-9):.1f}x | < 1 s |",
        f"| score against {sp['baseline_n']}-model baseline, first time (calibration) | {sp['score_cold'][0]:.3f} | "
        f"{sp['score_cold'][1]:.3f} | {sp['score_cold'][1] / max(fw[1], 1e-9):.1f}x | |",
        f"| score against {sp['baseline_n']}-model baseline, calibration cached | {sp['score_cached'][0]:.3f} | "
        f"{sp['score_cached'][1]:.3f} | {sp['score_cached'][1] / max(fw[1], 1e-9):.1f}x | < 1 s |",
    ]
    kinds = {k: sum(1 for m in models if m["entry"].kind == k and (k == "clean" or m["meta"]["asr"] >= 0.5))
             for k in ("clean", "badnets", "blended")}
    head = [
        "# Fingerprint ensemble: evaluation on the project's zoo", "",
        f"Generated by `benchmarks/fingerprint_eval.py` ({args.seeds} splits, 80/20 of the clean models as "
        f"baseline/test). Zoo: {kinds['clean']} clean (cnn, mlp, wide-cnn), {kinds['badnets']} BadNets and "
        f"{kinds['blended']} blended backdoors (targets, rates 5-15%, patch 3-4 px, blend alpha 0.15-0.2 varied). "
        f"Reference inputs: {'synthetic + 192 held-out digits' if data is not None else 'synthetic only'}; "
        f"Neural Cleanse meta-features: {'no' if args.no_nc else 'yes (150 steps, cached)'}.",
        f"Backdoored models whose attack failed (ASR < 0.5), not counted as positives: "
        f"{', '.join(failed) if failed else 'none'}.", "",
        "Published proof of concept for comparison: mean AUROC 0.62 (LOF), 27.5% detection at 10% FPR.", "",
        "| feature set | trust AUROC | trust detection @10% FPR |", "|---|---|---|",
        *[f"| {k} | {a:.3f} | {100 * t:.1f}% |" for k, (a, t) in summary.items()], "",
    ]
    text = "\n".join(head + parts + ["## Speed", ""] + speed_lines +
                     ["", f"Total benchmark time {time.perf_counter() - t0:.0f}s."]) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
