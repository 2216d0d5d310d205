"""KL trigger-hunt benchmark: detection targets and batched-sweep speed against a baseline in the same run.

    python benchmarks/kl_sweep.py [--preset ci|demo] [--cache DIR] [--json]

Prints, for the project's tiny causal LMs (trained locally, cached):

1. detection: rank of the single-word trigger in the full vocabulary sweep,
   the two-word trigger's rank after the extension step, and the clean
   model's verdict;
2. speed: the batched sweep against two one-candidate-at-a-time baselines on
   the same candidates (one forward per candidate with its prompts batched,
   and the textbook one forward per sequence), with the largest KL difference;
3. memory: peak RSS and the per-batch logits buffer, and the cost on paper of
   a ~1B-parameter model with a 32k vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="ci", choices=["ci", "demo"])
    ap.add_argument("--cache", default=os.environ.get("WORKBENCH_CACHE") or
                    str(Path(tempfile.gettempdir()) / "trojan-workbench-bench"))
    ap.add_argument("--speed-candidates", type=int, default=40)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np

    from workbench.threads import apply_threads
    threads = apply_threads()  # the product's default, as a user gets it
    print(f"torch threads: {threads} (the workbench default, workbench/threads.py)")
    from probes.context import context_for
    from probes.kl_probe import run
    from probes.lm_engine import KLEngine
    from probes.lm_prompts import BUILTIN_PROMPTS
    from probes.subjects.hf_lm import load_causal_lm
    from probes.zoo import tiny_lm as T

    out: dict = {"preset": args.preset}
    t0 = time.perf_counter()
    paths = T.build_subjects(Path(args.cache) / f"tiny-lm-{args.preset}", preset=args.preset)
    out["build_s"] = round(time.perf_counter() - t0, 1)
    subs = {k: load_causal_lm(paths[k], device="cpu") for k in T.SUBJECTS}
    out["vocab_size"] = subs["trigger1"].vocab_size
    out["parameters"] = subs["trigger1"].metadata["parameters"]
    rss0 = rss_mib()

    # 1. detection -------------------------------------------------------------------------
    r = run(subs["trigger1"], context_for("kl", {"extend": False, "suspicious": False, "confirm_top": 1})).to_dict()
    names = [e["candidate"] for e in r["ranking"]]
    out["trigger1_sweep_rank"] = names.index(T.TRIGGER_1) + 1 if T.TRIGGER_1 in names else None
    out["trigger1_sweep_size"] = r["sweep_size"]
    out["trigger1_kl"] = r["ranking"][0]["kl"]
    out["trigger1_runner_up_kl"] = r["ranking"][1]["kl"]
    out["trigger1_z"] = r["ranking"][0]["z"]
    out["sweep_candidates_per_s"] = r["candidates_per_s"]
    out["sweep_sequences_per_s"] = round(r["candidates_per_s"] * 3 * r["prompts_used"], 1)
    out["trigger1_verdict"] = r["verdict"]
    full = {}
    for k in T.SUBJECTS:
        t = time.perf_counter()
        full[k] = run(subs[k], context_for("kl")).to_dict()
        full[k]["_wall"] = time.perf_counter() - t
    names2 = [e["candidate"] for e in full["trigger2"]["ranking"]]
    out["trigger2_rank"] = names2.index(T.TRIGGER_2) + 1 if T.TRIGGER_2 in names2 else None
    out["trigger2_source"] = full["trigger2"]["ranking"][0]["source"]
    s2 = subs["trigger2"]
    e2 = KLEngine.build(s2.model, s2.tokenizer, "cpu", BUILTIN_PROMPTS)
    words = T.TRIGGER_2.split()
    alone = e2.kl_matrix([(s2.tokenizer.convert_tokens_to_ids(w),) for w in words] +
                         [tuple(s2.tokenizer.convert_tokens_to_ids(words))], ["prefix", "marker", "suffix"])
    q2 = np.quantile(alone, 0.1, axis=-1).max(-1)
    out["trigger2_words_alone_kl"] = {w: round(float(q2[i]), 4) for i, w in enumerate(words)}
    out["trigger2_phrase_kl"] = round(float(q2[-1]), 4)
    out["verdicts"] = {k: full[k]["verdict"] for k in T.SUBJECTS}
    out["scores"] = {k: full[k]["score"] for k in T.SUBJECTS}
    out["best_candidates"] = {k: full[k]["best_candidate"] for k in T.SUBJECTS}
    out["clean_best_kl_z"] = [full["clean"]["ranking"][0]["kl"], full["clean"]["ranking"][0]["z"]]
    out["full_run_s"] = {k: round(full[k]["_wall"], 2) for k in T.SUBJECTS}

    # 2. speed: batched vs one candidate at a time ----------------------------------------
    s = subs["trigger1"]
    eng = KLEngine.build(s.model, s.tokenizer, "cpu", BUILTIN_PROMPTS, batch_size=256)
    specials = eng.special_ids()
    cands = [(t,) for t in range(out["vocab_size"]) if t not in specials][: args.speed_candidates]
    pos = ["prefix", "marker", "suffix"]

    def timed(fn):
        w, c = time.perf_counter(), time.process_time()
        res = fn()
        return res, time.perf_counter() - w, time.process_time() - c

    batched, tb, cb = timed(lambda: eng.kl_matrix(cands, pos))
    per_cand, tc, cc = timed(lambda: eng.kl_matrix_unbatched(cands, pos, per_candidate=True))
    per_seq, ts, cs = timed(lambda: eng.kl_matrix_unbatched(cands, pos))
    shared_eng = KLEngine.build(s.model, s.tokenizer, "cpu", BUILTIN_PROMPTS, batch_size=256, share_prefix=True)
    shared, tsh, csh = timed(lambda: shared_eng.kl_matrix(cands, pos))
    out["speed"] = {
        "candidates": len(cands), "sequences": len(cands) * len(pos) * len(eng.prompts),
        "batched_s": round(tb, 3), "one_candidate_per_forward_s": round(tc, 3),
        "one_sequence_per_forward_s": round(ts, 3), "shared_prefix_s": round(tsh, 3),
        "speedup_vs_one_candidate": round(tc / tb, 2), "speedup_vs_one_sequence": round(ts / tb, 2),
        "cpu_speedup_vs_one_candidate": round(cc / cb, 2), "cpu_speedup_vs_one_sequence": round(cs / cb, 2),
        "cpu_shared_prefix_vs_batched": round(cb / csh, 2),
        "max_abs_kl_diff_vs_one_candidate": float(np.abs(batched - per_cand).max()),
        "max_abs_kl_diff_vs_one_sequence": float(np.abs(batched - per_seq).max()),
        "max_abs_kl_diff_shared_prefix": float(np.abs(batched - shared).max()),
    }
    for bs in (64, 1024):
        e2 = KLEngine.build(s.model, s.tokenizer, "cpu", BUILTIN_PROMPTS, batch_size=bs)
        _, w, _ = timed(lambda e2=e2: e2.kl_matrix(cands, pos))
        out["speed"][f"batch_{bs}_s"] = round(w, 3)

    # 3. memory ------------------------------------------------------------------------------
    v = out["vocab_size"]
    out["memory"] = {"peak_rss_mib": round(rss_mib(), 1), "rss_before_sweeps_mib": round(rss0, 1),
                     "logits_buffer_mib_per_batch": round(256 * v * 4 * 3 / 2**20, 3)}
    seq_tokens = 40
    n_seq = 32_000 * 3 * 16
    flops = n_seq * seq_tokens * 2 * 1e9
    out["paper_1b_32k"] = {
        "weights_gib_fp32": 4.0, "sequences": n_seq, "tokens": n_seq * seq_tokens,
        "forward_flops": f"{flops:.2e}",
        "hours_at_0.5_tflops": round(flops / 0.5e12 / 3600, 1),
        "hours_one_position_8_prompts": round(flops / 6 / 0.5e12 / 3600, 1),
        # share_prefix at the suffix: only candidate + template tail (~7 of 40 tokens) are computed
        "hours_suffix_8_prompts_shared_prefix": round(flops / 6 * 7 / 40 / 0.5e12 / 3600, 1),
        "shared_prefix_cache_gib_at_256x33_24layers": round(24 * 2 * 256 * 33 * 2048 * 4 / 2**30, 2),
        "per_batch_logits_gib_at_256": round(256 * 32_000 * 4 * 3 / 2**30, 3),
        "per_batch_activations_gib_at_256x40_d2048": round(256 * 40 * 2048 * 4 * 4 / 2**30, 3),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    sp = out["speed"]
    print(f"tiny LM preset {args.preset}: vocab {v}, {out['parameters']:,} parameters, built in {out['build_s']} s")
    print(f"[target] single-word trigger rank in the full sweep: #{out['trigger1_sweep_rank']} of "
          f"{out['trigger1_sweep_size']} (KL q10 {out['trigger1_kl']:.3f} vs runner-up "
          f"{out['trigger1_runner_up_kl']:.4f} nats, z {out['trigger1_z']})")
    print(f"[target] two-word trigger rank after extension: #{out['trigger2_rank']} ({out['trigger2_source']}); "
          f"KL q10 of the phrase {out['trigger2_phrase_kl']} nats, of its words alone {out['trigger2_words_alone_kl']}")
    print(f"[target] verdicts: {out['verdicts']} (clean best KL {out['clean_best_kl_z'][0]:.3f} nats, "
          f"z {out['clean_best_kl_z'][1]}); scores {out['scores']}")
    print(f"[target] batched sweep vs the textbook one candidate x one prompt per forward: "
          f"{sp['speedup_vs_one_sequence']}x wall, {sp['cpu_speedup_vs_one_sequence']}x CPU "
          f"({sp['batched_s']} s vs {sp['one_sequence_per_forward_s']} s on {sp['sequences']} sequences), "
          f"max |dKL| {sp['max_abs_kl_diff_vs_one_sequence']:.2e}")
    print(f"         vs one candidate per forward with its prompts batched: {sp['speedup_vs_one_candidate']}x wall, "
          f"{sp['cpu_speedup_vs_one_candidate']}x CPU ({sp['one_candidate_per_forward_s']} s), "
          f"max |dKL| {sp['max_abs_kl_diff_vs_one_candidate']:.2e}")
    print(f"         shared-prefix KV cache: {sp['shared_prefix_s']} s ({sp['cpu_shared_prefix_vs_batched']}x CPU vs "
          f"plain batches), max |dKL| {sp['max_abs_kl_diff_shared_prefix']:.2e}")
    print(f"         batch 64: {sp['batch_64_s']} s, batch 256: {sp['batched_s']} s, batch 1024: {sp['batch_1024_s']} s")
    print(f"throughput: {out['sweep_candidates_per_s']} candidates/s = {out['sweep_sequences_per_s']} "
          f"sequences/s (3 positions x prompts); full runs {out['full_run_s']} s")
    print(f"memory: peak RSS {out['memory']['peak_rss_mib']} MiB; logits buffers per 256-batch "
          f"{out['memory']['logits_buffer_mib_per_batch']} MiB")
    p = out["paper_1b_32k"]
    print(f"on paper, 1B params / 32k vocab / 16 prompts x 3 positions / 40 tokens: {p['sequences']:,} sequences, "
          f"{p['forward_flops']} FLOP: ~{p['hours_at_0.5_tflops']} h at 0.5 TFLOP/s "
          f"(~{p['hours_one_position_8_prompts']} h with one position and 8 prompts, "
          f"~{p['hours_suffix_8_prompts_shared_prefix']} h adding share_prefix at the suffix, whose repeated KV cache "
          f"takes ~{p['shared_prefix_cache_gib_at_256x33_24layers']} GiB at batch 256); per 256-batch "
          f"{p['per_batch_logits_gib_at_256']} GiB logits + ~{p['per_batch_activations_gib_at_256x40_d2048']} GiB "
          f"activations beside {p['weights_gib_fp32']} GiB fp32 weights: fits 24 GiB")
    ok = (out["trigger1_sweep_rank"] == 1 and out["trigger2_rank"] == 1 and out["verdicts"]["clean"] == "clean"
          and sp["speedup_vs_one_sequence"] >= 4 and sp["max_abs_kl_diff_vs_one_sequence"] < 1e-5)
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
