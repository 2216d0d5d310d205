"""Pruning (Neural Cleanse, section VI-B): cut the penultimate units the trigger excites most.

Units of the penultimate representation are ranked by their mean activation
on trigger-stamped minus clean validation inputs; the highest-gap units are
pruned ``prune_step`` at a time by zeroing their column of the classifier
head (the unit no longer reaches any class). Pruning stops as soon as the
recovered trigger's validation success is below ``asr_target``. A step that
costs more than ``acc_margin`` of clean validation accuracy (against the
original), or does not lower the trigger's success, is undone and the next
units in the ranking are tried; at most ``max_prune`` of the units are cut.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probes.context import RunContext
from probes.remediation.evidence import ImageTrigger, Split, accuracy, attack_success
from probes.remediation.image_model import head_weight


@dataclass
class PruneReport:
    """Which units were pruned and what each step did on the validation split."""

    layer: str
    units_total: int
    pruned: list[int] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"method": "prune", "layer": self.layer, "units_total": self.units_total,
                "units_pruned": len(self.pruned), "pruned_units": self.pruned, "history": self.history,
                "stopped": self.stopped, "duration_s": round(self.duration_s, 3)}


def activation_gap(subject, x: np.ndarray, trig: ImageTrigger) -> np.ndarray:
    """Per penultimate unit: mean activation on stamped inputs minus on the same inputs clean."""
    clean = subject.activations(x)
    stamped = subject.activations(trig.stamp(x))
    return np.asarray(stamped.mean(0) - clean.mean(0), float)


def prune(subject, trig: ImageTrigger, s: Split, ctx: RunContext) -> PruneReport:
    """Prune ``subject``'s head columns in place (see the module docstring)."""
    import torch

    p = ctx.params
    t0 = time.perf_counter()
    name, w = head_weight(subject)
    sel = s.y_val != trig.target
    gap = activation_gap(subject, s.x_val[sel] if sel.any() else s.x_val, trig)
    if p["prune_rank"] == "target-push":  # the unit's extra push towards the target logit under the trigger
        gap = gap * w.detach()[int(trig.target)].cpu().numpy().astype(float)
    order = [int(i) for i in np.argsort(-gap, kind="stable")]
    d = int(w.shape[1])
    step = max(1, int(round(float(p["prune_step"]) * d)))
    limit = int(float(p["max_prune"]) * d)
    base_acc = accuracy(subject, s.x_val, s.y_val)
    margin, target = float(p["acc_margin"]), float(p["asr_target"])
    asr = attack_success(subject, s.x_val, s.y_val, trig) or 0.0
    report = PruneReport(f"input:{name}", d)
    report.history.append({"units_pruned": 0, "val_accuracy": round(base_acc, 4), "val_recovered_asr": round(asr, 4)})
    if asr < target:
        report.stopped = f"recovered trigger already below {target:g} on validation; nothing pruned"
        report.duration_s = time.perf_counter() - t0
        return report
    n, tried, skipped = 0, 0, 0
    report.stopped = f"reached the pruning limit ({limit} of {d} units) above the success target"
    while n < limit and tried < len(order):
        ctx.check_cancel()
        batch = order[tried:tried + step]
        tried += len(batch)
        saved = w.detach()[:, batch].clone()
        with torch.no_grad():
            w[:, batch] = 0.0
        acc = accuracy(subject, s.x_val, s.y_val)
        asr_new = attack_success(subject, s.x_val, s.y_val, trig) or 0.0
        if base_acc - acc > margin or asr_new >= asr:
            # too costly for clean accuracy (or no help against the trigger): undo, try the next units
            with torch.no_grad():
                w[:, batch] = saved
            skipped += len(batch)
            continue
        asr = asr_new
        n += len(batch)
        report.pruned += batch
        report.history.append({"units_pruned": n, "val_accuracy": round(acc, 4), "val_recovered_asr": round(asr, 4)})
        ctx.progress(n, limit, f"pruned {n} of {d} units, trigger success {100 * asr:.0f}%", stage="prune")
        if asr < target:
            report.stopped = f"recovered trigger below {target:g} on validation"
            break
    else:
        if n < limit:
            report.stopped = (f"every unit tried: {skipped} left in place because pruning them cost more than "
                              f"{100 * margin:.1f} points of clean accuracy or did not lower the trigger's success")
    report.duration_s = time.perf_counter() - t0
    return report
