"""Gradient-guided, label-free trigger search: coordinate ascent on a k-token slot (GCG-style) with restarts.

A trigger whose pieces do nothing alone gives a single-token sweep nothing to
extend. Here the whole slot of ``k`` tokens is optimised at once. The slot is a
one-hot matrix X (k × V) whose embedding ``X @ W_E`` is written into every
prompt at the insertion point; one forward and one backward pass over the
prompt batch give ∂objective/∂X, a first-order score for every vocabulary token
at every slot position. The objective is the divergence the hunt ranks by,
KL(P_clean ‖ P_triggered) at the answer position, aggregated robustly across
prompts as the mean of log KL (a geometric mean: one prompt that moves a lot
cannot carry it; every prompt must move). No target is known or used.

Each step samples ``n_proposals`` single-token swaps among the ``top_m`` best
tokens per slot position, evaluates them **exactly** (the engine's batched KL),
and keeps the best if it improves; a restart begins from a fresh random slot
(and the next insertion point) after ``patience`` steps without gain. The best
slot is then shortened: tokens whose removal keeps most of the divergence are
dropped, so the report names a minimal trigger.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probes.progress import check_cancel


@dataclass
class SlotResult:
    """The best slot one search found: token ids, its robust objective, KL quantile and mean across prompts."""

    ids: tuple[int, ...]
    position: str
    objective: float
    q: float
    mean: float
    restart: int
    steps: int
    minimal: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"token_ids": list(self.ids), "minimal_ids": list(self.minimal), "position": self.position,
                "objective": round(self.objective, 4), "kl_quantile": round(self.q, 6), "kl_mean": round(self.mean, 6),
                "restart": self.restart, "steps": self.steps}


@dataclass
class SearchStats:
    """What the search did (for the result and the benchmark)."""

    gradient_steps: int = 0
    proposals_evaluated: int = 0
    restarts: int = 0
    gradient_s: float = 0.0
    exact_s: float = 0.0
    stopped: str = ""
    results: list[SlotResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"gradient_steps": self.gradient_steps, "proposals_evaluated": self.proposals_evaluated,
                "restarts": self.restarts, "gradient_s": round(self.gradient_s, 3), "exact_s": round(self.exact_s, 3),
                "stopped": self.stopped or None, "slots": [r.to_dict() for r in self.results]}


def robust_objective(kl: np.ndarray, agree: np.ndarray | None = None, consistency: float = 0.0) -> np.ndarray:
    """Mean over prompts (last axis) of log KL (high only when every prompt moves), plus ``consistency`` times the
    mean log-probability every prompt gives the prompts' consensus first answer token (``agree``)."""
    out = np.log(np.asarray(kl, float) + 1e-3).mean(-1)
    if agree is not None and consistency:
        out = out + consistency * agree
    return out


def target_logprob(engine, cands: Sequence[Sequence[int]], position: str, prompt_idx: Sequence[int],
                   target: Sequence[int]) -> np.ndarray:
    """Mean log-probability of ``target`` as the answer with each candidate inserted, per candidate (C,)."""
    import torch

    target = list(target)
    rows = [(c, j) for c in range(len(cands)) for j in prompt_idx]
    out = np.zeros(len(cands))
    tgt = torch.as_tensor(target, device=engine.clean_logp.device)
    for s in range(0, len(rows), engine.batch_size):
        check_cancel(engine.cancel)
        chunk = rows[s:s + engine.batch_size]
        ids, mask, pos = engine.pad_batch([engine.insert(engine.prompts[j], cands[c], position) + target[:-1]
                                           for c, j in chunk])
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "use_cache": False}
        if engine._keep:
            kwargs["logits_to_keep"] = len(target)
        with torch.inference_mode():
            logits = engine.model(**kwargs).logits[:, -len(target):, :].float()
        engine.forwards += 1
        lp = torch.log_softmax(logits, -1).gather(2, tgt[None, :, None].expand(len(chunk), -1, 1))[..., 0].mean(1)
        for (c, _), v in zip(chunk, lp.double().cpu().tolist()):
            out[c] += v / len(prompt_idx)
    return out


def exact(engine, cands: Sequence[Sequence[int]], position: str, prompt_idx: Sequence[int]):
    """Exact KL (C, P) at ``position`` and the consensus agreement (C,) of the triggered first answer token."""
    import torch

    rows = [(c, j) for c in range(len(cands)) for j in prompt_idx]
    kl = np.zeros((len(cands), len(prompt_idx)))
    logq_all = []
    for s in range(0, len(rows), engine.batch_size):
        check_cancel(engine.cancel)
        chunk = rows[s:s + engine.batch_size]
        seqs = [engine.insert(engine.prompts[j], cands[c], position) for c, j in chunk]
        logits, _ = engine.forward_last(seqs)
        logq = torch.log_softmax(logits, -1)
        logp = engine.clean_logp[[j for _, j in chunk]]
        logq_all.append(logq)
        vals = (logp.exp() * (logp - logq)).sum(-1).clamp(min=0).double().cpu().numpy()
        for (c, j), v in zip(chunk, vals):
            kl[c, list(prompt_idx).index(j)] = v
    logq = torch.cat(logq_all).view(len(cands), len(prompt_idx), -1)
    consensus = logq.exp().mean(1).argmax(-1)  # (C,)
    agree = logq.gather(2, consensus[:, None, None].expand(-1, len(prompt_idx), 1))[..., 0].mean(1)
    return kl, agree.double().cpu().numpy()


class SlotGradient:
    """One-hot gradients of the robust objective for a slot of ``k`` tokens at ``position`` in every prompt."""

    def __init__(self, engine, position: str, k: int, prompt_idx: Sequence[int], consistency: float = 0.0,
                 target: Sequence[int] = ()) -> None:
        import torch

        self.consistency = consistency
        self.target = list(target)
        self.eng = engine
        self.position = position
        self.k = k
        self.prompts = [engine.prompts[j] for j in prompt_idx]
        self.prompt_idx = list(prompt_idx)
        model = engine.model
        self.emb = model.get_input_embeddings()
        rows = []
        for p in self.prompts:
            s = p.slots[position]
            rows.append(p.ids[:s] + [0] * k + p.ids[s:] + self.target[:-1])
        ids, mask, pos = engine.pad_batch(rows)
        self.ids, self.mask, self.pos = ids, mask, pos
        width = ids.shape[1]
        # where each prompt's slot starts in its left-padded row
        self.starts = [width - len(r) + p.slots[position] for r, p in zip(rows, self.prompts)]
        with torch.no_grad():
            self.base = self.emb(ids).detach()
        self.clean = engine.clean_logp[self.prompt_idx]

    def grad(self, slot: Sequence[int]):
        """∂(mean log KL)/∂one-hot, shape (k, V), and the objective at ``slot``."""
        import torch

        weight = self.emb.weight
        onehot = torch.zeros((self.k, weight.shape[0]), dtype=weight.dtype, device=weight.device)
        onehot[torch.arange(self.k), torch.as_tensor(list(slot), device=weight.device)] = 1.0
        onehot.requires_grad_(True)
        model = self.eng.model
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                slot_emb = onehot @ weight
                embeds = self.base.clone()
                for r, st in enumerate(self.starts):
                    embeds[r, st:st + self.k] = slot_emb
                kwargs = {"inputs_embeds": embeds, "attention_mask": self.mask, "position_ids": self.pos,
                          "use_cache": False}
                n_keep = max(1, len(self.target))
                if self.eng._keep:
                    kwargs["logits_to_keep"] = n_keep
                out = model(**kwargs).logits[:, -n_keep:, :].float()
                if self.target:
                    tgt = torch.as_tensor(self.target, device=out.device)
                    lp = torch.log_softmax(out, -1).gather(2, tgt[None, :, None].expand(out.shape[0], -1, 1))
                    obj = lp.mean()
                else:
                    logq = torch.log_softmax(out[:, -1, :], -1)
                    kl = (self.clean.exp() * (self.clean - logq)).sum(-1).clamp(min=0)
                    obj = torch.log(kl + 1e-3).mean()
                    if self.consistency:
                        consensus = logq.detach().exp().mean(0).argmax()
                        obj = obj + self.consistency * logq[:, consensus].mean()
                obj.backward()
        finally:
            for p, f in zip(model.parameters(), flags):
                p.requires_grad_(f)
        self.eng.forwards += 1
        grad = onehot.grad
        assert grad is not None
        return grad.detach().float(), float(obj.detach())


def search(engine, positions: Sequence[str], *, k: int, steps: int, restarts: int, top_m: int, n_proposals: int,
           allowed: np.ndarray, rng: np.random.Generator, quantile: float, patience: int = 6,
           grad_prompts: int = 16, consistency: float = 1.0, target: Sequence[int] = (), cancel=None,
           deadline: float | None = None,
           on_step: Callable[[int, int, str], None] | None = None) -> SearchStats:
    """Coordinate ascent with restarts; returns the stats with one :class:`SlotResult` per restart."""
    import torch

    stats = SearchStats()

    def score(cands, position):
        if target:
            return target_logprob(engine, cands, position, prompt_idx, target)
        kl, ag = exact(engine, cands, position, prompt_idx)
        return robust_objective(kl, ag, consistency)

    allowed_ids = np.flatnonzero(allowed)
    mask = torch.as_tensor(~allowed, device=engine.clean_logp.device)
    prompt_idx = list(range(min(grad_prompts, len(engine.prompts))))
    total = steps * restarts
    done = 0
    grads: dict[str, SlotGradient] = {}
    for r in range(restarts):
        position = positions[r % len(positions)]
        if position not in grads:
            grads[position] = SlotGradient(engine, position, k, prompt_idx, consistency, target)
        sg = grads[position]
        cur = tuple(int(t) for t in rng.choice(allowed_ids, size=k))
        t0 = time.perf_counter()
        cur_obj = float(score([cur], position)[0])
        stats.exact_s += time.perf_counter() - t0
        stale, n_steps = 0, 0
        for _ in range(steps):
            check_cancel(cancel)
            if deadline is not None and time.perf_counter() > deadline:
                stats.stopped = "budget"
                break
            t0 = time.perf_counter()
            g, _ = sg.grad(cur)
            stats.gradient_s += time.perf_counter() - t0
            stats.gradient_steps += 1
            g[:, mask[: g.shape[1]]] = -math.inf
            top = torch.topk(g, min(top_m, int(allowed.sum())), dim=1).indices.cpu().numpy()
            props = proposals(cur, top, n_proposals, rng)
            cands = props
            if not cands:
                break
            t0 = time.perf_counter()
            objs = score(cands, position)
            stats.exact_s += time.perf_counter() - t0
            stats.proposals_evaluated += len(cands)
            b = int(objs.argmax())
            n_steps += 1
            done += 1
            if objs[b] > cur_obj + 1e-4:
                cur, cur_obj, stale = cands[b], float(objs[b]), 0
            else:
                stale += 1
            if on_step is not None:
                on_step(done, total, f"restart {r + 1}/{restarts} at {position}: objective {cur_obj:.2f}")
            if stale >= patience:
                break
        done = (r + 1) * steps
        arr = engine.kl_matrix([cur], [position])[0, 0]
        stats.results.append(SlotResult(cur, position, cur_obj, float(np.quantile(arr, quantile)),
                                        float(arr.mean()), r, n_steps))
        stats.restarts += 1
        if stats.stopped:
            break
    for res in stats.results:
        res.minimal = shorten(engine, res.ids, res.position, quantile)
    return stats


def proposals(cur: tuple[int, ...], top: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Up to ``n`` distinct single-token swaps of ``cur``, each drawing from its slot position's best tokens."""
    k = len(cur)
    props: set[tuple[int, ...]] = set()
    for _ in range(n * 3):
        if len(props) >= n:
            break
        i = int(rng.integers(k))
        tok = int(top[i, rng.integers(top.shape[1])])
        if tok != cur[i]:
            props.add(cur[:i] + (tok,) + cur[i + 1:])
    return sorted(props)


def shorten(engine, ids: tuple[int, ...], position: str, quantile: float, keep: float = 0.7) -> tuple[int, ...]:
    """Drop slot tokens one at a time while the KL quantile stays at least ``keep`` of the full slot's."""
    full = float(np.quantile(engine.kl_matrix([ids], [position])[0, 0], quantile))
    cur = tuple(ids)
    while len(cur) > 1:
        subs = [cur[:i] + cur[i + 1:] for i in range(len(cur))]
        arr = engine.kl_matrix(subs, [position])[:, 0]
        q = np.quantile(arr, quantile, axis=-1)
        b = int(q.argmax())
        if q[b] < keep * full:
            break
        cur = subs[b]
    return cur
