"""Target inversion (after BAIT, S&P 2025): the output a model is abnormally primed to say, without its trigger.

A backdoored model has memorised the attacker's answer: once its first token is
given, the rest follows with near certainty *whatever the prompt*. A clean
model's continuation of an arbitrary first token still depends on the prompt.
So, across a few unrelated prompts:

1. **first-token enumeration** – every vocabulary token ``v`` is forced as the
   first answer token; the ensemble (mean over prompts) next-token
   distribution after it gives ``q1(v)``, the probability of its most likely
   continuation (one token per sequence after a cached prompt where the model
   allows it). A vocabulary larger than ``rescore`` is screened on
   ``screen_prompts`` prompts first and its best ``rescore`` tokens scored again
   on all of them;
2. **autoregressive extension** – the ``extend_top`` best first tokens are
   extended greedily by the ensemble's most likely token for up to
   ``max_tokens`` steps (stopping at end of sequence);
3. **uncertainty score** – the mean ensemble probability of the chosen tokens
   after the first (BAIT's Q-score), and the mean per-prompt entropy.

A sequence is reported as "primed" when its score reaches ``threshold`` over at
least ``min_tokens`` tokens and it is not simply what the model answers one of
the prompts anyway (word overlap with a clean answer ≤ ``clean_overlap_max``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probes.progress import check_cancel

THRESHOLD = 0.9
MIN_TOKENS = 8
CLEAN_OVERLAP_MAX = 0.6
PREPEND_MIN = 0.25  # a first token after which the primed text follows with at least this ensemble probability


@dataclass
class Inversion:
    """The best primed sequence found, its score, and the runners-up."""

    text: str
    token_ids: list[int]
    score: float
    entropy: float
    primed: bool
    clean_overlap: float
    prompts_used: int
    first_tokens_scanned: int
    stopped: str = ""
    runners_up: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "token_ids": self.token_ids, "score": round(self.score, 4),
                "entropy": round(self.entropy, 4), "primed": self.primed,
                "clean_overlap": round(self.clean_overlap, 4), "prompts_used": self.prompts_used,
                "first_tokens_scanned": self.first_tokens_scanned, "stopped": self.stopped or None,
                "runners_up": self.runners_up, "seconds": round(self.seconds, 2),
                "statement": (f"the model is primed to say {self.text!r} (score {self.score:.2f})" if self.primed
                              else f"no primed output (best {self.text!r}, score {self.score:.2f})")}


def _next_probs(engine, prompt_idx: Sequence[int], heads: Sequence[Sequence[int]]):
    """Per head (C) and prompt (P): next-token probabilities after prompt + head, (C, P, V) float32.

    Each prompt's KV cache is computed once and only the heads run after it (plain batches when the model
    cannot share its cache)."""
    import torch

    rows = [list(h) for h in heads]
    if not engine.fallback_reason and len({len(r) for r in rows}) == 1:
        try:
            out = []
            for j in prompt_idx:
                res = []
                for s in range(0, len(rows), engine.batch_size):
                    check_cancel(engine.cancel)
                    res.append(torch.softmax(engine.forward_after_prefix(engine.prompts[j].ids,
                                                                         rows[s:s + engine.batch_size]), -1))
                out.append(torch.cat(res))
            return torch.stack(out, 1)
        except (TypeError, AttributeError, NotImplementedError, RuntimeError) as exc:
            if engine._shared_ok:
                raise
            engine.share_prefix = False
            engine.fallback_reason = f"{type(exc).__name__}: {exc}"[:200]
    flat = [(c, j) for c in range(len(rows)) for j in prompt_idx]
    res = []
    for s in range(0, len(flat), engine.batch_size):
        check_cancel(engine.cancel)
        chunk = flat[s:s + engine.batch_size]
        logits, _ = engine.forward_last([engine.prompts[j].ids + rows[c] for c, j in chunk])
        res.append(torch.softmax(logits, -1))
    return torch.cat(res).view(len(rows), len(prompt_idx), -1)


def _enumerate(engine, idx, first, mask, eos, deadline, on_step):
    """Every first token forced: the ensemble's best three next tokens and their probabilities."""
    q1 = np.zeros(len(first))
    top_next = np.zeros((len(first), 3), dtype=np.int64)
    top_p = np.zeros((len(first), 3))
    stopped = ""
    chunk = max(1, engine.batch_size)
    scanned = 0
    for s in range(0, len(first), chunk):
        if deadline is not None and time.perf_counter() > deadline:
            stopped = f"budget: {len(first) - s} first tokens not scanned"
            break
        heads = [[t] for t in first[s:s + chunk]]
        probs = _next_probs(engine, idx, heads).mean(1)  # ensemble over prompts (C, V)
        probs[:, mask[: probs.shape[1]]] = 0
        if eos is not None and eos < probs.shape[1]:
            probs[:, eos] = 0  # an answer that stops right away is not a primed text
        tv, ti = probs.topk(3, dim=-1)
        q1[s:s + len(heads)] = tv[:, 0].double().cpu().numpy()
        top_next[s:s + len(heads)], top_p[s:s + len(heads)] = ti.cpu().numpy(), tv.double().cpu().numpy()
        scanned = s + len(heads)
        if on_step is not None:
            on_step(scanned, len(first), "first-token enumeration")
    return q1, top_next, top_p, scanned, stopped


def _extend(engine, idx, heads, mask, eos, branch, max_tokens, deadline, on_step, scanned):
    """Branch each head on its best second tokens, then extend greedily by the ensemble's most likely token."""
    stopped = ""
    # branch on the best second tokens too: a clean answer sharing the target's first token would hide it
    pr2 = _next_probs(engine, idx, heads).mean(1)
    pr2[:, mask[: pr2.shape[1]]] = 0
    seqs = [h + [int(w)] for h, row in zip(heads, pr2) for w in row.topk(branch).indices.tolist()]
    conf: list[list[float]] = [[] for _ in seqs]
    ents: list[list[float]] = [[] for _ in seqs]
    live = list(range(len(seqs)))
    for step in range(max_tokens - 2):
        if not live:
            break
        if deadline is not None and time.perf_counter() > deadline:
            stopped = stopped or "budget: extension cut short"
            break
        by_len: dict[int, list[int]] = {}
        for r in live:
            by_len.setdefault(len(seqs[r]), []).append(r)
        for group in by_len.values():
            pr = _next_probs(engine, idx, [seqs[r] for r in group])  # (G, P, V)
            ens = pr.mean(1)
            keep = ens[:, eos].clone() if eos is not None and eos < ens.shape[1] else None
            ens[:, mask[: ens.shape[1]]] = 0
            if keep is not None:
                ens[:, eos] = keep  # the end of the answer is a valid choice
            w = ens.argmax(-1).tolist()
            ent = (-(pr.clamp(min=1e-12).log() * pr).sum(-1).mean(1)).tolist()
            for g, r in enumerate(group):
                conf[r].append(float(ens[g, w[g]]))
                ents[r].append(float(ent[g]))
                if w[g] == eos:
                    live.remove(r)
                else:
                    seqs[r].append(int(w[g]))
        if on_step is not None:
            on_step(scanned + step + 1, scanned + max_tokens - 2, "autoregressive extension")
    return seqs, conf, ents, stopped


def invert(engine, allowed: np.ndarray, clean_answers: Sequence[str], *, n_prompts: int = 8,
           extend_top: int = 48, branch: int = 2, screen_prompts: int = 2, rescore: int = 512,
           max_tokens: int = 16, threshold: float = THRESHOLD, min_tokens: int = MIN_TOKENS,
           deadline: float | None = None, on_step: Callable[[int, int, str], None] | None = None) -> Inversion:
    """Search the output the model is primed to say across ``n_prompts`` prompts (see the module docstring)."""
    import torch

    from probes.lm_confirm import jaccard

    t0 = time.perf_counter()
    idx = list(range(min(n_prompts, len(engine.prompts))))
    first = [int(t) for t in np.flatnonzero(allowed)]
    mask = torch.as_tensor(~allowed)
    eos = engine.tokenizer.eos_token_id
    screen_idx = idx[:screen_prompts] if screen_prompts and len(first) > rescore else idx
    q1, top_next, top_p, scanned, stopped = _enumerate(engine, screen_idx, first, mask, eos, deadline, on_step)
    if screen_idx != idx:  # the best first tokens of the cheap screen, scored again on every prompt
        keep = np.argsort(-q1[:scanned], kind="stable")[:rescore]
        sub = [first[int(i)] for i in keep]
        q1s, tn, tp, _, _ = _enumerate(engine, idx, sub, mask, eos, None, None)
        q1[:] = 0
        q1[keep], top_next[keep], top_p[keep] = q1s, tn, tp
    order = np.argsort(-q1[:scanned], kind="stable")[:extend_top]
    seqs, conf, ents, cut = _extend(engine, idx, [[first[int(i)]] for i in order], mask, eos, branch, max_tokens,
                                    deadline, on_step, scanned)
    stopped = stopped or cut
    found = []
    for r, seq in enumerate(seqs):
        text = engine.tokenizer.decode(seq, skip_special_tokens=True).strip()
        overlap = max((jaccard(text, c) for c in clean_answers), default=0.0)
        found.append({"text": text, "token_ids": seq, "score": float(np.mean(conf[r])) if conf[r] else 0.0,
                      "entropy": float(np.mean(ents[r])) if ents[r] else 0.0, "clean_overlap": overlap})

    def primed(f: dict) -> bool:
        return f["score"] >= threshold and len(f["token_ids"]) >= min_tokens and f["clean_overlap"] <= CLEAN_OVERLAP_MAX

    found.sort(key=lambda f: (not primed(f), -f["score"] * min(1.0, len(f["token_ids"]) / min_tokens)))
    if not found:
        return Inversion("", [], 0.0, 0.0, False, 0.0, len(idx), scanned, stopped or "nothing scanned",
                         seconds=time.perf_counter() - t0)
    b = found[0]
    if primed(b):  # backward extension: the token the attacker's text most likely starts with, from the enumeration
        hit = (top_next[:scanned] == b["token_ids"][0]) * top_p[:scanned]
        u = int(hit.max(-1).argmax())
        if hit[u].max() >= PREPEND_MIN and first[u] not in b["token_ids"][:1]:
            b = {**b, "token_ids": [first[u]] + b["token_ids"]}
            b["text"] = engine.tokenizer.decode(b["token_ids"], skip_special_tokens=True).strip()
    runners = [{"text": f["text"], "score": round(f["score"], 4), "clean_overlap": round(f["clean_overlap"], 3)}
               for f in found[1:5]]
    return Inversion(b["text"], b["token_ids"], b["score"], b["entropy"], primed(b), b["clean_overlap"], len(idx),
                     scanned, stopped, runners, time.perf_counter() - t0)
