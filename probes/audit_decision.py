"""Shared machinery of the data audits (``spectral``, ``activation-clustering``).

Both audits look at one class of a suspect training set at a time, split it
in two (each probe its own way), and must then answer two questions before
flagging a single sample:

1. **Is this class poisoned at all?**  A geometric split alone cannot tell: on
   the bundled digits, clean classes such as "1" (with and without a serif)
   and "9" split as cleanly as a class half made of BadNets-poisoned images
   (silhouette 0.36-0.47 for clean classes against 0.25-0.37 for the poisoned
   one; see docs/data-audits.md). What sets a poisoned group apart is that
   *its distinguishing input feature is a trigger*: pasted onto images of
   other classes it makes the model predict this class. We test exactly that
   (the *transplant test*, :func:`transplant_test`).
2. **Which of the two groups is the poison?**  With 10% of the whole set
   poisoned into one of ten classes, the poison is about half of the target
   class, so "the smaller cluster" is a coin flip. The transplant test is
   asymmetric (stamping the clean group's values changes nothing, stamping
   the poison group's values stamps the trigger), so the group whose
   transplant succeeds is the poison.

Flagging then refines membership with the recovered trigger region
(:func:`refine_with_mask`), so a sample whose representation sat on the wrong
side of the geometric split but carries the trigger is still caught.

Everything here is deterministic for a seed (``numpy.random.default_rng``),
prints nothing, and assumes no image shape or class count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probes.context import RunContext
from probes.data import LabelledData
from probes.errors import ProbeError, one_line

# The decision's tunable thresholds are probe parameters (declared in probes.registry, documented in
# docs/data-audits.md); these are fixed parts of the method.
MIN_CLASS_SIZE = 10  # smaller classes are reported but not judged
REFINE_ROUNDS = 6  # reassignment rounds; stops early once stable
SCREEN_SAMPLES = 48  # transplant images tried first; the rest only when the first look promising
SCREEN_MARGIN = 0.3


# -- inputs ----------------------------------------------------------------------------------

@dataclass
class AuditInputs:
    """A validated audit set and its representations at the chosen layer."""

    audit: LabelledData
    reps: np.ndarray  # (N, D) float64
    layer: str
    classes: np.ndarray  # sorted distinct labels
    seed: int


def prepare(subject: Any, ctx: RunContext) -> AuditInputs:
    """Validate the audit set (``ctx.audit``) against ``subject`` and extract representations.

    Raises :class:`ProbeError` (one line) for a missing audit, a shape
    mismatch, labels the model does not have, a single-class audit, or a
    layer that does not exist.
    """
    audit = _checked_audit(subject, ctx.audit, ctx.probe)
    reps, used = _representations(subject, audit, ctx.params.get("layer") or None, ctx.probe)
    return AuditInputs(audit, reps, used, np.unique(audit.y), ctx.seed)


def _checked_audit(subject: Any, audit: Any, probe: str) -> LabelledData:
    """The audit set as float32 images and int64 labels the model knows, at least two classes."""
    if audit is None:
        raise ProbeError(f"{probe} needs a suspect training set: pass --audit NPZ")
    if not isinstance(audit, LabelledData):
        x = getattr(audit, "x", None)
        y = getattr(audit, "y", None)
        if x is None or y is None:
            raise ProbeError(f"{probe}: audit must be a LabelledData (x, y[, is_poison]), got {type(audit).__name__}")
        audit = LabelledData(np.asarray(x), np.asarray(y), getattr(audit, "is_poison", None))
    x = np.asarray(audit.x)
    y = np.asarray(audit.y)
    if x.ndim != 4:
        raise ProbeError(f"{probe}: audit x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise ProbeError(f"{probe}: audit y must be (N,) matching x, got {tuple(y.shape)} for {len(x)} images")
    if len(x) == 0:
        raise ProbeError(f"{probe}: the audit set is empty")
    if audit.is_poison is not None and np.asarray(audit.is_poison).shape != y.shape:
        raise ProbeError(f"{probe}: audit is_poison must be (N,), got {np.asarray(audit.is_poison).shape}")
    if hasattr(subject, "check_input"):
        subject.check_input(x)
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ProbeError(f"{probe}: audit labels must be integers")
        y = y.astype(np.int64)
    if not np.isfinite(x).all():
        raise ProbeError(f"{probe}: audit x contains NaN or inf")
    k = int(getattr(subject, "num_classes", 0) or 0)
    if y.min() < 0 or (k and y.max() >= k):
        raise ProbeError(f"{probe}: audit labels span {int(y.min())}..{int(y.max())} but the model has {k} classes")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ProbeError(f"{probe}: the audit set has a single class ({int(classes[0])}); "
                         "a data audit compares classes and needs at least two")
    return LabelledData(x.astype(np.float32, copy=False), y.astype(np.int64, copy=False),
                        None if audit.is_poison is None else np.asarray(audit.is_poison).astype(bool),
                        source=audit.source, sha256=audit.sha256)


def _representations(subject: Any, audit: LabelledData, layer: Any, probe: str) -> tuple[np.ndarray, str]:
    """Float64 activations (N, D) of the audit set at ``layer`` (default: the penultimate), and the layer used."""
    if layer is not None and not isinstance(layer, str):
        raise ProbeError(f"{probe}: layer must be a name, got {layer!r}")
    if getattr(subject, "feature_fn", None) is not None:
        available = subject.layer_names()
        if layer is not None and layer not in available:
            raise ProbeError(f"{probe}: this subject exposes only the layer {available[0]!r}, not {layer!r}")
    try:
        used = layer or subject.penultimate_layer()
        reps = subject.activations(audit.x, used)
    except ProbeError:
        raise
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ProbeError(f"{probe}: could not compute activations at layer {layer or 'penultimate'}: "
                         f"{one_line(exc)}") from None
    reps = np.asarray(reps, dtype=np.float64).reshape(len(audit), -1)
    if not np.isfinite(reps).all():
        raise ProbeError(f"{probe}: the model's activations at {used} contain NaN or inf")
    return reps, used


# -- 1-D split ---------------------------------------------------------------------------------

def decision_params(params: dict) -> dict[str, Any]:
    """The per-class decision's parameters shared by both audits (resolved ``params``), as keyword arguments of
    :func:`decide_class`."""
    return {"min_transplant": params["min_transplant"], "min_asymmetry": params["min_asymmetry"],
            "fraction": params["mask_fraction"], "transplant_samples": params["transplant_samples"]}


def two_means_1d(values: np.ndarray) -> tuple[float, float]:
    """Exact 2-means on a line (Otsu): ``(threshold, r2)``.

    ``r2`` is the share of the variance explained by the best split (1 - within/total).
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = len(v)
    if n < 2 or v[0] == v[-1]:
        return float(v[0]) if n else 0.0, 0.0
    cs = np.cumsum(v)
    cs2 = np.cumsum(v * v)
    k = np.arange(1, n)
    m1 = cs[:-1] / k
    m2 = (cs[-1] - cs[:-1]) / (n - k)
    within = (cs2[:-1] - k * m1 ** 2) + ((cs2[-1] - cs2[:-1]) - (n - k) * m2 ** 2)
    total = cs2[-1] - n * (cs[-1] / n) ** 2
    j = int(np.argmin(within))
    return float((v[j] + v[j + 1]) / 2), float(max(0.0, 1.0 - within[j] / total))


# -- the transplant test ---------------------------------------------------------------------

def score_histogram(values: np.ndarray, bins: int = 16) -> dict[str, Any]:
    """A compact distribution of one class's outlier scores for reports and the TUI: ``{range, counts}``.

    A poisoned class shows two humps (the split the decision tested); a clean one a single hump.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"range": None, "counts": []}
    lo, hi = float(v.min()), float(v.max())
    counts, _ = np.histogram(v, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))
    return {"range": [round(lo, 6), round(hi, 6)], "counts": [int(c) for c in counts]}


def trigger_mask(xa: np.ndarray, xb: np.ndarray, fraction: float) -> np.ndarray:
    """Input elements where groups ``a`` and ``b`` differ most *consistently* (Welch t).

    A trigger is the same in every poisoned image, so its elements have a huge
    t statistic; content differences vary from image to image and score lower.
    Returns a boolean mask of shape ``x.shape[1:]``.
    """
    ma, mb = xa.mean(0), xb.mean(0)
    va, vb = xa.var(0), xb.var(0)
    eps = 1e-3 * max(float(np.concatenate([xa, xb]).var()), 1e-12)
    t = np.abs(ma - mb) / np.sqrt(va / len(xa) + vb / len(xb) + eps)
    top = float(t.max())
    if top <= 0:
        return np.zeros(xa.shape[1:], bool)
    return t >= fraction * top


@dataclass
class Transplant:
    """Outcome of stamping each group's values on its trigger mask onto other classes' images."""

    rate_a: float
    rate_b: float
    baseline: float
    mask_size: int

    @property
    def poison_is_a(self) -> bool:
        return self.rate_a >= self.rate_b

    @property
    def best(self) -> float:
        return max(self.rate_a, self.rate_b)

    @property
    def excess(self) -> float:
        """How far the better side's transplant rate exceeds the unmodified images' rate."""
        return max(0.0, self.best - self.baseline)

    @property
    def asymmetry(self) -> float:
        return abs(self.rate_a - self.rate_b)


def _predict(subject: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(subject.predict_proba(np.ascontiguousarray(x, dtype=np.float32))).argmax(1)


def other_class_sample(y: np.ndarray, cls: int, rng: np.random.Generator,
                       n: int) -> np.ndarray:
    """Indices of up to ``n`` audit images of other classes (seeded)."""
    others = np.flatnonzero(y != cls)
    if len(others) > n:
        others = np.sort(rng.choice(others, size=n, replace=False))
    return others


class _Others:
    """Other-class images for one class's transplant tests, with lazily computed unmodified predictions."""

    def __init__(self, subject: Any, x: np.ndarray, idx: np.ndarray, cls: int):
        self.subject, self.x, self.idx, self.cls = subject, x, idx, cls
        self.hit = np.zeros(len(idx), bool)
        self.done = 0

    def baseline(self, upto: int) -> float:
        """Share of the first ``upto`` images the model already assigns to the class."""
        upto = min(upto, len(self.idx))
        if upto > self.done:
            self.hit[self.done:upto] = _predict(self.subject, self.x[self.idx[self.done:upto]]) == self.cls
            self.done = upto
        return float(self.hit[:upto].mean()) if upto else 0.0


def transplant_test(subject: Any, x: np.ndarray, cls: int, idx_a: np.ndarray, idx_b: np.ndarray,
                    others: np.ndarray | _Others, *, fraction: float,
                    min_excess: float | None = None,
                    screen: int = SCREEN_SAMPLES) -> tuple[Transplant, np.ndarray]:
    """Stamp each group's mean values on the consistent-difference mask onto other classes' images.

    Returns the rates at which the model then predicts ``cls`` (and the rate
    for the unmodified images), and the mask. With ``min_excess``, the first
    ``screen`` images are tried first and the test stops there when neither
    side comes within :data:`SCREEN_MARGIN` of the decision line (clean
    classes sit near 0, so most classes cost a few dozen forward passes).
    """
    if not isinstance(others, _Others):
        others = _Others(subject, x, np.asarray(others, np.int64), cls)
    mask = trigger_mask(x[idx_a], x[idx_b], fraction)
    n = len(others.idx)
    if not mask.any() or n == 0:
        return Transplant(0.0, 0.0, others.baseline(n), int(mask.sum())), mask
    stamps = [x[idx].mean(0) for idx in (idx_a, idx_b)]

    def hits(lo: int, hi: int) -> np.ndarray:
        sel = x[others.idx[lo:hi]]
        both = np.concatenate([np.where(mask, st, sel) for st in stamps])
        return (_predict(subject, both) == cls).reshape(2, hi - lo).sum(1)

    first = min(n, screen) if min_excess is not None else n
    h = hits(0, first)
    if first < n:
        base = others.baseline(first)
        if max(h) / first - base >= min_excess - SCREEN_MARGIN:
            h = h + hits(first, n)
            first = n
    r = h / first
    return Transplant(float(r[0]), float(r[1]), others.baseline(first), int(mask.sum())), mask


def refine_with_mask(x_cls: np.ndarray, poison: np.ndarray, *, fraction: float,
                     rounds: int = REFINE_ROUNDS) -> np.ndarray:
    """Reassign a class's members by distance, on the trigger mask, to the two group means.

    ``poison`` is a boolean array over ``x_cls``; returns the refined one. A
    refinement that would empty either group is ignored.
    """
    poison = poison.copy()
    for _ in range(rounds):
        if poison.all() or not poison.any():
            break
        mask = trigger_mask(x_cls[poison], x_cls[~poison], fraction)
        if not mask.any():
            break
        xm = x_cls[:, mask]
        mp = x_cls[poison][:, mask].mean(0)
        mc = x_cls[~poison][:, mask].mean(0)
        new = ((xm - mp) ** 2).sum(1) < ((xm - mc) ** 2).sum(1)
        if new.all() or not new.any() or np.array_equal(new, poison):
            poison = new if (new.any() and not new.all()) else poison
            break
        poison = new
    return poison


# -- per-class decision ------------------------------------------------------------------------

@dataclass
class ClassDecision:
    """What one class got: the split statistics, the transplant test, the verdict, the flags."""

    cls: int
    n: int
    poisoned: bool = False
    flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # audit indices
    stats: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"class": int(self.cls), "n": int(self.n), "poisoned": bool(self.poisoned),
                "flagged": int(len(self.flagged)), **self.stats, "reason": self.reason}


def decide_class(subject: Any, x: np.ndarray, y: np.ndarray, cls: int, idx: np.ndarray,
                 group_a: np.ndarray, rng: np.random.Generator, *, split_ok: bool, split_reason: str,
                 min_transplant: float, min_asymmetry: float,
                 fraction: float, transplant_samples: int,
                 stats: dict[str, Any] | None = None, cache: dict | None = None) -> ClassDecision:
    """Judge one class from a probe's 2-way split of it (``group_a``: boolean over ``idx``).

    ``split_ok`` is the probe's own geometric gate (a split worth testing);
    the transplant test then decides whether the split is a backdoor and which
    side is the poison; flagged samples are the poison side refined on the
    trigger mask.
    """
    d = ClassDecision(int(cls), len(idx), stats=dict(stats or {}))
    if len(idx) < MIN_CLASS_SIZE:
        d.reason = f"too few samples to judge (< {MIN_CLASS_SIZE})"
        return d
    if group_a.all() or not group_a.any():
        d.reason = "no split"
        return d
    if not split_ok:
        d.reason = split_reason
        return d
    cache = {} if cache is None else cache
    if cls not in cache:  # the same other-class images (and their predictions) for every split of this class
        cache[cls] = _Others(subject, x, other_class_sample(y, cls, rng, transplant_samples), cls)
    tr, mask = transplant_test(subject, x, cls, idx[group_a], idx[~group_a], cache[cls], fraction=fraction,
                               min_excess=min_transplant)
    d.stats.update({"transplant_rate": round(tr.best, 4), "transplant_other_side": round(min(tr.rate_a, tr.rate_b), 4),
                    "transplant_baseline": round(tr.baseline, 4), "trigger_mask_size": tr.mask_size})
    if tr.excess < min_transplant or tr.asymmetry < min_asymmetry:
        d.reason = (f"split is not a trigger: transplant {tr.best:.2f} (baseline {tr.baseline:.2f}, "
                    f"other side {min(tr.rate_a, tr.rate_b):.2f})")
        return d
    poison = group_a if tr.poison_is_a else ~group_a
    poison = refine_with_mask(x[idx], poison, fraction=fraction)
    d.poisoned = True
    d.flagged = np.sort(idx[poison])
    d.stats["poison_fraction"] = round(float(poison.mean()), 4)
    d.reason = (f"the flagged group's trigger candidate sends {tr.best:.0%} of other classes' "
                f"images here (baseline {tr.baseline:.0%}, other group {min(tr.rate_a, tr.rate_b):.0%})")
    return d


# A probe's candidate 2-way splits of one class: (group_a over the class's indices, split_ok, why not, stats)
Split = tuple[np.ndarray, bool, str, dict[str, Any]]


def audit_classes(subject: Any, ctx: RunContext, inputs: AuditInputs,
                  splits: Callable[[np.ndarray, int], Iterable[Split]], *, min_size: int,
                  too_small: str) -> list[ClassDecision]:
    """Judge every class from the probe's candidate splits: the first poisoned split wins, else the one whose
    transplant came closest. Classes smaller than ``min_size`` get ``too_small`` as their reason."""
    x, y = inputs.audit.x, inputs.audit.y
    rng = np.random.default_rng(inputs.seed)
    shared = decision_params(ctx.params)
    decisions = []
    total = len(inputs.classes)
    for i, cls in enumerate(inputs.classes):
        ctx.check_cancel()
        idx = np.flatnonzero(y == cls)
        best: ClassDecision | None = None
        if len(idx) >= min_size:
            cache: dict = {}
            for group_a, ok, why, stats in splits(idx, int(cls)):
                ctx.check_cancel()
                dec = decide_class(subject, x, y, int(cls), idx, group_a, rng, split_ok=ok, split_reason=why,
                                   stats=stats, cache=cache, **shared)
                if best is None or _closeness(dec) > _closeness(best):
                    best = dec
                if dec.poisoned:
                    break
        decisions.append(best or ClassDecision(int(cls), len(idx), reason=too_small))
        ctx.progress(i + 1, total, f"class {int(cls)}", unit="classes")
    ctx.check_cancel()
    return decisions


def _closeness(d: ClassDecision) -> tuple[bool, float]:
    return d.poisoned, float(d.stats.get("transplant_rate", -1.0))


# -- evaluation, verdict -----------------------------------------------------------------------

def precision_recall(flagged: np.ndarray, is_poison: np.ndarray | None, n: int) -> dict[str, float] | None:
    """Precision, recall and F1 of ``flagged`` (indices) against ground truth, over the whole set."""
    if is_poison is None:
        return None
    truth = np.asarray(is_poison, bool)
    pred = np.zeros(n, bool)
    pred[np.asarray(flagged, np.int64)] = True
    tp = int((pred & truth).sum())
    precision = tp / int(pred.sum()) if pred.any() else (1.0 if not truth.any() else 0.0)
    recall = tp / int(truth.sum()) if truth.any() else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "true_positives": tp, "n_poison": int(truth.sum()), "n_flagged": int(pred.sum())}


def assemble(probe: str, decisions: list[ClassDecision], inputs: AuditInputs, params: dict,
             extra: dict[str, Any], duration: float):
    """Build the :class:`ProbeResult` both audits return."""
    from probes.result import ProbeResult

    flagged = np.sort(np.concatenate([d.flagged for d in decisions])) if decisions else np.zeros(0, np.int64)
    poisoned = [d.cls for d in decisions if d.poisoned]
    excess = [max(0.0, d.stats.get("transplant_rate", 0.0) - d.stats.get("transplant_baseline", 0.0))
              for d in decisions]
    score = max(excess) if excess else 0.0
    if poisoned:
        verdict = "backdoored" if score >= 0.8 else "suspicious"
        summary = (f"{len(flagged)} of {len(inputs.audit)} samples flagged in poisoned class"
                   f"{'es' if len(poisoned) > 1 else ''} {', '.join(map(str, poisoned))}")
    else:
        verdict = "clean"
        score = min(score, 0.5 * float(params["min_transplant"]))  # below the decision line by construction
        summary = f"no class of {len(decisions)} looks poisoned; nothing flagged"
    details: dict[str, Any] = {
        "flagged_indices": [int(i) for i in flagged],
        "per_class": [d.to_dict() for d in decisions],
        "poisoned_classes": poisoned,
        "layer": inputs.layer,
        "n_samples": len(inputs.audit),
        **extra,
    }
    pr = precision_recall(flagged, inputs.audit.is_poison, len(inputs.audit))
    if pr is not None:
        details.update(pr)
        summary += f" (precision {pr['precision']:.2f}, recall {pr['recall']:.2f})"
    return ProbeResult(probe=probe, verdict=verdict, score=score, summary=summary, params=dict(params),
                       duration_s=duration, details=details)
