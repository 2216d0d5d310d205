"""Source-specific and all-to-all backdoors: a prioritised (source, target) trigger search (K-Arm style).

Neural Cleanse asks "which class can *every* input be sent to with a small patch?"; an all-to-all
backdoor (``y -> y + 1``) or a source-specific one (only class ``s`` goes to ``t``) has no such class.
Searching every ordered pair fully costs ``K (K - 1)`` Neural Cleanse runs, so arms are prioritised:

1. **Candidate arms.** Up to ``max_full_classes`` classes every pair is an arm; above, each source keeps
   the ``prescreen_targets`` classes its clean images already lean to most (mean softmax).
2. **Pre-screen.** All arms move together for ``prescreen_steps`` steps of a mask + pattern search at a
   fixed cost on a few images of their source; per source the ``keep_per_source`` (2) arms with the
   lowest loss survive (K-Arm's idea: spend the steps on the promising arms).
3. **Full search** of the survivors with Neural Cleanse's adaptive cost: each arm's smallest mask L1
   that sends ``attack_success_target`` of its source's images to its target.

Verdict: each source's easiest target (its smallest successful arm) is read as a mapping. With no
backdoor those targets follow no rule; an all-to-all backdoor makes them share one shift
``t = s + d (mod K)``. The p-value is the chance that at least as many sources share the most common
shift when each source's easiest target is uniform over the other ``K - 1`` classes (binomial tail,
Bonferroni over the shifts): a combinatorial null, nothing tuned on a zoo. The mapping is reported; a
single source-specific pair (one source, any target) is listed per source with a gamma p-value against
the second-best arms, but that p-value is not calibrated well enough to decide on and is not used.
Cost: about ``K (K - 1) x prescreen_steps + 2 K x steps`` arm-steps instead of ``K (K - 1) x steps``.
"""

from __future__ import annotations

import time

import numpy as np

from probes.context import RunContext
from probes.errors import ProbeError
from probes.progress import check_cancel
from probes.result import ProbeResult

PROBE = "pair-search"


def _arms(subject, x, y, p) -> np.ndarray:
    """(A, 2) candidate (source, target) pairs."""
    k = int(subject.num_classes)
    present = np.unique(y)
    if k <= int(p["max_full_classes"]):
        return np.array([(s, t) for s in present for t in range(k) if t != s], np.int64)
    prob = subject.predict_proba(x)
    m = min(int(p["prescreen_targets"]), k - 1)
    arms = []
    for s in present:
        mean = prob[y == s].mean(0)
        mean[s] = -1
        arms += [(s, int(t)) for t in np.argsort(-mean)[:m]]
    return np.array(arms, np.int64)


def _search(subject, x, y, arms, p, *, steps, fixed_cost, seed, cancel=None, progress=None, prog_base=0,
            prog_total=1) -> dict:
    """Batched mask + pattern search, one arm per (source, target): returns per-arm loss, l1, reached."""
    import torch

    dev = subject.device
    c, h, w = (int(s) for s in subject.input_shape)
    a_n = len(arms)
    gen = torch.Generator().manual_seed(int(seed))
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dev)
    lo = xt.amin(dim=(0, 2, 3)).view(1, c, 1, 1)
    span = (xt.amax(dim=(0, 2, 3)).view(1, c, 1, 1) - lo).clamp_min(1e-6)
    by_src = {int(s): np.flatnonzero(y == s) for s in np.unique(arms[:, 0])}
    m_raw = torch.atanh((torch.rand((a_n, 1, h, w), generator=gen) * 0.04 + 0.08) * 2 - 1).to(dev)
    p_raw = torch.atanh((torch.rand((a_n, c, h, w), generator=gen) * 2 - 1).clamp(-0.999, 0.999)).to(dev)
    m_raw.requires_grad_(True)
    p_raw.requires_grad_(True)
    opt = torch.optim.Adam([m_raw, p_raw], lr=float(p["lr"]))
    cost = np.full(a_n, float(p["init_cost"]))
    up, down = np.zeros(a_n, int), np.zeros(a_n, int)
    bsz = int(p["arm_batch"])
    window = 4
    hist = np.zeros((a_n, window))
    best = np.full(a_n, np.inf)
    loss_hist = np.zeros(a_n)
    last_l1 = np.zeros(a_n)
    thr = float(p["attack_success_target"])
    chunk = max(1, int(p["max_batch_images"]) // bsz)
    rng = np.random.default_rng(int(seed))
    tgt_all = torch.from_numpy(arms[:, 1]).to(dev)
    subject.module.eval()
    for step in range(steps):
        check_cancel(cancel)
        # the same source images for every arm of a source in this step
        pick = {s: rng.choice(ix, size=bsz, replace=len(ix) < bsz) for s, ix in by_src.items()}
        idx = torch.from_numpy(np.stack([pick[int(s)] for s in arms[:, 0]])).to(dev)  # (A, bsz)
        opt.zero_grad(set_to_none=True)
        asr = np.zeros(a_n)
        l1_np = np.zeros(a_n)
        loss_np = np.zeros(a_n)
        for a in range(0, a_n, chunk):
            sl = slice(a, min(a_n, a + chunk))
            n = sl.stop - sl.start
            mask = (torch.tanh(m_raw[sl]) + 1) / 2
            pat = lo + span * (torch.tanh(p_raw[sl]) + 1) / 2
            xb = xt[idx[sl]]  # (n, bsz, C, H, W)
            xa = (1 - mask[:, None]) * xb + (mask * pat)[:, None]
            logits = subject.module(xa.reshape(n * bsz, c, h, w)).reshape(n, bsz, -1)
            t_ = tgt_all[sl]
            ce = torch.nn.functional.cross_entropy(logits.reshape(n * bsz, -1), t_.repeat_interleave(bsz),
                                                   reduction="none").view(n, bsz).mean(1)
            l1 = mask.sum(dim=(1, 2, 3))
            cw = torch.as_tensor(cost[sl], dtype=torch.float32, device=dev)
            loss = ce + cw * l1
            loss.sum().backward()
            with torch.no_grad():
                asr[sl] = (logits.argmax(2) == t_[:, None]).float().mean(1).cpu().numpy()
                l1_np[sl] = l1.detach().cpu().numpy()
                loss_np[sl] = loss.detach().cpu().numpy()
        opt.step()
        hist[:, step % window] = asr
        win = hist.sum(1) / min(step + 1, window)
        ok = win >= thr
        best = np.where(ok & (l1_np < best), l1_np, best)
        last_l1 = l1_np
        loss_hist = loss_np if step == 0 else 0.7 * loss_hist + 0.3 * loss_np
        if not fixed_cost:
            up = np.where(ok, up + 1, 0)
            down = np.where(ok, 0, down + 1)
            cost[up >= 3] *= 1.5
            cost[down >= 3] /= 1.5 ** 1.5
            up[up >= 3] = 0
            down[down >= 3] = 0
        if progress is not None and (step % 10 == 0 or step == steps - 1):
            progress(prog_base + step + 1, prog_total, f"{a_n} (source, target) arms")
    reached = np.isfinite(best)
    return {"loss": loss_hist, "l1": np.where(reached, best, last_l1 * 1.5 + 1e-6), "reached": reached}


def _shift_structure(per_source: list[dict], k: int) -> tuple[int, float, set[int]]:
    """The most common shift ``d`` in the sources' easiest targets (``t = s + d mod K``), its count's p-value.

    Under "no mapping" each source's easiest target is any of the other ``K - 1`` classes; the chance that
    at least ``c`` of ``n`` sources share one shift is a binomial tail, Bonferroni-corrected over the shifts.
    """
    from scipy import stats as st

    n = len(per_source)
    shifts = np.array([(e["target"] - e["source"]) % k for e in per_source if e["reached"]], int)
    if len(shifts) == 0:
        return 0, 1.0, set()
    vals, counts = np.unique(shifts, return_counts=True)
    d = int(vals[np.argmax(counts)])
    c = int(counts.max())
    p = float(st.binom.sf(c - 1, n, 1.0 / (k - 1))) * (k - 1)
    srcs = {e["source"] for e in per_source if e["reached"] and (e["target"] - e["source"]) % k == d}
    return d, min(1.0, p), srcs


def run(subject, ctx: RunContext) -> ProbeResult:
    """Probe entry point (``pair-search``)."""
    from probes.null_models import p_to_score

    t0 = time.perf_counter()
    p = ctx.params
    if ctx.data is None:
        raise ProbeError(f"{PROBE}: needs clean labelled images (--data)")
    k = int(subject.num_classes)
    x = np.asarray(ctx.data.x, np.float32)
    y = np.asarray(ctx.data.y, np.int64)
    subject.check_input(x)
    if ctx.data.is_poison is not None:
        keep = ~np.asarray(ctx.data.is_poison, bool)
        x, y = x[keep], y[keep]
    if len(np.unique(y)) < 3 or y.min() < 0 or y.max() >= k:
        raise ProbeError(f"{PROBE}: data must hold labelled images of at least 3 of the model's {k} classes")
    rng = np.random.default_rng(int(p["seed"]))
    perm = rng.permutation(len(x))[:int(p["max_samples"])]
    x, y = x[perm], y[perm]
    arms = _arms(subject, x, y, p)
    pre, full = int(p["prescreen_steps"]), int(p["steps"])
    total = pre + full
    prog = ctx.progress_callback(stage="pair-search")
    s1 = _search(subject, x, y, arms, p, steps=pre, fixed_cost=True, seed=int(p["seed"]), cancel=ctx.cancel,
                 progress=prog, prog_total=total)
    keep_n = int(p["keep_per_source"])
    survivors = []
    for s in np.unique(arms[:, 0]):
        ix = np.flatnonzero(arms[:, 0] == s)
        survivors += list(ix[np.argsort(s1["loss"][ix])[:keep_n]])
    arms2 = arms[np.array(survivors)]
    s2 = _search(subject, x, y, arms2, p, steps=full, fixed_cost=False, seed=int(p["seed"]) + 1, cancel=ctx.cancel,
                 progress=prog, prog_base=pre, prog_total=total)
    best_arm, second = {}, {}
    for s in np.unique(arms2[:, 0]):
        ix = np.flatnonzero(arms2[:, 0] == s)
        order = ix[np.argsort(s2["l1"][ix])]
        best_arm[int(s)] = int(order[0])
        if len(order) > 1:
            second[int(s)] = float(s2["l1"][order[1]])
    from scipy import stats as st

    alpha = float(p["alpha"])
    ref = 1.0 / np.maximum(np.array(list(second.values())), 1e-9)
    if len(ref) < 3:
        raise ProbeError(f"{PROBE}: too few sources with two surviving arms to build the null (keep_per_source >= 2)")
    loc = float(ref.min()) * 0.95
    shape, _, scale = st.gamma.fit(ref - loc, floc=0.0)
    n_src = len(best_arm)
    per_source = []
    for s, ai in best_arm.items():
        stat = 1.0 / max(float(s2["l1"][ai]), 1e-9)
        p1 = float(st.gamma.sf(stat - loc, shape, scale=scale))
        per_source.append({"source": s, "target": int(arms2[ai, 1]), "l1_norm": round(float(s2["l1"][ai]), 4),
                           "second_l1": round(second.get(s, float("nan")), 4), "reached": bool(s2["reached"][ai]),
                           "p_value": min(1.0, p1 * n_src)})
    shift, shift_p, shift_sources = _shift_structure(per_source, k)
    flagged = shift_p < alpha
    mapping = [e for e in per_source if e["source"] in shift_sources] if flagged else []
    all_to_all = flagged and len(mapping) >= max(2, n_src // 2)
    p_min = shift_p
    shown = ", ".join(f"{e['source']}->{e['target']}" for e in mapping[:12]) + (" ..." if len(mapping) > 12 else "")
    if flagged:
        what = "all-to-all" if all_to_all else "source-specific"
        summary = (f"{what} backdoor y -> y + {shift} (mod {k}): {len(mapping)} of {n_src} sources' easiest target "
                   f"({shown}); p = {shift_p:.2g} < {alpha:g}")
    else:
        summary = (f"no (source, target) mapping stands out: the easiest targets follow no common shift "
                   f"(best: +{shift} for {len(shift_sources)} of {n_src} sources, p = {shift_p:.2g} >= {alpha:g})")
    details = {
        "p_value": p_min, "alpha": alpha, "mapping": [{"source": e["source"], "target": e["target"]} for e in mapping],
        "all_to_all": all_to_all, "shift": shift if flagged else None, "per_source": per_source,
        "suspected_target": None if not flagged or all_to_all or len({e["target"] for e in mapping}) != 1
        else mapping[0]["target"],
        "arms_prescreened": int(len(arms)), "arms_searched": int(len(arms2)),
        "arm_steps": int(len(arms) * pre + len(arms2) * full),
        "arm_steps_exhaustive": int(k * (k - 1) * full),
        "calibration": "chance that the sources' easiest targets share one shift y -> y + d under targets drawn "
                       "uniformly (binomial, Bonferroni over the K - 1 shifts); per-source p_value: gamma of the "
                       "second-best arms (1/L1), Bonferroni over sources - reported, not used for the verdict",
    }
    return ProbeResult(PROBE, "backdoored" if flagged else "clean", p_to_score(p_min, alpha), summary,
                       params=dict(p), duration_s=time.perf_counter() - t0, details=details)
