"""STRIP (Gao et al., ACSAC 2019): entropy of predictions under superimposition.

Each input ``x`` is blended with ``n_copies`` clean images ``o_j`` from a
held-out pool (``x_j = (1 - alpha) * x + alpha * o_j``, ``alpha`` = 0.5 by
default). For every copy we take the Shannon entropy (bits) of the model's
class distribution - **across classes, per copy** - and average over the
copies. A clean input's prediction is destroyed by the overlay (high
entropy); a triggered input keeps predicting the target (low entropy).

The threshold is the ``frr`` quantile (default 1%) of the entropies of a
calibration split of the clean data; inputs below it are flagged as
triggered. FRR is then measured on a separate clean test split. FAR is the
fraction of triggered inputs *not* flagged:

* if the data carries ``is_poison``, its poisoned inputs are the ground truth
  (``far_poisoned``); the clean part alone supplies overlays and calibration;
* inputs stamped with a recovered trigger (``params["trigger"]`` = ``{"mask",
  "pattern"[, "target"]}``, e.g. from a Neural Cleanse result) give
  ``far_stamped``. Without a trigger a quick Neural Cleanse run recovers one
  (``quick_nc``, default true); with ``quick_nc=false`` nothing is stamped and
  the result says so.

``far`` is ``far_poisoned`` when ground truth exists, else ``far_stamped``.
Verdict: ``backdoored`` when at least ``detect_fraction`` (0.5) of the
poisoned inputs (ground truth) - or, without ground truth, of the stamped
inputs of a trigger Neural Cleanse flagged - fall below the threshold;
``clean`` otherwise; ``inconclusive`` with nothing to test. ``score`` is that
flagged fraction (x 0.25 for a trigger Neural Cleanse did not flag: a clean
model's smallest adversarial patch may survive superimposition too).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from probes.data import LabelledData
from probes.errors import ProbeError
from probes.progress import check_cancel, null_progress
from probes.result import ProbeResult

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "n_copies": 32,
    "blend": "add",           # "add": x + overlay clipped to the data range (paper); "average": (1-alpha) x + alpha o
    "alpha": 0.5,
    "frr": 0.01,
    "max_inputs": 200,        # per group
    "detect_fraction": 0.5,
    "quick_nc": True,
    "batch_size": 1024,
}

QUICK_NC = {"steps": 200, "refine_steps": 20}


def entropies(subject, x: np.ndarray, overlays: np.ndarray, n_copies: int, alpha: float, rng,
              batch_size: int = 1024, cancel=None, blend: str = "add", value_range=(0.0, 1.0)) -> np.ndarray:
    """Mean (over ``n_copies`` superimpositions) of the per-copy class entropy, in bits, per input."""
    import torch

    out = np.zeros(len(x))
    per_chunk = max(1, batch_size // n_copies)
    picks = rng.integers(0, len(overlays), size=(len(x), n_copies))
    with torch.no_grad():
        for i in range(0, len(x), per_chunk):
            check_cancel(cancel)
            xb = x[i:i + per_chunk]
            ob = overlays[picks[i:i + per_chunk]]                      # (b, n, C, H, W)
            if blend == "add":   # the paper's superimposition: pixel sum, clipped to the data range
                mix = np.clip(xb[:, None] + ob, value_range[0], value_range[1])
            else:
                mix = (1 - alpha) * xb[:, None] + alpha * ob
            logits = subject.forward(torch.from_numpy(mix.reshape(-1, *x.shape[1:]).astype(np.float32)))
            logp = torch.log_softmax(logits.float(), dim=1)
            ent = -(logp.exp() * logp).sum(dim=1) / np.log(2)            # across classes, per copy
            out[i:i + len(xb)] = ent.reshape(len(xb), n_copies).mean(dim=1).cpu().numpy()
    return out


def _trigger_arrays(trigger: dict, shape) -> tuple[np.ndarray, np.ndarray, int | None]:
    c, h, w = shape
    try:
        mask = np.asarray(trigger["mask"], np.float32)
        pattern = np.asarray(trigger["pattern"], np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProbeError(f"trigger must be {{'mask': HxW, 'pattern': CxHxW}} ({exc})") from None
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if pattern.ndim == 2:
        pattern = pattern[None]
    if mask.shape != (h, w) or pattern.shape[1:] != (h, w) or pattern.shape[0] not in (1, c):
        raise ProbeError(f"trigger mask {mask.shape} / pattern {pattern.shape} does not fit input {tuple(shape)}")
    target = next((trigger[k] for k in ("target", "suspected_target", "candidate_class")
                   if trigger.get(k) is not None), None)  # an unflagged NC result still names its candidate
    return mask, pattern, None if target is None else int(target)


def _stats(e: np.ndarray, thr: float) -> dict:
    if len(e) == 0:
        return {"n": 0}
    return {"n": int(len(e)), "entropy_mean": round(float(e.mean()), 4), "entropy_std": round(float(e.std()), 4),
            "entropy_min": round(float(e.min()), 4), "entropy_max": round(float(e.max()), 4),
            "flagged_fraction": round(float((e < thr).mean()), 4)}


def run(subject, params: dict | None = None, *, progress=None, cancel=None) -> ProbeResult:
    """Probe entry point (``strip``)."""
    from probes.neural_cleanse import scan, stamp

    t0 = time.perf_counter()
    p = {**DEFAULTS, **(params or {})}
    progress = progress or null_progress
    data = p.get("data")
    if data is None:
        raise ProbeError("STRIP needs clean images to superimpose: give --data NPZ")
    if not isinstance(data, LabelledData):
        raise ProbeError("params['data'] must be LabelledData (a loaded --data file)")
    shape = tuple(int(s) for s in subject.input_shape)
    x_all = np.asarray(data.x)
    if x_all.ndim != 4:
        raise ProbeError(f"data must be (N, C, H, W) images, got shape {x_all.shape}")
    subject.check_input(x_all)
    y_all = np.asarray(data.y).astype(np.int64)
    if len(np.unique(y_all)) < 2:
        raise ProbeError("clean data holds a single class; STRIP's overlays need images of several classes")
    if not np.isfinite(x_all).all():
        raise ProbeError("data contains NaN or inf")
    x_all = x_all.astype(np.float32, copy=False)
    seed = int(p["seed"])
    rng = np.random.default_rng(seed)
    poison_mask = np.zeros(len(x_all), bool) if data.is_poison is None else np.asarray(data.is_poison, bool)
    clean_idx = rng.permutation(np.flatnonzero(~poison_mask))
    if len(clean_idx) < 30:
        raise ProbeError(f"STRIP needs at least 30 clean images (overlay pool, calibration, test); got {len(clean_idx)}")
    thirds = np.array_split(clean_idx, 3)
    pool, calib, test = (x_all[t] for t in thirds)
    y_test = y_all[thirds[2]]
    cap = int(p["max_inputs"])
    calib, test, y_test = calib[:cap], test[:cap], y_test[:cap]
    n_copies, alpha, frr = int(p["n_copies"]), float(p["alpha"]), float(p["frr"])
    blend = str(p["blend"])
    if blend not in ("add", "average"):
        raise ProbeError("blend must be 'add' or 'average'")
    vrange = (float(x_all.min()), float(x_all.max()))
    if not 0 < frr < 1:
        raise ProbeError("frr must be in (0, 1)")

    # the trigger to stamp: given, recovered by a quick Neural Cleanse run, or none
    trig, trig_source, nc_info = p.get("trigger"), None, None
    mask = pattern = target = None
    trig_flagged = False
    if isinstance(trig, dict):
        mask, pattern, target = _trigger_arrays(trig, shape)
        trig_source = "params"
        if "suspected_target" in trig:  # a Neural Cleanse result: flagged only if it named a target
            trig_flagged = trig["suspected_target"] is not None
        else:
            trig_flagged = bool(trig.get("flagged", True))
    elif p["quick_nc"]:
        nc_data = LabelledData(x_all[clean_idx], y_all[clean_idx], source=data.source, sha256=data.sha256)
        s = scan(subject, {**QUICK_NC, "seed": seed, "data": nc_data},
                 progress=lambda d, t, m="": progress(d, t + 4, f"quick Neural Cleanse: {m}"), cancel=cancel)
        mask, pattern, target = s["mask"], s["pattern"], s["cand"]
        trig_source = "quick-neural-cleanse"
        trig_flagged = bool(s["flagged"])
        nc_info = {"anomaly_index": round(s["anomaly"], 4), "flagged": bool(s["flagged"]), "candidate_class": s["cand"]}

    groups: dict[str, np.ndarray] = {}
    total = 4
    progress(0, total, "STRIP: clean calibration")
    e_cal = entropies(subject, calib, pool, n_copies, alpha, rng, int(p["batch_size"]), cancel, blend, vrange)
    thr = float(np.quantile(e_cal, frr))
    progress(1, total, "STRIP: clean test inputs")
    e_test = entropies(subject, test, pool, n_copies, alpha, rng, int(p["batch_size"]), cancel, blend, vrange)
    groups["clean"] = e_test
    progress(2, total, "STRIP: poisoned inputs")
    flips: dict[str, float] = {}
    if poison_mask.any():
        xp = x_all[poison_mask][:cap]
        groups["poisoned"] = entropies(subject, xp, pool, n_copies, alpha, rng, int(p["batch_size"]), cancel, blend, vrange)
    progress(3, total, "STRIP: stamped inputs")
    if mask is not None:
        sel = test if target is None else test[y_test != target]
        xs = stamp(sel, mask, pattern)
        if target is not None and len(xs):
            flips["stamped"] = float((subject.predict_proba(xs).argmax(1) == target).mean())
        groups["stamped"] = entropies(subject, xs, pool, n_copies, alpha, rng, int(p["batch_size"]), cancel, blend, vrange)
    progress(total, total, "STRIP done")

    frr_measured = float((e_test < thr).mean())
    far_p = float((groups["poisoned"] >= thr).mean()) if "poisoned" in groups and len(groups["poisoned"]) else None
    far_s = float((groups["stamped"] >= thr).mean()) if "stamped" in groups and len(groups["stamped"]) else None
    far = far_p if far_p is not None else far_s
    det = None if far is None else 1.0 - far
    if det is None:
        verdict, score = "inconclusive", 0.0
        summary = f"threshold {thr:.3f} bits at FRR {frr:g}; no trigger or poisoned inputs to test (quick_nc off)"
    else:
        group = "poisoned" if far_p is not None else "stamped"
        hit = det >= float(p["detect_fraction"])
        if group == "stamped" and not trig_flagged:
            # a clean model's smallest adversarial patch can also survive superimposition:
            # without a Neural Cleanse flag this is no evidence of a backdoor
            verdict, score = "clean", 0.25 * det
        else:
            verdict, score = ("backdoored" if hit else "clean"), det
        summary = (f"{100 * det:.0f}% of {group} inputs fall below the clean entropy threshold {thr:.3f} bits "
                   f"(FRR {100 * frr_measured:.1f}%)")
    details = {
        "entropy_mean": round(float(e_test.mean()), 4),
        "entropy_threshold": round(thr, 6),
        "frr": round(frr_measured, 4),
        "frr_target": frr,
        "far": None if far is None else round(far, 4),
        "far_poisoned": None if far_p is None else round(far_p, 4),
        "far_stamped": None if far_s is None else round(far_s, 4),
        "groups": {"calibration": _stats(e_cal, thr), **{k: _stats(v, thr) for k, v in groups.items()}},
        "trigger_source": trig_source,
        "trigger_flagged": trig_flagged,
        "trigger_target": target,
        "trigger_flip_rate": {k: round(v, 4) for k, v in flips.items()} or None,
        "quick_neural_cleanse": nc_info,
        "n_copies": n_copies,
        "alpha": alpha,
        "blend": blend,
    }
    rec = {k: v for k, v in p.items() if k not in ("data", "trigger")}
    rec["data"] = data.describe()
    rec["trigger"] = None if trig_source != "params" else {"target": target, "mask_l1": round(float(mask.sum()), 4)}
    return ProbeResult("strip", verdict, score, summary, params=rec, duration_s=time.perf_counter() - t0,
                       details=details)
