"""Trigger inversion with the trigger modelled as an image transformation, not a pixel patch.

Neural Cleanse looks for a small *mask*; a blended noise image, a sinusoidal signal or a warp
covers the whole image and needs a large mask, so it hides there. Here every class ``k`` gets a
learned transformation

    T_k(x) = (1 - a_k) * warp(x; flow_k) + a_k * p_k

(a smooth warp from a ``grid`` x ``grid`` control flow, bounded by ``max_flow`` pixels, then a global
blend of weight ``a_k`` towards a full-image pattern ``p_k``), and its *size* is how far it moves
the images: ``cost_k = RMS(T_k(x) - x)``. We minimise cross-entropy towards ``k`` plus an adaptive
multiple of the cost (raised while the transformation succeeds, lowered while it fails, as Neural
Cleanse does for its mask) and keep each class's smallest cost whose attack success over the last
batches reaches ``attack_success_target``. A backdoor target needs a far smaller transformation than
the other classes.

Calibration from the subject itself: the statistic ``1 / cost_k`` of the smallest-cost class is
judged against a gamma null fitted to the other classes (leave-one-out, order-statistic corrected,
:mod:`probes.null_models`); flagged when ``p < alpha``. All classes are optimised together in one
batched problem (chunked by ``max_batch_images``).
"""

from __future__ import annotations

import io
import time

import numpy as np

from probes.context import RunContext
from probes.data import LabelledData
from probes.errors import ProbeError
from probes.progress import check_cancel
from probes.result import ProbeResult

PROBE = "transform-inversion"


def _warp(x, flow_px):
    """Warp ``x`` (N, C, H, W) by a per-image flow (N, 2, H, W) in pixels (bilinear, border padding)."""
    import torch

    n, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device)
    xs = torch.linspace(-1, 1, w, device=x.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None] + torch.stack(
        [flow_px[:, 0] * 2 / max(w - 1, 1), flow_px[:, 1] * 2 / max(h - 1, 1)], -1)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def search(subject, x_opt: np.ndarray, y_opt: np.ndarray, p: dict, cancel=None, progress=None) -> dict:
    """Per-class smallest successful transformation: ``{cost, asr, reached, blend, flow_px, patterns}`` arrays."""
    import torch

    dev = subject.device
    k = int(subject.num_classes)
    c, h, w = (int(s) for s in subject.input_shape)
    gen = torch.Generator().manual_seed(int(p["seed"]))
    x = torch.from_numpy(np.ascontiguousarray(x_opt, np.float32)).to(dev)
    y = torch.from_numpy(np.asarray(y_opt, np.int64)).to(dev)
    lo = x.amin(dim=(0, 2, 3)).view(1, c, 1, 1)
    span = (x.amax(dim=(0, 2, 3)).view(1, c, 1, 1) - lo).clamp_min(1e-6)
    g = int(p["grid"])
    max_flow = float(p["max_flow"])
    pat_raw = (torch.rand((k, c, h, w), generator=gen) * 2 - 1).to(dev)
    blend_raw = torch.full((k,), float(np.log(0.02 / 0.98)), device=dev)
    flow_raw = (torch.randn((k, 2, g, g), generator=gen) * 0.01).to(dev)
    prm = [pat_raw.requires_grad_(True), blend_raw.requires_grad_(True), flow_raw.requires_grad_(True)]
    opt = torch.optim.Adam(prm, lr=float(p["lr"]))
    cost_w = np.full(k, float(p["init_cost"]))
    up, down = np.zeros(k, int), np.zeros(k, int)
    window = int(p["asr_window"])
    hist = np.zeros((k, window))
    best = np.full(k, np.inf)
    best_asr = np.zeros(k)
    best_blend = np.zeros(k)
    best_flow = np.zeros(k)
    best_pat = np.zeros((k, c, h, w), np.float32)
    last_cost = np.zeros(k)
    thr = float(p["attack_success_target"])
    bsz = min(int(p["batch_size"]), len(x))
    chunk = max(1, int(p["max_batch_images"]) // bsz)
    steps = int(p["steps"])
    subject.module.eval()
    for step in range(steps):
        check_cancel(cancel)
        idx = torch.randint(0, len(x), (bsz,), generator=gen).to(dev)
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        asr = np.zeros(k)
        cost_np = np.zeros(k)
        flow_mag = np.zeros(k)
        for a in range(0, k, chunk):
            cls = torch.arange(a, min(k, a + chunk), device=dev)
            kc = len(cls)
            pat = lo + span * (torch.tanh(prm[0][cls]) + 1) / 2
            alpha = torch.sigmoid(prm[1][cls]).view(kc, 1, 1, 1, 1)
            flow = torch.nn.functional.interpolate(torch.tanh(prm[2][cls]) * max_flow, size=(h, w), mode="bicubic",
                                                   align_corners=True)
            xw = _warp(xb.repeat(kc, 1, 1, 1), flow.repeat_interleave(bsz, 0)).view(kc, bsz, c, h, w)
            xt = (1 - alpha) * xw + alpha * pat[:, None]
            logits = subject.module(xt.reshape(kc * bsz, c, h, w)).reshape(kc, bsz, -1)
            valid = (yb[None] != cls[:, None]).float()
            vs = valid.sum(1).clamp_min(1)
            ce = torch.nn.functional.cross_entropy(logits.reshape(kc * bsz, -1), cls.repeat_interleave(bsz),
                                                   reduction="none").view(kc, bsz)
            rms = (((xt - xb[None]) / span[None]) ** 2).mean(dim=(2, 3, 4)).clamp_min(1e-12).sqrt()
            cost = (rms * valid).sum(1) / vs
            cw = torch.as_tensor(cost_w[a:a + kc], dtype=torch.float32, device=dev)
            (((ce * valid).sum(1) / vs) + cw * cost).sum().backward()
            with torch.no_grad():
                asr[a:a + kc] = (((logits.argmax(2) == cls[:, None]).float() * valid).sum(1) / vs).cpu().numpy()
                cost_np[a:a + kc] = cost.detach().cpu().numpy()
                flow_mag[a:a + kc] = flow.abs().mean(dim=(1, 2, 3)).cpu().numpy()
                sel = np.arange(a, a + kc)
                win = (hist[sel].sum(1) - hist[sel, step % window] + asr[sel]) / min(step + 1, window)
                better = (win >= thr) & (cost_np[sel] < best[sel])
                for j in np.flatnonzero(better):
                    i = a + j
                    best[i], best_asr[i] = cost_np[i], win[j]
                    best_blend[i] = float(alpha[j])
                    best_flow[i] = flow_mag[i]
                    best_pat[i] = pat[j].cpu().numpy()
        opt.step()
        hist[:, step % window] = asr
        last_cost[:] = cost_np
        win_all = hist.sum(1) / min(step + 1, window)
        ok = win_all >= thr
        up = np.where(ok, up + 1, 0)
        down = np.where(ok, 0, down + 1)
        cost_w[up >= int(p["patience"])] *= float(p["cost_multiplier"])
        cost_w[down >= int(p["patience"])] /= float(p["cost_multiplier"]) ** 1.5
        up[up >= int(p["patience"])] = 0
        down[down >= int(p["patience"])] = 0
        if progress is not None and (step % 10 == 0 or step == steps - 1):
            progress(step + 1, steps, f"inverting transformations: {int(np.isfinite(best).sum())}/{k} classes reached")
    reached = np.isfinite(best)
    cost_out = np.where(reached, best, np.maximum(last_cost, 1e-6) * 1.5)  # never reached: larger than it got to
    return {"cost": cost_out, "asr": best_asr, "reached": reached, "blend": best_blend, "flow_px": best_flow,
            "patterns": best_pat}


def _split(data: LabelledData, subject, p: dict):
    x = np.asarray(data.x, np.float32)
    y = np.asarray(data.y, np.int64)
    subject.check_input(x)
    if data.is_poison is not None:
        keep = ~np.asarray(data.is_poison, bool)
        x, y = x[keep], y[keep]
    if len(x) < 10:
        raise ProbeError(f"{PROBE}: need at least 10 clean images, got {len(x)}")
    if not np.isfinite(x).all():
        raise ProbeError(f"{PROBE}: data contains NaN or inf")
    rng = np.random.default_rng(int(p["seed"]))
    perm = rng.permutation(len(x))[:int(p["max_samples"])]
    return x[perm], y[perm]


def run(subject, ctx: RunContext) -> ProbeResult:
    """Probe entry point (``transform-inversion``)."""
    from probes.null_models import largest_pvalue, p_to_score

    t0 = time.perf_counter()
    p = ctx.params
    k = int(subject.num_classes)
    if ctx.data is None:
        raise ProbeError(f"{PROBE}: needs clean labelled images (--data)")
    if k < 3:
        raise ProbeError(f"{PROBE}: needs at least 3 classes (the null is fitted to the others); this model has {k}")
    x, y = _split(ctx.data, subject, p)
    res = search(subject, x, y, p, cancel=ctx.cancel, progress=ctx.progress_callback(stage="transform-inversion"))
    cost = res["cost"]
    stat = 1.0 / np.maximum(cost, 1e-9)
    fit = largest_pvalue(stat)
    alpha = float(p["alpha"])
    cand = fit.candidate
    flagged = fit.p_value < alpha and bool(res["reached"][cand])
    med = float(np.median(cost))
    kind = ("warp" if res["flow_px"][cand] > 0.5 and res["blend"][cand] < 0.05 else
            "blend/additive" if res["blend"][cand] >= 0.05 else "mixed")
    if flagged:
        summary = (f"class {cand} is reached by a transformation of RMS {cost[cand]:.3f} vs median {med:.3f} "
                   f"({kind}: blend {res['blend'][cand]:.2f}, warp {res['flow_px'][cand]:.2f} px): "
                   f"p = {fit.p_value:.2g} < {alpha:g}")
    else:
        summary = (f"no class needs an unusually small transformation: smallest RMS {cost[cand]:.3f} (class {cand}) "
                   f"vs median {med:.3f}, p = {fit.p_value:.2g} >= {alpha:g}")
    details = {
        "p_value": fit.p_value, "alpha": alpha, "suspected_target": cand if flagged else None,
        "candidate_class": cand, "trigger_kind": kind if flagged else None,
        "per_class": [{"class": i, "rms_cost": round(float(cost[i]), 5), "attack_success": round(float(res["asr"][i]), 4),
                       "reached_target": bool(res["reached"][i]), "blend": round(float(res["blend"][i]), 4),
                       "warp_px": round(float(res["flow_px"][i]), 4)} for i in range(k)],
        "null": fit.to_dict(), "n_images": int(len(x)),
        "calibration": "gamma fitted to the other classes' 1/RMS of this model (leave-one-out), order-statistic "
                       "corrected",
    }
    buf = io.BytesIO()
    np.save(buf, res["patterns"][cand].astype(np.float32), allow_pickle=False)
    return ProbeResult(PROBE, "backdoored" if flagged else "clean", p_to_score(fit.p_value, alpha), summary,
                       params=dict(p), duration_s=time.perf_counter() - t0, details=details,
                       artifacts={"pattern.npy": buf.getvalue()})
