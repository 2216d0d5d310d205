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
* inputs stamped with a recovered trigger give ``far_stamped``: the trigger of
  the Neural Cleanse run of the same scan (``ctx.earlier["neural-cleanse"]``),
  or one handed over as ``ctx.inputs["trigger"]`` (``{"mask", "pattern"[,
  "target"]}``). Without either a quick Neural Cleanse run recovers one
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
from dataclasses import dataclass
from typing import Any

import numpy as np

from probes.context import RunContext
from probes.data import LabelledData
from probes.errors import ProbeError
from probes.progress import check_cancel
from probes.result import ProbeResult

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


@dataclass
class Trigger:
    """A trigger to stamp on clean inputs: mask (H, W), pattern (C, H, W), the class it targets, and whether
    the detector that recovered it flagged it (a clean model's smallest trigger is no evidence)."""

    mask: np.ndarray
    pattern: np.ndarray
    target: int | None
    flagged: bool
    source: str

    @classmethod
    def from_mapping(cls, trigger: Any, shape: tuple[int, ...], source: str) -> Trigger:
        """From a Neural Cleanse result (``suspected_target`` / ``candidate_class``) or a plain ``{mask, pattern}``."""
        c, h, w = shape
        if not isinstance(trigger, dict):
            raise ProbeError(f"trigger must be {{'mask': HxW, 'pattern': CxHxW}}, got {type(trigger).__name__}")
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
        if "suspected_target" in trigger:  # a Neural Cleanse result: flagged only if it named a target
            flagged = trigger["suspected_target"] is not None
        else:
            flagged = bool(trigger.get("flagged", True))
        return cls(mask, pattern, None if target is None else int(target), flagged, source)


def _stats(e: np.ndarray, thr: float) -> dict:
    if len(e) == 0:
        return {"n": 0}
    return {"n": int(len(e)), "entropy_mean": round(float(e.mean()), 4), "entropy_std": round(float(e.std()), 4),
            "entropy_min": round(float(e.min()), 4), "entropy_max": round(float(e.max()), 4),
            "flagged_fraction": round(float((e < thr).mean()), 4)}


def run(subject, ctx: RunContext) -> ProbeResult:  # noqa: C901 - validation, calibration and the verdict of one probe in reading order
    """Probe entry point (``strip``)."""
    from probes.neural_cleanse import scan, stamp

    t0 = time.perf_counter()
    p = ctx.params
    cancel = ctx.cancel
    progress = ctx.progress_callback()
    data = ctx.data
    if data is None:
        raise ProbeError("STRIP needs clean images to superimpose: give --data NPZ")
    if not isinstance(data, LabelledData):
        raise ProbeError("the clean data must be LabelledData (a loaded --data file)")
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
    seed = ctx.seed
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
    vrange = (float(x_all.min()), float(x_all.max()))

    # the trigger to stamp: Neural Cleanse's of the same scan, one handed over, a quick Neural Cleanse run, or none
    trig: Trigger | None = None
    nc_info = None
    if ctx.earlier.get("neural-cleanse", {}).get("mask") is not None:
        trig = Trigger.from_mapping(ctx.earlier["neural-cleanse"], shape, "neural-cleanse")
    elif ctx.inputs.get("trigger") is not None:
        trig = Trigger.from_mapping(ctx.inputs["trigger"], shape, "given")
    elif p["quick_nc"]:
        from probes import registry

        nc_data = LabelledData(x_all[clean_idx], y_all[clean_idx], source=data.source, sha256=data.sha256)
        nc_params = registry.get("neural-cleanse").resolve_params({**QUICK_NC, "seed": seed})
        inner = ctx.child("neural-cleanse", nc_params, stage_prefix="quick ")
        inner.data = nc_data
        s = scan(subject, inner)
        trig = Trigger(s.mask, s.pattern, s.candidate, bool(s.flagged), "quick-neural-cleanse")
        nc_info = {"anomaly_index": round(s.anomaly_index, 4), "flagged": bool(s.flagged),
                   "candidate_class": s.candidate}
    mask = pattern = target = None
    trig_source, trig_flagged = None, False
    if trig is not None:
        mask, pattern, target, trig_source, trig_flagged = trig.mask, trig.pattern, trig.target, trig.source, trig.flagged

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
    if trig is not None and trig.source != "quick-neural-cleanse":
        details["trigger_given"] = {"target": target, "mask_l1": round(float(trig.mask.sum()), 4)}
    return ProbeResult("strip", verdict, score, summary, params=dict(p), duration_s=time.perf_counter() - t0,
                       details=details)
