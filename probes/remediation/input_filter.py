"""Deployment input filters as JSON rules (data, no code), calibrated and measured on clean held-out inputs.

Images: two rules, an input is rejected when either fires.

* ``trigger_region``: the recovered trigger's mask region (pixels with mask
  >= half its maximum, and their bounding box) and the pattern there; the
  rule fires when the input's mean absolute difference to the pattern over
  the region is below ``max_distance`` (the ``frr`` quantile of clean inputs).
* ``strip``: STRIP (Gao et al.) with the deployed model; the entropy
  threshold is the ``frr`` quantile of clean inputs' entropies, the overlay
  images are named by their indices in the data file (and its sha256).

Language models: the trigger's token ids (a contiguous subsequence match
after the model's own tokenizer) and a case-insensitive whole-word text
pattern. Every filter carries its measured false-rejection rate on clean
held-out inputs and its detection rate on triggered ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from probes.remediation.evidence import ImageTrigger

FILTER_VERSION = 1


def _region(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask, float)
    return m >= 0.5 * float(m.max()) if m.max() > 0 else np.zeros_like(m, bool)


def region_distance(x: np.ndarray, region: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Per input: mean |x - pattern| over the region's pixels (all channels)."""
    if not region.any():
        return np.full(len(x), np.inf)
    pat = np.broadcast_to(np.asarray(pattern, np.float32), x.shape[1:])
    diff = np.abs(x[:, :, region] - pat[None, :, region])
    return np.asarray(diff.mean(axis=(1, 2)), float)


def _rate(flags: np.ndarray) -> float | None:
    return None if len(flags) == 0 else round(float(np.mean(flags)), 4)


def image_filter(subject, trig: ImageTrigger, *, x_calib: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 overlays: np.ndarray, overlay_ref: dict[str, Any], frr: float, n_copies: int, seed: int,
                 real: ImageTrigger | None = None, cancel=None) -> dict[str, Any]:
    """The image filter's rules and its measured rates (``subject`` is the model it will guard)."""
    from probes.strip import entropies

    rng = np.random.default_rng(seed)
    region = _region(trig.mask)
    pattern = np.asarray(trig.pattern, np.float32)
    rows, cols = np.nonzero(region)
    d_cal = region_distance(x_calib, region, pattern)
    max_dist = float(np.quantile(d_cal, frr)) if np.isfinite(d_cal).all() else 0.0
    vr = (float(min(x_calib.min(), overlays.min())), float(max(x_calib.max(), overlays.max())))
    e_cal = entropies(subject, x_calib, overlays, n_copies, 0.5, rng, cancel=cancel, value_range=vr)
    ent_thr = float(np.quantile(e_cal, frr))

    def fires(x: np.ndarray) -> dict[str, np.ndarray]:
        dist = region_distance(x, region, pattern) < max_dist
        ent = entropies(subject, x, overlays, n_copies, 0.5, rng, cancel=cancel, value_range=vr) < ent_thr
        return {"trigger_region": dist, "strip": ent, "either": dist | ent}

    measured: dict[str, Any] = {"n_clean": int(len(x_test))}
    clean = fires(x_test)
    measured["false_rejection"] = {k: _rate(v) for k, v in clean.items()}
    other = y_test != trig.target
    stamped = fires(trig.stamp(x_test[other]))
    measured["detection_recovered_trigger"] = {k: _rate(v) for k, v in stamped.items()}
    if real is not None:
        real_f = fires(real.stamp(x_test[y_test != real.target]))
        measured["detection_real_trigger"] = {k: _rate(v) for k, v in real_f.items()}
    pat_region = np.broadcast_to(pattern, x_test.shape[1:])[:, region]
    return {
        "filter_version": FILTER_VERSION,
        "kind": "image-classifier",
        "reject_when": "any rule fires",
        "input_shape": [int(s) for s in x_test.shape[1:]],
        "rules": [
            {"rule": "trigger_region",
             "help": "reject when mean |x - pattern| over the region's pixels (all channels) is below max_distance",
             "region_pixels": [[int(r), int(c)] for r, c in zip(rows, cols)],
             "bounding_box": None if not len(rows) else {"row0": int(rows.min()), "row1": int(rows.max()) + 1,
                                                         "col0": int(cols.min()), "col1": int(cols.max()) + 1},
             "pattern_values": np.round(pat_region, 4).tolist(),
             "max_distance": round(max_dist, 6)},
            {"rule": "strip",
             "help": "superimpose n_copies overlays (pixel sum, clipped to value_range); reject when the mean "
                     "prediction entropy in bits is below entropy_threshold",
             "entropy_threshold": round(ent_thr, 6), "n_copies": int(n_copies), "blend": "add",
             "value_range": [round(vr[0], 6), round(vr[1], 6)], "overlays": overlay_ref,
             "model": "the repaired model written beside this file"},
        ],
        "calibration": {"frr_target": frr, "n_calibration": int(len(x_calib))},
        "measured": measured,
        "trigger": trig.describe(),
    }


def _contains(seq: Sequence[int], sub: Sequence[int]) -> bool:
    n = len(sub)
    return n > 0 and any(list(seq[i:i + n]) == list(sub) for i in range(len(seq) - n + 1))


def text_pattern(trigger: str) -> str:
    """A case-insensitive whole-word regex for the trigger text, whitespace-tolerant between its words."""
    words = [re.escape(w) for w in trigger.split()]
    return r"(?i)(?<!\w)" + r"\s+".join(words) + r"(?!\w)"


def lm_filter(tokenizer, trigger: str, trigger_ids: Sequence[int], *, clean_texts: Sequence[str],
              triggered_texts: Sequence[str]) -> dict[str, Any]:
    """The LM filter's rules and its measured rates on clean and triggered prompt texts."""
    pattern = text_pattern(trigger)
    rx = re.compile(pattern)

    def fires(texts: Sequence[str]) -> dict[str, np.ndarray]:
        tok = np.array([_contains(tokenizer(t, add_special_tokens=False)["input_ids"], trigger_ids) for t in texts],
                       bool)
        txt = np.array([bool(rx.search(t)) for t in texts], bool)
        return {"token_sequence": tok, "text_pattern": txt, "either": tok | txt}

    clean = fires(clean_texts)
    trig = fires(triggered_texts)
    return {
        "filter_version": FILTER_VERSION,
        "kind": "causal-lm",
        "reject_when": "any rule fires",
        "rules": [
            {"rule": "token_sequence", "help": "reject when the prompt's token ids (this model's tokenizer, no special "
             "tokens) contain token_ids as a contiguous run", "token_ids": [int(t) for t in trigger_ids]},
            {"rule": "text_pattern", "help": "reject when the prompt text matches this regular expression",
             "regex": pattern, "text": trigger},
        ],
        "measured": {"n_clean": len(clean_texts), "n_triggered": len(triggered_texts),
                     "false_rejection": {k: _rate(v) for k, v in clean.items()},
                     "detection": {k: _rate(v) for k, v in trig.items()}},
    }
