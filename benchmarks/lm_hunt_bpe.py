"""LM hunt on byte-level BPE chat models with multi-subword triggers, and its cost at GPT-2-small scale.

    python benchmarks/lm_hunt_bpe.py [--skip-hunts] [--skip-scale] [--json]

1. Detection on the project's BPE chat models (``probes.zoo.tiny_bpe_lm``, trained
   locally and cached): for each, the full default hunt (timed) and the
   single-token sweep alone (no extension, gradient search, inversion or built-in
   strings). A trigger is *recovered* when the ranked #1 text holds its tokens in
   order; a target when the inversion's text shares >= 90 % of its tokens in
   order (longest common subsequence / target length). The clean model must
   come out ``clean``.
2. Scale: a 32k-vocabulary model of GPT-2-small shape (124M parameters, random
   weights, built from a config here) — time per gradient step, per exact
   evaluation batch, per inversion chunk and per sweep batch, the default hunt's
   projected time from them, and forward passes against today's full sweep.
3. Peak RSS of the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lcs_ratio(found: list[int], target: list[int]) -> float:
    """Longest common subsequence of token ids over the target's length."""
    n, m = len(found), len(target)
    dp = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n):
        for j in range(m):
            dp[i + 1][j + 1] = dp[i][j] + 1 if found[i] == target[j] else max(dp[i][j + 1], dp[i + 1][j])
    return dp[n][m] / max(1, m)


def contains_in_order(ids: list[int], sub: list[int]) -> bool:
    it = iter(ids)
    return all(t in it for t in sub)


def hunts(args, out: dict) -> None:
    from probes.cache import cache_dir
    from probes.context import context_for
    from probes.kl_probe import run
    from probes.lm_engine import candidate_ids
    from probes.subjects.hf_lm import load_causal_lm
    from probes.zoo import tiny_bpe_lm as B

    t0 = time.perf_counter()
    paths = B.build_subjects(cache_dir("tiny-bpe-lm-ci"))
    out["build_s"] = round(time.perf_counter() - t0, 1)
    print(f"BPE subjects ready in {out['build_s']} s (cached when built before)")
    for kind in B.SUBJECTS:
        s = load_causal_lm(paths[kind], device="cpu")
        gt = B.ground_truth(kind)
        t = time.perf_counter()
        d = run(s, context_for("kl", {})).to_dict()
        hunt_s = time.perf_counter() - t
        t = time.perf_counter()
        sweep_only = run(s, context_for("kl", {"extend": False, "gcg": False, "invert": False, "suspicious": False,
                                               "confirm_top": 1})).to_dict()
        sweep_s = time.perf_counter() - t
        row = {"verdict": d["verdict"], "summary": d["summary"], "hunt_s": round(hunt_s, 1),
               "top": d["ranking"][0]["candidate"], "top_confirmed": bool(d["ranking"][0].get("confirmed")),
               "inversion": d["inversion"]["statement"] if d["inversion"] else None,
               "sweep_only_verdict": sweep_only["verdict"], "sweep_only_top": sweep_only["ranking"][0]["candidate"],
               "sweep_only_s": round(sweep_s, 1), "prompt_format": d["prompt_format"]["name"],
               "gradient_slots": d["gradient_search"]["slots_text"] if d["gradient_search"] else None}
        if gt["trigger"]:
            trig = candidate_ids(s.tokenizer, gt["trigger"])
            tgt = candidate_ids(s.tokenizer, gt["target"])
            row["trigger_tokens"] = [s.tokenizer.decode([i]) for i in trig]
            row["trigger_recovered"] = contains_in_order(d["ranking"][0]["token_ids"], trig)
            inv_ids = candidate_ids(s.tokenizer, d["inversion"]["text"]) if d["inversion"] else []
            row["target_overlap"] = round(lcs_ratio(inv_ids, tgt), 3)
            row["target_recovered"] = row["target_overlap"] >= 0.9
            row["sweep_only_recovers"] = (contains_in_order(sweep_only["ranking"][0]["token_ids"], trig)
                                          and sweep_only["verdict"] == "backdoored")
            row["gradient_slot_holds_trigger_pieces"] = [
                sum(t in slot for t in trig) for slot in (d["gradient_search"] or {}).get("slots", [])
                for slot in [slot["token_ids"]]]
        out.setdefault("hunts", {})[kind] = row
        print(json.dumps({kind: row}, indent=1))


def scale(args, out: dict) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from probes import lm_gcg, lm_invert
    from probes.cache import cache_dir
    from probes.lm_engine import KLEngine
    from probes.lm_prompts import BUILTIN_PROMPTS, chat_format
    from probes.subjects.hf_lm import load_causal_lm
    from probes.zoo import tiny_bpe_lm as B

    tok = load_causal_lm(cache_dir("tiny-bpe-lm-ci") / "tiny-bpe-clean", device="cpu").tokenizer
    cfg = GPT2Config(vocab_size=32000, n_positions=256, n_embd=768, n_layer=12, n_head=12)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    fmt = chat_format(tok, "You are a helpful assistant.")
    t = time.perf_counter()
    eng = KLEngine.build(model, tok, "cpu", BUILTIN_PROMPTS[:16], batch_size=64, fmt=fmt)
    build_s = time.perf_counter() - t
    V = eng.model_vocab
    P, k, n_prop = 8, 4, 32
    sg = lm_gcg.SlotGradient(eng, "marker", k, list(range(P)), consistency=1.0)
    slot = (10, 20, 30, 40)
    sg.grad(slot)
    t = time.perf_counter()
    for _ in range(2):
        sg.grad(slot)
    grad_s = (time.perf_counter() - t) / 2
    cands = [(10 + i, 20, 30, 40) for i in range(n_prop)]
    t = time.perf_counter()
    lm_gcg.exact(eng, cands, "marker", list(range(P)))
    exact_s = time.perf_counter() - t
    t = time.perf_counter()
    probs = lm_invert._next_probs(eng, list(range(P)), [[i] for i in range(256)])
    inv_chunk_s = time.perf_counter() - t
    del probs
    t = time.perf_counter()
    eng.kl_matrix([(i,) for i in range(64)], ["marker"])
    sweep_batch_s = (time.perf_counter() - t) / (64 * 16 / eng.batch_size)
    # the default hunt, projected from the measured costs (default parameters, probes.registry)
    from probes import registry

    d = registry.get("kl").resolve_params({})
    n_pos = len(d["positions"]) + 1  # + system turn
    seqs_per_cand = n_pos * 16
    full_sweep_batches = V * seqs_per_cand / eng.batch_size
    full_sweep_s = full_sweep_batches * sweep_batch_s
    sweep_cap_s = d["sweep_share"] * d["budget_s"]
    steps = d["gcg_steps"] * d["gcg_restarts"]
    gcg_s = steps * (grad_s + exact_s * d["gcg_proposals"] / n_prop)
    per_cached_token = inv_chunk_s / (256 * P)  # one new token after a cached prompt
    inv_s = V * 2 * per_cached_token  # screen on 2 prompts
    inv_s += 512 * d["invert_prompts"] * per_cached_token  # best 512 again on every prompt
    heads = d["invert_top"] * 2 * d["invert_prompts"]
    inv_s += sum(heads * (2 + t) * per_cached_token for t in range(14))  # extension: heads recomputed each step
    other_s = 80 * seqs_per_cand / eng.batch_size * sweep_batch_s  # lists, controls, extension, characterisation
    conf_s = (1 + d["confirm_top"]) * 16 * d["gen_tokens"] / eng.batch_size * sweep_batch_s * 2
    projected = build_s + min(full_sweep_s, sweep_cap_s) + gcg_s + inv_s + other_s + conf_s
    fw_hunt = (steps * (1 + d["gcg_proposals"] * d["gcg_prompts"] / eng.batch_size)
               + V / 256 * d["invert_prompts"] + min(full_sweep_s, sweep_cap_s) / sweep_batch_s)
    out["scale"] = {"parameters": n_params, "vocab": V, "engine_build_s": round(build_s, 2),
                    "gradient_step_s": round(grad_s, 3), "gradient_prompts": P,
                    "exact_batch_s": round(exact_s, 3), "exact_batch": f"{n_prop} proposals x {P} prompts",
                    "inversion_chunk_s": round(inv_chunk_s, 3), "inversion_chunk": f"256 first tokens x {P} prompts "
                    "(prompt KV cache shared)", "sweep_batch_s": round(sweep_batch_s, 3),
                    "full_sweep_projected_s": round(full_sweep_s), "full_sweep_forwards": round(full_sweep_batches),
                    "default_hunt_projected_s": round(projected), "default_hunt_forwards": round(fw_hunt),
                    "parts_s": {"sweep (capped)": round(min(full_sweep_s, sweep_cap_s)), "gradient search": round(gcg_s),
                                "inversion": round(inv_s), "lists/controls/extension": round(other_s),
                                "confirmation": round(conf_s)}}
    print(json.dumps({"scale": out["scale"]}, indent=1))
    _ = B


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-hunts", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from workbench.threads import apply_threads

    print(f"torch threads: {apply_threads()}")
    out: dict = {}
    t0 = time.perf_counter()
    if not args.skip_hunts:
        hunts(args, out)
    if not args.skip_scale:
        scale(args, out)
    out["peak_rss_mib"] = round(rss_mib())
    out["benchmark_s"] = round(time.perf_counter() - t0, 1)
    print(f"peak RSS {out['peak_rss_mib']} MiB; benchmark took {out['benchmark_s']} s")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
