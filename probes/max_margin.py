"""Data-free backdoor detection by per-class maximum margin (after MM-BD, Wang et al., S&P 2024).

A backdoor target class can be driven to an abnormally large logit margin: the trigger is a
shortcut the network learned to trust above everything else. For every class ``k`` we start
``restarts`` random inputs inside the input range and run projected gradient ascent on the
margin ``logit_k - max_{j != k} logit_j`` (inputs parameterised through a sigmoid, so they stay in
range); the class's statistic is the largest margin reached. No clean data are needed.

Calibration comes from the subject itself: a gamma null is fitted to the other classes'
statistics (leave-one-out) and the largest class's tail probability is corrected for being the
largest of ``K`` (:mod:`probes.null_models`). The model is flagged when that p-value is below
``alpha`` (0.05); the flagged class is the suspected target. All classes are optimised in one
batched problem, chunked by ``max_batch_images`` so 1,000-class models fit in memory.
All-to-all backdoors have no single target and are outside this statistic's reach.
"""

from __future__ import annotations

import time

import numpy as np

from probes.context import RunContext
from probes.errors import ProbeError
from probes.progress import check_cancel
from probes.result import ProbeResult

PROBE = "max-margin"


def _value_range(subject, ctx: RunContext) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-channel input range: the examiner's data when given (only its range is read), else the params."""
    c = int(subject.input_shape[0])
    p = ctx.params
    if ctx.data is not None and p["range_from_data"]:
        x = np.asarray(ctx.data.x, np.float32)
        subject.check_input(x)
        return x.min(axis=(0, 2, 3)), x.max(axis=(0, 2, 3)), "per-channel range of the --data images"
    lo, hi = float(p["input_min"]), float(p["input_max"])
    if not lo < hi:
        raise ProbeError(f"{PROBE}: input_min ({lo:g}) must be below input_max ({hi:g})")
    return np.full(c, lo, np.float32), np.full(c, hi, np.float32), f"[{lo:g}, {hi:g}] (input_min/input_max)"


def max_margins(subject, lo: np.ndarray, hi: np.ndarray, *, restarts: int, steps: int, lr: float, seed: int,
                max_batch_images: int, cancel=None, progress=None) -> np.ndarray:
    """(K, restarts) final margins of gradient ascent from random starts, all classes batched and chunked."""
    import torch

    dev = subject.device
    k = int(subject.num_classes)
    c, h, w = (int(s) for s in subject.input_shape)
    gen = torch.Generator().manual_seed(int(seed))
    lo_t = torch.as_tensor(lo, dtype=torch.float32, device=dev).view(1, c, 1, 1)
    span = (torch.as_tensor(hi, dtype=torch.float32, device=dev).view(1, c, 1, 1) - lo_t).clamp_min(1e-6)
    cls = torch.arange(k, device=dev).repeat_interleave(restarts)
    n = k * restarts
    z_all = (torch.rand((n, c, h, w), generator=gen) * 4 - 2).to(dev)
    chunk = max(1, int(max_batch_images))
    out = torch.empty(n)
    subject.module.eval()
    n_chunks = (n + chunk - 1) // chunk
    for ci, a in enumerate(range(0, n, chunk)):
        z = z_all[a:a + chunk].clone().requires_grad_(True)
        t = cls[a:a + chunk]
        opt = torch.optim.Adam([z], lr=lr)
        for step in range(steps):
            check_cancel(cancel)
            x = lo_t + span * torch.sigmoid(z)
            logits = subject.module(x).float()
            own = logits.gather(1, t[:, None])[:, 0]
            other = logits.scatter(1, t[:, None], float("-inf")).amax(1)
            margin = own - other
            opt.zero_grad(set_to_none=True)
            (-margin.sum()).backward()
            opt.step()
            if progress is not None and (step % 10 == 0 or step == steps - 1):
                progress(ci * steps + step + 1, n_chunks * steps, f"maximising margins, chunk {ci + 1}/{n_chunks}")
        with torch.no_grad():
            x = lo_t + span * torch.sigmoid(z)
            logits = subject.module(x).float()
            own = logits.gather(1, t[:, None])[:, 0]
            other = logits.scatter(1, t[:, None], float("-inf")).amax(1)
            out[a:a + chunk] = (own - other).cpu()
        del z, opt
    return out.numpy().reshape(k, restarts)


def run(subject, ctx: RunContext) -> ProbeResult:
    """Probe entry point (``max-margin``): per-class maximum margin, gamma null, p-value, target class."""
    from probes.null_models import largest_pvalue, p_to_score

    t0 = time.perf_counter()
    p = ctx.params
    k = int(subject.num_classes)
    if k < 3:
        raise ProbeError(f"{PROBE}: needs a classifier with at least 3 classes (the null is fitted to the others); "
                         f"this one has {k}")
    lo, hi, source = _value_range(subject, ctx)
    margins = max_margins(subject, lo, hi, restarts=int(p["restarts"]), steps=int(p["steps"]), lr=float(p["lr"]),
                          seed=int(p["seed"]), max_batch_images=int(p["max_batch_images"]), cancel=ctx.cancel,
                          progress=ctx.progress_callback(stage="max-margin"))
    stat = margins.max(axis=1)
    if not np.isfinite(stat).all():
        raise ProbeError(f"{PROBE}: the model's logits became non-finite during the margin ascent")
    fit = largest_pvalue(stat)
    alpha = float(p["alpha"])
    flagged = fit.p_value < alpha
    cand = fit.candidate
    med = float(np.median(stat))
    target = cand if flagged else None
    if flagged:
        summary = (f"class {cand} reaches a logit margin of {stat[cand]:.1f} vs median {med:.1f} of the classes: "
                   f"p = {fit.p_value:.2g} < {alpha:g} under a gamma null of the other classes")
    else:
        summary = (f"no class's maximum margin stands out: largest {stat[cand]:.1f} (class {cand}) vs median "
                   f"{med:.1f}, p = {fit.p_value:.2g} >= {alpha:g}")
    summary += " [no data used]" if ctx.data is None or not p["range_from_data"] else ""
    details = {
        "p_value": fit.p_value, "alpha": alpha, "suspected_target": target, "candidate_class": cand,
        "statistic": round(float(stat[cand]), 4), "median_statistic": round(med, 4),
        "per_class": [{"class": i, "max_margin": round(float(stat[i]), 4),
                       "median_restart_margin": round(float(np.median(margins[i])), 4)} for i in range(k)],
        "null": fit.to_dict(), "input_range": source, "restarts": int(p["restarts"]), "steps": int(p["steps"]),
        "calibration": "gamma fitted to the other classes' statistics of this model (leave-one-out), "
                       "order-statistic corrected",
    }
    score = p_to_score(fit.p_value, alpha)
    return ProbeResult(PROBE, "backdoored" if flagged else "clean", score, summary, params=dict(p),
                       duration_s=time.perf_counter() - t0, details=details)
