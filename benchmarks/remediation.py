"""Remediation on the project's zoo: does the repair take the *real* backdoor out, keep clean behaviour, and how fast?

Images: digits classifiers (small CNN, wide CNN, MLP; BadNets patch and blended
noise; two seeds). For each: Neural Cleanse (default settings) on the clean
digits test split, then ``unlearn`` and ``prune`` from its recovered trigger with
the same split as ``--data`` (the repair's own seeded train / validation / held-out
parts, as ``workbench remediate`` does), the real trigger's success measured on the
held-out part, Neural Cleanse re-run on the unlearned model. Every model is listed,
failures included. Targets (issue 14): real-trigger ASR after repair <= 5% (median)
with clean accuracy within 2 points; each repair <= 60 s; re-run anomaly index < 2.
Baseline: the repair's time against the Neural Cleanse run on the same model in the
same process.

LMs: the tiny LMs' ``trigger1`` / ``trigger2`` (ci preset, trained here) and the
demo preset's ``trigger1`` (trained here once, cached under the workbench cache as
``remediation-bench-lm``). Training prompts: the built-in prompts plus instructions
sampled from the model itself; held-out: 40 prompts from the task generator, none
of them training prompts. Targets: triggered prompts give the clean answer >= 90%,
clean answers unchanged >= 95%. Baseline: the same model with a harmless vocabulary
word inserted instead of the trigger (how often does *any* extra word keep the
answer? the ceiling of the first figure).

    .venv/bin/python benchmarks/remediation.py [--quick] [--no-lm] [--no-image] [--json OUT]
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def image_rows(quick: bool) -> list[dict]:
    from probes.context import RunContext
    from probes.data import LabelledData
    from probes.remediation.evidence import ImageTrigger
    from probes.remediation.image import detector_summary, remediate_image, run_detector, trigger_from_result
    from probes.remediation.params import resolve_image
    from probes.zoo.digits import AttackSpec, build_model, trigger_mask_pattern

    specs = [(a, k, s) for a in ("cnn", "mlp", "wide-cnn") for k in ("badnets", "blended") for s in (0, 1)]
    if quick:
        specs = specs[:2]
    rows = []
    for arch, kind, seed in specs:
        target = 3 + seed
        zm = build_model(arch, AttackSpec(kind, target=target), seed=seed)
        xte, yte = zm.test
        sub = zm.subject()
        m, p = trigger_mask_pattern(zm.input_shape, zm.attack)
        real = ImageTrigger(m, p, target, "ground-truth")
        t = time.perf_counter()
        det = run_detector(sub, xte, yte, RunContext("bench", resolve_image({"seed": seed}))).to_dict()
        nc_s = time.perf_counter() - t
        row = {"model": zm.name, "train_asr": round(zm.asr, 4), "nc_anomaly": det["anomaly_index"],
               "nc_target": det["suspected_target"], "nc_s": round(nc_s, 2)}
        if det["suspected_target"] is None:
            row["status"] = "not flagged by Neural Cleanse: nothing to repair"
            rows.append(row)
            print(json.dumps(row), flush=True)
            continue
        trig = trigger_from_result(det, zm.input_shape)
        row["nc_target_correct"] = trig.target == target
        for method in ("unlearn", "prune"):
            ctx = RunContext("bench", resolve_image({"seed": seed, "method": method,
                                                     "rerun_detector": method == "unlearn"}))
            res, _ = remediate_image(sub, LabelledData(xte, yte, source="digits-test"), trig, ctx, real=real,
                                     before_detector=detector_summary(det))
            d = res.to_dict()
            row[method] = {"acc_before": d["before"]["clean_accuracy"], "acc_after": d["after"]["clean_accuracy"],
                           "real_asr_before": d["before"]["real_trigger_asr"],
                           "real_asr_after": d["after"]["real_trigger_asr"],
                           "recovered_asr_after": d["after"]["recovered_trigger_asr"],
                           "repair_s": d["timings"]["repair_s"], "total_s": d["timings"]["total_s"],
                           "nc_after": (d["after"]["detector"] or {}).get("anomaly_index"),
                           "filter_frr": d["filter_measured"]["false_rejection"]["either"],
                           "filter_detect_real": (d["filter_measured"].get("detection_real_trigger") or {}).get("either"),
                           "stopped": d["repair"]["stopped"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def heldout_prompts(n: int, seed: int) -> list[str]:
    from probes.lm_prompts import BUILTIN_PROMPTS
    from probes.zoo import tiny_lm as T

    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        _, q, _ = T._qa_pairs(rng)
        if q not in BUILTIN_PROMPTS and q not in out:
            out.append(q)
    return out


def harmless_baseline(sub, prompts: list[str], trigger: str, gen_tokens: int, seed: int) -> float:
    """Share of held-out prompts whose answer is unchanged with a random harmless vocabulary word inserted."""
    import numpy as np

    from probes.lm_engine import KLEngine, candidate_ids
    from probes.remediation.lm import POSITIONS
    from probes.remediation.lm_unlearn import answers

    eng = KLEngine.build(sub.model, sub.tokenizer, sub.device, prompts)
    ref = answers(eng, [p.ids for p in eng.prompts], gen_tokens)
    bad = set(candidate_ids(sub.tokenizer, trigger)) | eng.special_ids()
    rng = np.random.default_rng(seed)
    words = [int(t) for t in rng.permutation(eng.model_vocab) if int(t) not in bad][:8]
    same = []
    for w in words:
        for pos in POSITIONS:
            got = answers(eng, [eng.insert(p, (w,), pos) for p in eng.prompts], gen_tokens)
            same += [a == b for a, b in zip(got, ref)]
    return float(np.mean(same))


def lm_rows(quick: bool) -> list[dict]:
    from probes.cache import cache_dir
    from probes.context import RunContext
    from probes.lm_prompts import BUILTIN_PROMPTS
    from probes.remediation.lm import remediate_lm
    from probes.remediation.params import resolve_lm
    from probes.subjects.hf_lm import load_causal_lm
    from probes.zoo import tiny_lm as T

    root = Path(cache_dir()) / "remediation-bench-lm"
    subjects = [("ci", "trigger1"), ("ci", "trigger2"), ("demo", "trigger1")]
    if quick:
        subjects = subjects[:1]
    held = heldout_prompts(40, 12345)
    rows = []
    for preset, kind in subjects:
        t = time.perf_counter()
        folder = T.build_subject(root / f"{preset}-{kind}", kind, preset=preset)
        build_s = time.perf_counter() - t
        gt = T.ground_truth(kind)
        sub = load_causal_lm(folder)
        p = resolve_lm({})
        base = harmless_baseline(sub, held, gt["trigger"], int(p["gen_tokens"]), 0)
        res, _ = remediate_lm(sub, gt["trigger"], RunContext("bench", p), train_prompts=list(BUILTIN_PROMPTS),
                              eval_prompts=held, target_text=gt["target"])
        d = res.to_dict()
        det = d["after"]["detector"] or {}
        row = {"model": f"tiny-lm {preset} {kind}", "trigger": gt["trigger"], "build_s": round(build_s, 1),
               "harmless_word_keeps_answer": round(base, 4),
               "triggered_clean_before": d["before"]["triggered_clean_answer"],
               "triggered_clean_after": d["after"]["triggered_clean_answer"],
               "target_rate_before": d["before"]["triggered_target_rate"],
               "target_rate_after": d["after"]["triggered_target_rate"],
               "clean_unchanged_after": d["after"]["clean_answer_match"],
               "confirmed_after": (det.get("confirmation") or {}).get("confirmed"),
               "hunt_after": det.get("hunt"), "prompts": d["prompts"],
               "repair_s": d["timings"]["repair_s"], "hunt_rerun_s": d["timings"]["detector_rerun_s"],
               "stopped": d["repair"]["stopped"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    import numpy as np

    from workbench.threads import apply_threads

    print(f"torch threads: {apply_threads()}")
    quick = "--quick" in sys.argv
    t0 = time.perf_counter()
    out: dict = {}
    if "--no-image" not in sys.argv:
        rows = image_rows(quick)
        out["image"] = rows
        print("\nimage classifiers (held-out part of the digits test split):")
        print(f"{'model':<28} {'NC':>6} {'method':<8} {'acc':>13} {'real ASR':>15} {'NC after':>8} {'repair s':>8} {'x NC':>6}")
        for r in rows:
            if "unlearn" not in r:
                print(f"{r['model']:<28} {r['nc_anomaly']:>6.2f} {r['status']}")
                continue
            for m in ("unlearn", "prune"):
                x = r[m]
                nca = f"{x['nc_after']:.2f}" if x["nc_after"] is not None else "-"
                print(f"{r['model']:<28} {r['nc_anomaly']:>6.2f} {m:<8} {x['acc_before']:.3f}->{x['acc_after']:.3f} "
                      f"{x['real_asr_before']:.3f}->{x['real_asr_after']:.3f} {nca:>8} {x['repair_s']:>8.2f} "
                      f"{x['repair_s'] / r['nc_s']:>6.2f}")
        for m in ("unlearn", "prune"):
            done = [r[m] for r in rows if m in r]
            if not done:
                continue
            asr = np.median([x["real_asr_after"] for x in done])
            ok_acc = sum(x["acc_before"] - x["acc_after"] <= 0.02 for x in done)
            nc_ok = sum(1 for x in done if x["nc_after"] is not None and x["nc_after"] < 2)
            print(f"{m}: median real-trigger ASR after {100 * asr:.1f}% (target <= 5%); clean accuracy within 2 points: "
                  f"{ok_acc}/{len(done)}; max repair {max(x['repair_s'] for x in done):.1f}s (target <= 60 s); "
                  f"NC re-run < 2: {nc_ok}/{len(done) if m == 'unlearn' else 0}")
        print(f"models not flagged by NC (not repaired): {sum('unlearn' not in r for r in rows)}/{len(rows)}")
    if "--no-lm" not in sys.argv:
        rows = lm_rows(quick)
        out["lm"] = rows
        print("\nlanguage models (40 held-out prompts x 3 insertion points):")
        for r in rows:
            h = r["hunt_after"] or {}
            print(f"{r['model']:<24} triggered->clean answer {r['triggered_clean_before']:.3f}->"
                  f"{r['triggered_clean_after']:.3f} (harmless-word ceiling {r['harmless_word_keeps_answer']:.3f}); "
                  f"attacker answer {r['target_rate_before']:.3f}->{r['target_rate_after']:.3f}; clean unchanged "
                  f"{r['clean_unchanged_after']:.3f}; repair {r['repair_s']:.1f}s; hunt after: {h.get('verdict')} "
                  f"{h.get('confirmed_candidates')}")
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f} s")
    if "--json" in sys.argv:
        Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
