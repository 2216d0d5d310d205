"""The whole repair of one image classifier: split the clean data, measure, repair a copy, measure again, filter, save.

Input: the loaded suspect, clean labelled data and the trigger a flagged
Neural Cleanse run recovered (:func:`trigger_from_result`). The data are split
(seeded) into repair training, validation and a held-out test part that only
the evidence reads. The figures before and after are measured on the same
held-out inputs; Neural Cleanse is re-run on the repaired copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probes.context import RunContext
from probes.data import LabelledData
from probes.errors import ProbeError
from probes.remediation import image_model
from probes.remediation.evidence import ImageEvidence, ImageTrigger, measure_image, residual_risk_image, split
from probes.result import jsonable


@dataclass
class ImageRemediation:
    """Everything ``remediation.json`` holds for an image classifier."""

    method: str
    params: dict[str, Any]
    trigger: dict[str, Any]
    split: dict[str, int]
    before: ImageEvidence
    after: ImageEvidence
    repair: dict[str, Any]
    filter: dict[str, Any]
    residual_risk: str
    timings: dict[str, float] = field(default_factory=dict)
    saved: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    detector_after: Any = field(default=None, repr=False)  # the re-run's ProbeResult (recorded on the repaired subject)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"kind": "image-classifier", "method": self.method, "params": self.params,
                         "trigger": self.trigger, "data": self.data, "split": self.split,
                         "before": self.before.to_dict(), "after": self.after.to_dict(), "repair": self.repair,
                         "filter_measured": self.filter.get("measured"), "residual_risk": self.residual_risk,
                         "timings": {k: round(v, 3) for k, v in self.timings.items()}, "model": self.saved})


def trigger_from_result(result: dict[str, Any], shape: tuple[int, ...]) -> ImageTrigger:
    """The recovered trigger of a *flagged* Neural Cleanse result (``to_dict`` form); ProbeError otherwise."""
    from probes.strip import Trigger

    if result.get("probe") not in (None, "neural-cleanse"):
        raise ProbeError(f"a {result.get('probe')} result holds no image trigger; remediation needs Neural Cleanse's")
    if result.get("suspected_target") is None:
        ai = result.get("anomaly_index")
        raise ProbeError("no flagged result: Neural Cleanse did not flag this model"
                         + (f" (anomaly index {ai:.2f})" if isinstance(ai, (int, float)) else "")
                         + "; there is no recovered trigger to remove")
    t = Trigger.from_mapping(result, tuple(shape), "neural-cleanse")
    assert t.target is not None
    return ImageTrigger(t.mask, t.pattern, int(t.target), "neural-cleanse")


def clean_part(data: LabelledData, subject) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x_clean, y_clean, x_poisoned)`` of a data file checked against the model; ProbeError when unusable."""
    x = np.asarray(data.x, np.float32)
    y = np.asarray(data.y, np.int64)
    if x.ndim != 4:
        raise ProbeError(f"data must be (N, C, H, W) images, got shape {x.shape}")
    subject.check_input(x)
    if y.min() < 0 or y.max() >= subject.num_classes:
        raise ProbeError(f"data labels span {int(y.min())}..{int(y.max())} but the model has {subject.num_classes} classes")
    poison = np.zeros(len(x), bool) if data.is_poison is None else np.asarray(data.is_poison, bool)
    xc, yc = x[~poison], y[~poison]
    if len(xc) < 40 or len(np.unique(yc)) < 2:
        raise ProbeError(f"remediation needs at least 40 clean labelled images of several classes, got {len(xc)}")
    return xc, yc, x[poison]


def detector_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The few Neural Cleanse figures the before/after table shows (from a result's ``to_dict``)."""
    return {"anomaly_index": result.get("anomaly_index"), "flagged": result.get("suspected_target") is not None,
            "candidate_class": result.get("candidate_class"), "trigger_l1": result.get("mask_l1"),
            "verdict": result.get("verdict")}


def run_detector(subject, x: np.ndarray, y: np.ndarray, ctx: RunContext, *, source: str = "remediation"):
    """Neural Cleanse (default settings, the remediation's seed) on ``subject`` with clean data ``x``, ``y``.

    Returns the probe's :class:`~probes.result.ProbeResult` (recorded as a run by the caller).
    """
    from probes import registry
    from probes.neural_cleanse import run

    params = registry.get("neural-cleanse").resolve_params({"seed": int(ctx.params.get("seed", 0))})
    inner = ctx.child("neural-cleanse", params, stage_prefix="detector: ")
    inner.data = LabelledData(x, y, source=source)
    return run(subject, inner)


def check_trainable(subject) -> None:
    """ProbeError (one line) when the image classifier has nothing to fine-tune or prune."""
    params = list(subject.module.parameters())
    if not params or not any(q.dtype.is_floating_point for q in params):
        raise ProbeError("the model has no trainable floating-point parameters; it cannot be fine-tuned or pruned")


def remediate_image(subject, data: LabelledData, trigger: ImageTrigger, ctx: RunContext, *,
                    real: ImageTrigger | None = None, out_dir: Path | None = None, arch: str | None = None,
                    before_detector: dict[str, Any] | None = None,
                    holdout: LabelledData | None = None) -> tuple[ImageRemediation, Any]:
    """Repair a copy of ``subject``; returns the figures and the repaired subject (written to ``out_dir`` if given).

    ``ctx.params`` are the resolved image settings (:func:`probes.remediation.params.resolve_image`);
    ``real`` is the ground-truth trigger when known (the zoo); ``before_detector`` the flagged
    Neural Cleanse figures the trigger came from; ``holdout`` separate clean data for the evidence (else a
    ``test_fraction`` share of ``data`` is held out).
    """
    from probes.remediation.image_prune import prune
    from probes.remediation.image_unlearn import unlearn
    from probes.remediation.input_filter import image_filter

    p = ctx.params
    t0 = time.perf_counter()
    xc, yc, x_poison = clean_part(data, subject)
    s = split(xc, yc, seed=int(p["seed"]), val_fraction=float(p["val_fraction"]),
              test_fraction=0.0 if holdout is not None else float(p["test_fraction"]))
    if holdout is not None:
        hx, hy, _ = clean_part(holdout, subject)
        s.x_test, s.y_test, s.idx_test = hx, hy, None
    before = measure_image(subject, s, trigger, real=real, x_poison=x_poison if len(x_poison) else None)
    before.detector = before_detector
    work = image_model.working_copy(subject)
    ctx.check_cancel()
    t_rep = time.perf_counter()
    if p["method"] == "prune":
        report = prune(work, trigger, s, ctx).to_dict()
    else:
        report = unlearn(work, trigger, s, ctx, teacher=subject.module).to_dict()
    repair_s = time.perf_counter() - t_rep
    after = measure_image(work, s, trigger, real=real, x_poison=x_poison if len(x_poison) else None)
    det_s = 0.0
    after_result = None
    if p["rerun_detector"]:
        t_det = time.perf_counter()
        after_result = run_detector(work, xc, yc, ctx, source=data.source)
        after.detector = detector_summary(after_result.to_dict())
        det_s = time.perf_counter() - t_det
    ctx.progress(0, 1, "calibrating the input filter", stage="filter")
    ov = s.idx_train[:200] if s.idx_train is not None else np.arange(0)
    overlay_ref = {"data_sha256": data.sha256, "data_source": data.source, "clean_indices": [int(i) for i in ov],
                   "note": "indices into the data file's clean images (is_poison false), in file order"}
    filt = image_filter(work, trigger, x_calib=s.x_val, x_test=s.x_test, y_test=s.y_test, overlays=s.x_train[:200],
                        overlay_ref=overlay_ref, frr=float(p["filter_frr"]), n_copies=int(p["strip_copies"]),
                        seed=int(p["seed"]), real=real, cancel=ctx.cancel)
    ctx.progress(1, 1, "input filter calibrated", stage="filter")
    saved = None
    if out_dir is not None:
        saved = image_model.save(work, Path(out_dir), arch=arch)
        saved["reload_max_prob_diff"] = image_model.check_saved(work, saved, s.x_test)
    timings = {"repair_s": repair_s, "detector_rerun_s": det_s, "total_s": time.perf_counter() - t0}
    result = ImageRemediation(str(p["method"]), dict(p), trigger.describe(), s.sizes(), before, after, report, filt,
                              residual_risk_image(before, after, acc_margin=float(p["acc_margin"])), timings, saved,
                              data.describe())
    result.detector_after = after_result
    return result, work
