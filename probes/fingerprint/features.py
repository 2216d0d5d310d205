"""Behavioural fingerprints: a fixed-length, named feature vector per model.

A fingerprint is computed from examiner-controlled reference inputs only (a
seeded synthetic set of the subject's input shape, plus ``--data`` images when
given) and from the model's own weights. Feature names are stable strings with
a group prefix, so fingerprints of different models are aligned by name and a
baseline built from other architectures still shares the architecture-agnostic
groups. The groups (see docs/fingerprint.md for the full table):

Image classifiers

* ``out.<set>.*``   output distribution on the reference set ``syn`` (synthetic)
  or ``data`` (examiner images): entropy, confidence, margin, logit spread and
  how concentrated the predicted classes are (sorted class shares, so the
  feature does not depend on *which* class a model prefers).
* ``trig.<kind>.*`` trigger sensitivity, label-free: small random patches
  stamped at a grid of positions (``patch``) and random noise images blended
  over the whole input (``blend``, alpha 0.1-0.3). Recorded: how often the
  prediction flips and how strongly the flips pile onto one class. A backdoor
  is a shortcut from a small or faint input change to one class; these
  features measure exactly that without knowing the trigger.
* ``pen.*``         penultimate representation (input of the classifier head,
  forward hook, or ``feature_fn`` on TorchScript): mean, spread, sparsity,
  the largest per-unit shift under the trigger probes (backdoor neurons).
* ``act.<layer>.*`` per named intermediate layer (forward hooks, ``nn.Module``
  subjects only): mean, std, fraction of zeros, mean L2 norm. Architecture
  specific: only used against a baseline of the same layer names.
* ``w.*``           weight statistics: head row-norm and bias outliers (the
  target class of a backdoor often gets a larger head row), kurtosis and
  norm of every parameter tensor (``w.<name>.*``, architecture specific).
* ``meta.*``        per-model meta-features from earlier probes in the same
  scan when available: Neural Cleanse norm distribution (anomaly index, min /
  median L1 ratio, spread), STRIP entropy statistics.

Causal LMs

* ``lm.out.*`` next-token distribution on a small built-in prompt set (or the
  examiner's prompt file): entropy, top-1 probability.
* ``lm.h<i>.*`` hidden-state statistics per layer: mean, std, mean L2 norm,
  largest per-dimension mean |z| (outlier dimensions).
* ``lm.trig.*`` how much inserting random vocabulary words into the prompts
  moves the next-token distribution (mean and max total-variation distance).
* ``w.*`` as above.

Everything is deterministic for a ``seed``; no global random state is touched.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probes.errors import ProbeError
from probes.progress import check_cancel

FEATURE_VERSION = 1  # bump when features change: invalidates cached fingerprints


@dataclass
class Fingerprint:
    """A model's fingerprint: ``vector[i]`` is the value of ``feature_names[i]``."""

    vector: np.ndarray
    feature_names: list[str]
    sha256: str | None = None
    kind: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.feature_names, (float(v) for v in self.vector)))

    def to_record(self) -> dict[str, Any]:
        """JSON-able form (what a stored baseline keeps)."""
        return {"sha256": self.sha256, "vector": [float(v) for v in self.vector],
                "feature_names": list(self.feature_names), "kind": self.kind, "version": FEATURE_VERSION}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Fingerprint:
        names = list(rec.get("feature_names") or [])
        vec = np.asarray(rec.get("vector") or [], dtype=np.float64)
        if len(names) != len(vec):
            raise ProbeError(f"baseline fingerprint {rec.get('sha256', '?')[:12]} has {len(vec)} values "
                             f"for {len(names)} feature names")
        return cls(vec, names, rec.get("sha256"), rec.get("kind", ""))


# -- helpers ----------------------------------------------------------------------------------

def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _kurtosis(a: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    if a.size < 4:
        return 0.0
    s = a.std()
    if s < 1e-12:
        return 0.0
    return float(np.mean(((a - a.mean()) / s) ** 4) - 3.0)


def _max_robust_z(v: np.ndarray) -> float:
    """Largest (v - median) / (1.4826 * MAD) over the entries (0 when degenerate)."""
    v = np.asarray(v, np.float64).ravel()
    if v.size < 3:
        return 0.0
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    if mad < 1e-12:
        mad = v.std() + 1e-12
    return float((v.max() - med) / mad)


def synthetic_references(shape: tuple[int, ...], n: int, seed: int, value_range=(0.0, 1.0)) -> np.ndarray:
    """Seeded synthetic reference images: uniform noise, smoothed blobs and sparse strokes, in ``value_range``."""
    from scipy.ndimage import uniform_filter

    rng = np.random.default_rng([seed, 0xF1])
    c, h, w = (int(s) for s in shape)
    k = n // 3
    noise = rng.uniform(0, 1, size=(k, c, h, w))
    sm = uniform_filter(uniform_filter(rng.uniform(0, 1, size=(k, c, h, w)), size=(1, 1, 5, 5)), size=(1, 1, 5, 5))
    mn, mx = sm.min(axis=(1, 2, 3), keepdims=True), sm.max(axis=(1, 2, 3), keepdims=True)
    sm = (sm - mn) / np.maximum(mx - mn, 1e-6)
    # sparse strokes: a few bright random line segments on a dark background (digit-like)
    m = n - 2 * k
    strokes = np.zeros((m, c, h, w))
    for i in range(m):
        for _ in range(rng.integers(2, 5)):
            r0, c0 = rng.integers(0, h), rng.integers(0, w)
            ang = rng.uniform(0, math.pi)
            length = rng.integers(max(2, h // 4), max(3, (3 * h) // 4))
            t = np.arange(length)
            rr = np.clip(np.round(r0 + t * math.sin(ang)).astype(int), 0, h - 1)
            cc = np.clip(np.round(c0 + t * math.cos(ang)).astype(int), 0, w - 1)
            strokes[i, :, rr, cc] = 1.0
    strokes = uniform_filter(strokes, size=(1, 1, 2, 2)) if h >= 8 else strokes
    strokes = strokes / np.maximum(strokes.max(axis=(1, 2, 3), keepdims=True), 1e-6)
    x = np.concatenate([noise, sm, strokes])
    lo, hi = float(value_range[0]), float(value_range[1])
    return (lo + (hi - lo) * x).astype(np.float32)


# -- image classifiers ------------------------------------------------------------------------

class _Capture:
    """One forward pass recording named layer outputs (hooks) and the penultimate representation."""

    def __init__(self, subject, max_layers: int = 12):
        self.subject = subject
        self.layers: list[str] = []
        self.head: str | None = None
        self.scripted = subject.feature_fn is not None
        if not self.scripted:
            try:
                pen = subject.penultimate_layer()
                self.head = pen.split(":", 1)[1] if pen.startswith("input:") else None
            except ProbeError:
                self.head = None
            names = [n for n in subject.layer_names() if n != self.head]
            if len(names) > max_layers:  # evenly spaced, always keeping the last
                idx = np.unique(np.linspace(0, len(names) - 1, max_layers).round().astype(int))
                names = [names[i] for i in idx]
            self.layers = names

    def run(self, x: np.ndarray, batch_size: int = 1024, want_layers: bool = True):
        """``(logits, penultimate or None, {layer: (N, D)})`` for images ``x``."""
        import torch

        subj = self.subject
        logits, pens = [], []
        acts: dict[str, list[np.ndarray]] = {n: [] for n in self.layers} if want_layers else {}
        handles = []
        if not self.scripted:
            modules = dict(subj.module.named_modules())

            def mk(name):
                def hook(_m, _i, o):
                    if isinstance(o, torch.Tensor):
                        acts[name].append(o.detach().reshape(o.shape[0], -1).float().cpu().numpy())
                return hook

            if want_layers:
                for n in self.layers:
                    handles.append(modules[n].register_forward_hook(mk(n)))
            if self.head is not None:
                handles.append(modules[self.head].register_forward_hook(
                    lambda _m, i, _o: pens.append(i[0].detach().reshape(i[0].shape[0], -1).float().cpu().numpy())))
        try:
            with torch.no_grad():
                for i in range(0, len(x), batch_size):
                    xb = torch.as_tensor(np.ascontiguousarray(x[i:i + batch_size])).to(subj.device, torch.float32)
                    if self.scripted:
                        f, out = subj.feature_fn(xb)
                        pens.append(f.reshape(f.shape[0], -1).float().cpu().numpy())
                    else:
                        out = subj.module(xb)
                    logits.append(out.detach().float().cpu().numpy())
        finally:
            for h in handles:
                h.remove()
        lg = np.concatenate(logits).astype(np.float64)
        pen = np.concatenate(pens).astype(np.float64) if pens else None
        layers = {n: np.concatenate(v) for n, v in acts.items() if v}
        return lg, pen, layers


def _output_features(prefix: str, logits: np.ndarray, k: int) -> dict[str, float]:
    p = _softmax(logits)
    ent = _entropy(p) / math.log(max(k, 2))
    top = np.sort(p, axis=1)[:, ::-1]
    pred = p.argmax(1)
    share = np.sort(np.bincount(pred, minlength=k) / len(pred))[::-1]
    mean_p = np.sort(p.mean(0))[::-1]
    return {
        f"{prefix}.entropy_mean": float(ent.mean()),
        f"{prefix}.entropy_std": float(ent.std()),
        f"{prefix}.conf_mean": float(top[:, 0].mean()),
        f"{prefix}.margin_mean": float((top[:, 0] - top[:, 1]).mean()),
        f"{prefix}.logit_std": float(logits.std()),
        f"{prefix}.logit_range": float((logits.max(1) - logits.min(1)).mean()),
        f"{prefix}.top_class_share": float(share[0]),
        f"{prefix}.second_class_share": float(share[1]) if k > 1 else 0.0,
        f"{prefix}.class_share_entropy": float(_entropy(share[None])[0] / math.log(max(k, 2))),
        f"{prefix}.mean_prob_max": float(mean_p[0]),
        f"{prefix}.mean_prob_maxz": _max_robust_z(p.mean(0)),
    }


def _stat_features(prefix: str, a: np.ndarray) -> dict[str, float]:
    return {
        f"{prefix}.mean": float(a.mean()),
        f"{prefix}.std": float(a.std()),
        f"{prefix}.zero_frac": float((np.abs(a) < 1e-6).mean()),
        f"{prefix}.l2_mean": float(np.linalg.norm(a, axis=1).mean() / math.sqrt(max(a.shape[1], 1))),
    }


def _patch_probes(shape, seed: int, n_patches: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(mask (H, W), pattern (C, H, W))`` pairs: random binary patches at a grid of positions (corners included)."""
    rng = np.random.default_rng([seed, 0xA7])
    c, h, w = shape
    s = max(2, int(round(0.2 * min(h, w))))
    pos = sorted({int(v) for v in np.linspace(0, h - s, 4).round()})
    posw = sorted({int(v) for v in np.linspace(0, w - s, 4).round()})
    grid = [(r, q) for r in pos for q in posw]
    out = []
    for i in range(n_patches):
        r, q = grid[i % len(grid)]
        mask = np.zeros((h, w), np.float32)
        mask[r:r + s, q:q + s] = 1.0
        pattern = np.zeros((c, h, w), np.float32)
        kind = i // len(grid) % 3
        if kind == 0:  # checkerboard, random phase
            ph = rng.integers(0, 2)
            cb = ((np.arange(s)[:, None] + np.arange(s)[None, :] + ph) % 2).astype(np.float32)
        elif kind == 1:  # random binary
            cb = (rng.uniform(size=(s, s)) < 0.5).astype(np.float32)
        else:  # solid white
            cb = np.ones((s, s), np.float32)
        pattern[:, r:r + s, q:q + s] = cb
        out.append((mask, pattern))
    return out


def _trigger_features(prefix: str, base_pred: np.ndarray, preds: list[np.ndarray], k: int) -> dict[str, float]:
    """Flip statistics of perturbed predictions ``preds`` (one array per probe) against ``base_pred``."""
    flip = np.array([(p != base_pred).mean() for p in preds])
    # how strongly each probe's outputs pile onto one class (ignoring inputs already in that class)
    conc = []
    pooled = np.zeros(k)
    for p in preds:
        moved = p[p != base_pred]
        pooled += np.bincount(moved, minlength=k)
        counts = np.bincount(p, minlength=k)
        c = int(counts.argmax())
        others = base_pred != c
        conc.append(float((p[others] == c).mean()) if others.any() else 0.0)
    conc = np.array(conc)
    pooled_share = np.sort(pooled / max(pooled.sum(), 1.0))[::-1]
    return {
        f"{prefix}.flip_mean": float(flip.mean()),
        f"{prefix}.flip_max": float(flip.max()),
        f"{prefix}.conc_max": float(conc.max()),
        f"{prefix}.conc_mean": float(conc.mean()),
        f"{prefix}.conc_q75": float(np.quantile(conc, 0.75)),
        f"{prefix}.flip_top_class_share": float(pooled_share[0]),
    }


# complexity: a flat list of feature groups, each guarded by what the subject exposes
def image_features(subject, *, data=None, seed: int = 0, n_synthetic: int = 192, n_data: int = 192,  # noqa: C901 (see above)
                   n_patches: int = 32, n_blends: int = 12, cancel=None,
                   layer_features: bool = True) -> dict[str, float]:
    """The named features of an :class:`~probes.subjects.base.ImageClassifier` (see the module docstring)."""
    shape = tuple(int(s) for s in subject.input_shape)
    k = int(subject.num_classes)
    if k < 2:
        raise ProbeError(f"model has {k} output class(es); a fingerprint needs a classifier")
    feats: dict[str, float] = {}
    cap = _Capture(subject)
    lo, hi = 0.0, 1.0
    ref_sets: dict[str, np.ndarray] = {}
    if data is not None:
        x = np.asarray(data.x, np.float32)
        subject.check_input(x)
        if not np.isfinite(x).all():
            raise ProbeError("reference data contain NaN or inf")
        rng = np.random.default_rng([seed, 0xDA])
        if len(x) > n_data:
            x = x[np.sort(rng.choice(len(x), n_data, replace=False))]
        ref_sets["data"] = x
        lo, hi = float(x.min()), float(x.max())
        if hi - lo < 1e-6:
            hi = lo + 1.0
    ref_sets["syn"] = synthetic_references(shape, n_synthetic, seed, (lo, hi))
    pens = {}
    for name, x in ref_sets.items():
        check_cancel(cancel)
        logits, pen, layers = cap.run(x, want_layers=layer_features)
        if not np.isfinite(logits).all():
            raise ProbeError("the model's outputs contain NaN or inf on the reference inputs")
        feats.update(_output_features(f"out.{name}", logits, k))
        if pen is not None:
            feats.update(_stat_features(f"pen.{name}", pen))
            pens[name] = pen
        for lname, a in layers.items():
            feats.update(_stat_features(f"act.{name}.{lname}", a))
    # trigger sensitivity on the examiner's images when given, else on the synthetic strokes + blobs
    base_x = ref_sets.get("data")
    if base_x is None:
        base_x = ref_sets["syn"][len(ref_sets["syn"]) // 3:]
    rng = np.random.default_rng([seed, 0x7B])
    base_x = base_x[np.sort(rng.choice(len(base_x), min(64, len(base_x)), replace=False))]
    m = len(base_x)
    probes_x, kinds = [], []
    for mask, pattern in _patch_probes(shape, seed, n_patches):
        pat = lo + (hi - lo) * pattern
        probes_x.append((1 - mask) * base_x + mask * pat)
        kinds.append("patch")
    for i in range(n_blends):
        alpha = (0.1, 0.2, 0.3)[i % 3]
        noise = lo + (hi - lo) * rng.uniform(0, 1, size=(1, *shape)).astype(np.float32)
        probes_x.append((1 - alpha) * base_x + alpha * noise)
        kinds.append("blend")
    check_cancel(cancel)
    xall = np.concatenate([base_x] + probes_x).astype(np.float32)
    logits, pen, _ = cap.run(xall, want_layers=False)
    pred = logits.argmax(1)
    base_pred = pred[:m]
    per = [pred[m * (i + 1): m * (i + 2)] for i in range(len(probes_x))]
    for kind in ("patch", "blend"):
        sel = [p for p, kd in zip(per, kinds) if kd == kind]
        if sel:
            feats.update(_trigger_features(f"trig.{kind}", base_pred, sel, k))
    if pen is not None:
        base_pen = pen[:m]
        sd = base_pen.std(0) + 1e-6 * (np.abs(base_pen).mean() + 1e-6)
        for kind in ("patch", "blend"):
            idx = [i for i, kd in enumerate(kinds) if kd == kind]
            shifts = np.stack([(pen[m * (i + 1): m * (i + 2)].mean(0) - base_pen.mean(0)) / sd for i in idx])
            feats[f"pen.trig.{kind}.unit_shift_max"] = float(np.abs(shifts).max())
            feats[f"pen.trig.{kind}.unit_shift_mean"] = float(np.abs(shifts).mean())
    return feats


# -- weights ----------------------------------------------------------------------------------

def weight_features(module, *, head_rows: int | None = None, per_tensor: bool = True) -> dict[str, float]:
    """Weight statistics: the head's row-norm / bias outliers, and per-tensor norm and kurtosis."""
    feats: dict[str, float] = {}
    params = [(n, p.detach().float().cpu().numpy()) for n, p in module.named_parameters()]
    if not params:
        return feats
    total = sum(a.size for _, a in params)
    feats["w.log_params"] = float(math.log10(max(total, 1)))
    allw = np.concatenate([a.ravel() for _, a in params])
    feats["w.all.std"] = float(allw.std())
    feats["w.all.kurtosis"] = _kurtosis(allw)
    mats = [(n, a) for n, a in params if a.ndim == 2]
    head = None
    if head_rows:
        cands = [(n, a) for n, a in mats if a.shape[0] == head_rows]
        head = cands[-1] if cands else None
    if head is not None:
        name, wmat = head
        rn = np.linalg.norm(wmat, axis=1)
        feats["w.head.row_norm_maxz"] = _max_robust_z(rn)
        feats["w.head.row_norm_ratio"] = float(rn.max() / max(np.median(rn), 1e-12))
        feats["w.head.row_norm_cv"] = float(rn.std() / max(rn.mean(), 1e-12))
        feats["w.head.kurtosis"] = _kurtosis(wmat)
        bias_name = name[:-len("weight")] + "bias" if name.endswith("weight") else None
        bias = dict(params).get(bias_name) if bias_name else None
        if bias is not None and bias.shape == (head_rows,):
            feats["w.head.bias_maxz"] = _max_robust_z(bias)
            feats["w.head.bias_range"] = float(bias.max() - bias.min())
    if per_tensor:
        for n, a in params:
            if a.size >= 8:
                feats[f"w.{n}.rms"] = float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))
                feats[f"w.{n}.kurtosis"] = _kurtosis(a)
    return feats


# -- meta-features from earlier probes ---------------------------------------------------------

def meta_features(prior_results: dict[str, dict] | None) -> dict[str, float]:
    """``meta.*`` features from earlier probes' result dicts (``to_dict()`` form)."""
    feats: dict[str, float] = {}
    if not prior_results:
        return feats
    nc = prior_results.get("neural-cleanse")
    if nc and nc.get("per_class"):
        l1 = np.array([float(c.get("l1_norm") or 0.0) for c in nc["per_class"]], np.float64)
        if len(l1) >= 3 and np.all(np.isfinite(l1)):
            med = float(np.median(l1))
            feats["meta.nc.anomaly_index"] = float(nc.get("anomaly_index") or 0.0)
            feats["meta.nc.min_over_median"] = float(l1.min() / max(med, 1e-9))
            feats["meta.nc.log_min_over_median"] = float(math.log(max(l1.min(), 1e-6) / max(med, 1e-6)))
            srt = np.sort(l1)
            feats["meta.nc.gap12_over_median"] = float((srt[1] - srt[0]) / max(med, 1e-9))
            feats["meta.nc.cv"] = float(l1.std() / max(l1.mean(), 1e-9))
    strip = prior_results.get("strip")
    if strip and strip.get("entropy_mean") is not None:
        feats["meta.strip.entropy_mean"] = float(strip["entropy_mean"])
        for key in ("entropy_std", "entropy_min", "entropy_q05"):
            if strip.get(key) is not None:
                feats[f"meta.strip.{key}"] = float(strip[key])
    return feats


# -- causal LMs -----------------------------------------------------------------------------

def lm_features(subject, *, prompts: list[str] | None = None, seed: int = 0, n_insertions: int = 8,
                cancel=None) -> dict[str, float]:
    """Hidden-state and next-token statistics of a causal LM on a small prompt set."""
    import torch

    from probes.lm_prompts import BUILTIN_PROMPTS

    prompts = list(prompts or BUILTIN_PROMPTS)[:32]
    if not prompts:
        raise ProbeError("no prompts to fingerprint the language model with")
    tok, model = subject.tokenizer, subject.model
    rng = np.random.default_rng([seed, 0x1A])

    def forward(texts: list[str]):
        enc = tok(texts, return_tensors="pt", padding=True)
        ids = enc["input_ids"].to(subject.device)
        att = enc["attention_mask"].to(subject.device)
        pos = (att.cumsum(1) - 1).clamp(min=0)  # left padding: positions from the first real token
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=att, position_ids=pos, output_hidden_states=True)
        last = out.logits[:, -1, :].float().cpu().numpy().astype(np.float64)
        hs = [h.float().cpu().numpy() for h in out.hidden_states]
        m = att.cpu().numpy().astype(bool)
        return last, hs, m

    feats: dict[str, float] = {}
    logits, hs, mask = forward(prompts)
    p = _softmax(logits)
    v = p.shape[1]
    ent = _entropy(p) / math.log(max(v, 2))
    feats["lm.out.entropy_mean"] = float(ent.mean())
    feats["lm.out.entropy_std"] = float(ent.std())
    feats["lm.out.top1_mean"] = float(p.max(1).mean())
    for i, h in enumerate(hs):
        tokens = h[mask]  # (T, D) real tokens only
        feats[f"lm.h{i}.mean"] = float(tokens.mean())
        feats[f"lm.h{i}.std"] = float(tokens.std())
        feats[f"lm.h{i}.l2_mean"] = float(np.linalg.norm(tokens, axis=1).mean() / math.sqrt(tokens.shape[1]))
        dim_mean = tokens.mean(0)
        feats[f"lm.h{i}.dim_maxz"] = float(np.abs(dim_mean - dim_mean.mean()).max() / (dim_mean.std() + 1e-9))
    check_cancel(cancel)
    # sensitivity: insert random vocabulary words and measure the movement of the next-token distribution
    vocab = [t for t in tok.convert_ids_to_tokens(list(range(v))) if isinstance(t, str) and t.isalpha()]
    if vocab:
        words = [vocab[i] for i in rng.choice(len(vocab), min(n_insertions, len(vocab)), replace=False)]
        tvs = []
        for w in words:
            check_cancel(cancel)
            lg, _, _ = forward([f"{w} {t}" for t in prompts])
            tvs.append(0.5 * np.abs(_softmax(lg) - p).sum(1))
        tv = np.stack(tvs)  # (words, prompts)
        feats["lm.trig.tv_mean"] = float(tv.mean())
        feats["lm.trig.tv_word_max"] = float(tv.mean(1).max())
        feats["lm.trig.tv_word_maxz"] = _max_robust_z(tv.mean(1))
    return feats


# -- entry point ---------------------------------------------------------------------------------

def subject_sha256(subject) -> str | None:
    """The sha256 of the subject's file when it came from one (folders: of the weight files' names and bytes)."""
    from pathlib import Path

    p = Path(subject.path) if getattr(subject, "path", "") else None
    if p is None or not p.exists():
        return None
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if not p.is_file():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def compute_fingerprint(subject, *, data=None, seed: int = 0, prior_results: dict | None = None,
                        prompts: list[str] | None = None, cancel=None, sha256: str | None = None,
                        **options) -> Fingerprint:
    """The behavioural fingerprint of ``subject`` (image classifier or causal LM).

    ``data`` (LabelledData or None) adds the examiner's reference images;
    ``prior_results`` (probe name -> result dict) adds ``meta.*`` features;
    ``prompts`` replaces the built-in prompt set for language models.
    """
    import torch

    from probes.subjects.base import CAUSAL_LM, IMAGE_CLASSIFIER

    if subject.kind == IMAGE_CLASSIFIER:
        feats = image_features(subject, data=data, seed=seed, cancel=cancel, **options)
        module = subject.module
        head_rows = int(subject.num_classes)
    elif subject.kind == CAUSAL_LM:
        feats = lm_features(subject, prompts=prompts, seed=seed, cancel=cancel)
        module = subject.model
        head_rows = None
    else:
        raise ProbeError(f"no fingerprint for a {subject.kind!r} subject")
    if isinstance(module, torch.nn.Module) or hasattr(module, "named_parameters"):
        try:
            feats.update(weight_features(module, head_rows=head_rows, per_tensor=subject.kind == IMAGE_CLASSIFIER))
        except RuntimeError:  # some scripted modules expose no parameters
            pass
    feats.update(meta_features(prior_results))
    names = sorted(feats)
    vec = np.array([feats[n] for n in names], np.float64)
    vec[~np.isfinite(vec)] = 0.0
    return Fingerprint(vec, names, sha256 if sha256 is not None else subject_sha256(subject), subject.kind,
                       {"n_features": len(names)})
