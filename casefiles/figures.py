"""Report figures (PNG, matplotlib's Agg canvas, no pyplot state) drawn from what a run stored.

Each figure shows measured evidence only: the recovered trigger and clean inputs
stamped with it, per-class trigger norms against the median and the flagging
line, per-class audit statistics, the hunt's ranking against its separation
threshold, fingerprint detectors against the baseline, and remediation before /
after. Output is deterministic for the same input (no timestamps in the PNG),
so a stored figure's sha256 is stable.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

FIGURE_VERSION = "1"
PREFIX = f"figure-v{FIGURE_VERSION}-"
_DPI = 80
_MAX_BARS = 40

ArtifactLoader = Callable[[str], "bytes | None"]


@dataclass
class Figure:
    """One rendered figure of one run."""

    name: str  # artifact name, e.g. figure-v1-trigger.png
    caption: str
    png: bytes
    run_id: int

    def to_dict(self) -> dict[str, Any]:
        import hashlib

        return {"name": self.name, "caption": self.caption, "run_id": self.run_id, "size": len(self.png),
                "sha256": hashlib.sha256(self.png).hexdigest()}


def _canvas(w: float, h: float, ncols: int = 1, *, left: float = 0.6, bottom: float = 0.45, top: float = 0.15,
            right: float = 0.15):
    """A figure of ``w`` x ``h`` inches with fixed margins (inches); no layout engine, which is slow."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(w, h), dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def load_npy(data: bytes | None) -> np.ndarray | None:
    """An array from stored ``.npy`` bytes (never unpickles; None when absent or unreadable)."""
    if not data:
        return None
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None


def _as_image(x: np.ndarray) -> np.ndarray:
    """CHW/HW/HWC array -> HW or HWC in [0, 1] for imshow (scaled by its own range)."""
    a = np.asarray(x, np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    elif a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] in (1, 3) and a.shape[0] != a.shape[-1]:
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] not in (3, 4):
        a = a.mean(axis=-1)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    return np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)


def _show(ax, img: np.ndarray, title: str) -> None:
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def stamp(x: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Inputs ``x`` (N, C, H, W) with the trigger applied: ``(1 - m) * x + m * p``."""
    m = mask if mask.ndim == 3 else mask[None]
    p = pattern if pattern.ndim == 3 else pattern[None]
    return (1 - m[None]) * x + m[None] * p[None]


def _montage(panels: list[np.ndarray], gap: int = 2) -> tuple[np.ndarray, list[int]]:
    """Images side by side (RGB, white gaps) in one array, and each panel's left edge."""
    h = max(p.shape[0] for p in panels)
    rgb = [np.repeat(p[..., None], 3, axis=-1) if p.ndim == 2 else p[..., :3] for p in panels]
    out, lefts, x = [], [], 0
    for p in rgb:
        pad = np.ones((h, p.shape[1], 3))
        pad[: p.shape[0]] = p
        lefts.append(x)
        out += [pad, np.ones((h, gap, 3))]
        x += p.shape[1] + gap
    return np.concatenate(out[:-1], axis=1), lefts


def trigger_figure(mask: np.ndarray, pattern: np.ndarray, clean: np.ndarray | None, run_id: int,
                   target: Any = None) -> Figure:
    """Recovered mask, pattern, mask × pattern and (when clean inputs are at hand) a few of them stamped."""
    m = np.asarray(mask, np.float64)
    m3 = m if m.ndim == 3 else m[None]
    p = np.asarray(pattern, np.float64)
    p3 = p if p.ndim == 3 else p[None]
    panels = [_as_image(m3), _as_image(p3), _as_image(p3 * m3)]
    titles = [f"mask (L1 {m3.sum():.1f})", "pattern", "mask × pattern"]
    shown = [] if clean is None else list(np.asarray(clean, np.float64)[:4])
    for i, x in enumerate(shown):
        x3 = x if x.ndim == 3 else x[None]
        lo, hi = float(x3.min()), float(x3.max())
        stamped = stamp(x3[None], m3, p3)[0]
        panels += [_as_image(x3), _as_image(np.clip(stamped, min(lo, p3.min()), max(hi, p3.max())))]
        titles += [f"clean {i + 1}", f"stamped {i + 1}"]
    if len({q.shape[:2] for q in panels}) != 1:
        raise ValueError("clean inputs and trigger differ in size")
    img, lefts = _montage(panels)
    w_in = min(14.0, 1.25 * len(panels) + 0.3)
    fig, (ax,) = _canvas(w_in, 1.45, left=0.05, right=0.05, bottom=0.05, top=0.25)
    ax.imshow(img, interpolation="nearest", aspect="equal")
    pw = panels[0].shape[1]
    for x0, t in zip(lefts, titles, strict=True):
        ax.text(x0 + pw / 2, -1, t, ha="center", va="bottom", fontsize=8)
    ax.set_axis_off()
    where = "" if target is None else f" for target class {target}"
    cap = (f"Recovered trigger{where}: mask, pattern and their product"
           + (f"; {len(shown)} clean inputs before and after stamping." if shown
              else "; no clean inputs were at hand to stamp (the run's --data file is not available)."))
    return Figure(f"{PREFIX}trigger.png", cap, _png(fig), run_id)


def norms_figure(per_class: list[dict[str, Any]], threshold: float, run_id: int, target: Any = None) -> Figure | None:
    """Per-class trigger L1 norms with the median and the norm below which a class is flagged."""
    rows = [r for r in per_class if isinstance(r, dict) and isinstance(r.get("l1_norm"), (int, float))]
    if not rows:
        return None
    l1 = np.array([float(r["l1_norm"]) for r in rows])
    med = float(np.median(l1))
    mad = 1.4826 * float(np.median(np.abs(l1 - med)))
    cut = med - threshold * mad
    order = np.argsort(l1)[:_MAX_BARS]
    fig, (ax,) = _canvas(max(4.0, 0.28 * len(order) + 2), 2.8)
    colours = ["#c0392b" if l1[i] < cut else "#7f8c8d" for i in order]
    ax.bar([str(rows[i].get("class")) for i in order], l1[order], color=colours)
    ax.axhline(med, color="#2c3e50", lw=1, label=f"median {med:.1f}")
    if cut > 0:
        ax.axhline(cut, color="#c0392b", lw=1, ls="--", label=f"flag below {cut:.1f} (anomaly index {threshold:g})")
    ax.set_xlabel("class" + ("" if len(order) == len(rows) else f" ({len(order)} smallest of {len(rows)})"), fontsize=8)
    ax.set_ylabel("trigger L1 norm", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left")
    cap = ("Smallest trigger that sends every input to each class; red bars fall below the flagging line"
           + (f" (suspected target: class {target})." if target is not None else "."))
    return Figure(f"{PREFIX}norms.png", cap, _png(fig), run_id)


def audit_figure(per_class: list[dict[str, Any]], run_id: int, probe: str) -> Figure | None:
    """A data audit's per-class score distributions (histograms the run stored, one row per class; poisoned in red)."""
    rows = [r for r in per_class if isinstance(r, dict) and isinstance(r.get("score_hist"), dict)
            and isinstance(r["score_hist"].get("counts"), list) and r["score_hist"]["counts"]][:_MAX_BARS]
    if not rows:
        return None
    fig, (ax,) = _canvas(5.2, 0.32 * len(rows) + 0.8, left=1.1, bottom=0.4)
    for i, r in enumerate(rows):
        h = r["score_hist"]
        counts = np.asarray(h["counts"], np.float64)
        counts = 0.9 * counts / counts.max() if counts.max() > 0 else counts
        edges = np.linspace(0.0, 1.0, len(counts) + 1)  # each class on its own scale (the stored range)
        bad = bool(r.get("poisoned"))
        y0 = len(rows) - 1 - i
        ax.stairs(counts + y0, edges, baseline=y0, fill=True, color="#c0392b" if bad else "#95a5a6")
    ax.set_yticks([len(rows) - 1 - i + 0.4 for i in range(len(rows))],
                  [f"class {r.get('class')}" + (" (poisoned)" if r.get("poisoned") else "") for r in rows], fontsize=7)
    ax.set_xticks([0, 1], ["low", "high"], fontsize=7)
    what = str(rows[0]["score_hist"].get("of") or "outlier score")
    ax.set_xlabel(f"{what} (each class over its own range)", fontsize=7)
    ax.set_ylim(0, len(rows))
    cap = (f"{probe}: per-class distribution of the {what} over the audited training set; "
           "a poisoned class shows a second mode.")
    return Figure(f"{PREFIX}audit.png", cap, _png(fig), run_id)


def ranking_figure(ranking: list[dict[str, Any]], separation: dict[str, Any] | None, run_id: int) -> Figure | None:
    """The hunt's top candidates by how far their KL stands out (robust z), with the separation threshold."""
    rows = [r for r in ranking if isinstance(r, dict) and isinstance(r.get("z", r.get("kl")), (int, float))][:15]
    if not rows:
        return None
    key = "z" if all("z" in r for r in rows) else "kl"
    vals = np.array([float(r[key]) for r in rows])[::-1]
    labels = [repr(str(r.get("candidate")))[:28] + (" ✓" if r.get("confirmed") else "") for r in rows][::-1]
    fig, (ax,) = _canvas(5.2, 0.24 * len(rows) + 1.2)
    thr = (separation or {}).get("z_threshold") if key == "z" else None
    colours = ["#c0392b" if thr is not None and v >= thr else "#7f8c8d" for v in vals]
    ax.barh(np.arange(len(rows)), vals, color=colours)
    ax.set_yticks(np.arange(len(rows)), labels, fontsize=7)
    if thr is not None:
        ax.axvline(float(thr), color="#c0392b", ls="--", lw=1, label=f"separation z ≥ {thr:g}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("robust z of log KL vs the sweep" if key == "z" else "KL (nats)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    cap = "Trigger hunt: top candidates by how far the output shift they cause stands out (✓ confirmed by generation)."
    return Figure(f"{PREFIX}ranking.png", cap, _png(fig), run_id)


def fingerprint_figure(detectors: dict[str, Any], exceedance: dict[str, Any] | None, baseline_size: Any,
                       run_id: int) -> Figure | None:
    """Each detector's score as a percentile of the known-clean baseline (95th line marked)."""
    items = [(k, float(v)) for k, v in detectors.items() if isinstance(v, (int, float))][:_MAX_BARS]
    if not items:
        return None
    vals = np.array([v for _, v in items])
    pct = vals * 100 if vals.max() <= 1.0 else vals
    fig, (ax,) = _canvas(5.2, 0.26 * len(items) + 1.2)
    ax.barh(np.arange(len(items)), pct, color=["#c0392b" if v >= 95 else "#7f8c8d" for v in pct])
    ax.set_yticks(np.arange(len(items)), [k for k, _ in items], fontsize=7)
    ax.axvline(95, color="#c0392b", ls="--", lw=1, label="95th percentile of the baseline")
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"percentile among {baseline_size or '?'} known-clean models", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    cap = "Fingerprint ensemble: where the subject's score falls in each detector's spread over the baseline."
    return Figure(f"{PREFIX}fingerprint.png", cap, _png(fig), run_id)


def before_after_figure(before: dict[str, Any], after: dict[str, Any], run_id: int) -> Figure | None:
    """Remediation: the measured figures before and after, side by side."""
    keys = [k for k in before if isinstance(before.get(k), (int, float)) and isinstance(after.get(k), (int, float))
            and not isinstance(before.get(k), bool)][:8]
    if not keys:
        return None
    fig, (ax,) = _canvas(max(3.5, 1.1 * len(keys) + 1.5), 2.6)
    x = np.arange(len(keys))
    ax.bar(x - 0.2, [float(before[k]) for k in keys], 0.4, label="before", color="#c0392b")
    ax.bar(x + 0.2, [float(after[k]) for k in keys], 0.4, label="after", color="#27ae60")
    ax.set_xticks(x, [k.replace("_", " ") for k in keys], fontsize=7)
    ax.legend(fontsize=7)
    return Figure(f"{PREFIX}remediation.png", "Remediation: measured figures before and after.", _png(fig), run_id)


def confusion_figure(matrix: list[list[int]], classes: list[Any], run_id: int) -> Figure | None:
    """Confusion matrix of the subject's predictions on the clean data (rows: true class)."""
    m = np.asarray(matrix, np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0 or m.shape[0] > _MAX_BARS:
        return None
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, (ax,) = _canvas(0.3 * len(m) + 2.2, 0.3 * len(m) + 1.8)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = [str(c) for c in classes]
    ax.set_xticks(np.arange(len(m)), ticks, fontsize=7)
    ax.set_yticks(np.arange(len(m)), ticks, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    return Figure(f"{PREFIX}confusion.png", "Triage: predictions on the clean data, by true class (row-normalised).",
                  _png(fig), run_id)


def figures_for_run(run: dict[str, Any], artifact: ArtifactLoader,
                    clean_inputs: Callable[[dict[str, Any]], np.ndarray | None] | None = None) -> list[Figure]:
    """Every figure a run's stored result supports (an unknown probe gets the generic ones its keys allow)."""
    result = run.get("result") or {}
    if run.get("status") != "done" or not isinstance(result, dict):
        return []
    rid = int(run["id"])
    out: list[Figure | None] = []
    mask = load_npy(artifact("mask.npy"))
    pattern = load_npy(artifact("pattern.npy"))
    if mask is None and isinstance(result.get("mask"), list):
        mask = np.asarray(result["mask"], np.float64)
        pattern = np.asarray(result["pattern"], np.float64) if isinstance(result.get("pattern"), list) else None
    if mask is not None and pattern is not None:
        clean = clean_inputs(run) if clean_inputs else None
        try:
            out.append(trigger_figure(mask, pattern, clean, rid, result.get("suspected_target")))
        except ValueError:  # shapes of clean inputs and trigger disagree: the trigger alone
            out.append(trigger_figure(mask, pattern, None, rid, result.get("suspected_target")))
    per_class = result.get("per_class") if isinstance(result.get("per_class"), list) else []
    if per_class and any(isinstance(r, dict) and "l1_norm" in r for r in per_class):
        thr = float((run.get("params") or {}).get("threshold") or result.get("params", {}).get("threshold") or 2.0)
        out.append(norms_figure(per_class, thr, rid, result.get("suspected_target")))
    elif per_class:
        out.append(audit_figure(per_class, rid, str(run.get("probe"))))
    if isinstance(result.get("ranking"), list) and result["ranking"]:
        out.append(ranking_figure(result["ranking"], result.get("separation"), rid))
    if isinstance(result.get("detectors"), dict) and result["detectors"]:
        cal = result.get("calibration") or {}
        out.append(fingerprint_figure(result["detectors"], result.get("exceedance"), cal.get("baseline_size"), rid))
    if isinstance(result.get("before"), dict) and isinstance(result.get("after"), dict):
        out.append(before_after_figure(result["before"], result["after"], rid))
    triage = result.get("triage")
    if isinstance(triage, dict) and isinstance(triage.get("confusion"), list):
        out.append(confusion_figure(triage["confusion"], triage.get("classes") or [], rid))
    return [f for f in out if f is not None]


def figure_manifest(figures: list[Figure]) -> str:
    """A JSON list of the figures (name, caption, hash) for logs and the audit trail."""
    return json.dumps([f.to_dict() for f in figures], sort_keys=True)
