"""Pure renderers (rich Text only, no Textual, no torch): icons, colours, bar charts, heatmaps.

Kept free of widgets so they can be unit-tested and reused by the text captures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.style import Style
from rich.text import Text

VERDICT_STYLE = {
    "clean": "bold green",
    "inconclusive": "grey62",
    "suspicious": "bold yellow",
    "backdoored": "bold red",
    "malicious": "bold magenta",
}
BAND_STYLE = {"low": "bold green", "medium": "bold yellow", "high": "bold red"}
STATUS_ICON = {
    "running": ("◐", "cyan"),
    "queued": ("…", "grey62"),
    "done": ("✔", "green"),
    "failed": ("✘", "red"),
    "cancelled": ("⊘", "yellow"),
    "interrupted": ("⚠", "yellow"),
}


def verdict_text(verdict: str | None) -> Text:
    if not verdict:
        return Text("—", style="grey50")
    return Text(verdict, style=VERDICT_STYLE.get(verdict, ""))


def status_text(status: str | None) -> Text:
    icon, style = STATUS_ICON.get(status or "", ("?", ""))
    return Text(icon, style=style)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def fmt_score(score: float | None) -> str:
    return "—" if score is None else f"{score:.2f}"


def short_params(params: dict[str, Any] | None, width: int = 60) -> str:
    if not params:
        return ""
    parts = []
    for k, v in params.items():
        if isinstance(v, dict) and "source" in v:
            v = str(v["source"]).rsplit("/", 1)[-1]
        elif isinstance(v, (list, dict)):
            continue
        parts.append(f"{k}={v}")
    s = " ".join(parts)
    return s if len(s) <= width else s[: width - 1] + "…"


# -- trigger norms ---------------------------------------------------------------------------
MAD_CONSTANT = 1.4826


def norm_stats(per_class: Sequence[dict[str, Any]], threshold: float = 2.0) -> dict[str, float]:
    """Median, MAD and the L1 value below which a class is flagged (median − threshold·MAD)."""
    l1 = sorted(float(c["l1_norm"]) for c in per_class)
    if not l1:
        return {"median": 0.0, "mad": 0.0, "cut": 0.0}
    med = _median(l1)
    mad = MAD_CONSTANT * _median([abs(v - med) for v in l1])
    return {"median": med, "mad": mad, "cut": max(0.0, med - threshold * mad)}


def _median(vals: Sequence[float]) -> float:
    s = sorted(vals)
    n = len(s)
    if n == 0:
        return 0.0
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def norm_bars(per_class: Sequence[dict[str, Any]], *, suspected: int | None, candidate: int | None = None,
              threshold: float = 2.0, width: int = 40) -> Text:
    """Horizontal bar per class; ``│`` marks the median, ``┊`` the MAD threshold (flag below it)."""
    st = norm_stats(per_class, threshold)
    top = max([float(c["l1_norm"]) for c in per_class] + [st["median"], 1e-9])
    scale = width / top

    def col(v: float) -> int:
        return min(width - 1, max(0, int(round(v * scale)) - 1)) if v > 0 else 0

    med_col, cut_col = col(st["median"]), col(st["cut"])
    out = Text()
    for c in per_class:
        cls, l1 = int(c["class"]), float(c["l1_norm"])
        n = int(round(l1 * scale))
        is_sus = suspected is not None and cls == suspected
        is_cand = candidate is not None and cls == candidate and not is_sus
        bar_style = "bold red" if is_sus else ("yellow" if is_cand else "steel_blue1")
        out.append(f"{'▶' if is_sus else ' '} class {cls:>3} ", style="bold red" if is_sus else "")
        for i in range(width):
            filled = i < n
            if i == med_col:
                out.append("│", style=Style(color="bright_white", bgcolor="grey23" if filled else None, bold=True))
            elif i == cut_col and st["cut"] > 0:
                out.append("┊", style=Style(color="red", bgcolor="grey23" if filled else None, bold=True))
            elif filled:
                out.append("█", style=bar_style)
            else:
                out.append(" ")
        anomaly = c.get("anomaly")
        tail = f" {l1:7.2f}"
        if anomaly:
            tail += f"  ai {anomaly:.2f}"
        out.append(tail + "\n", style="bold red" if is_sus else "")
    out.append(f"\n  │ median {st['median']:.2f}   ┊ threshold median − {threshold:g}·MAD = {st['cut']:.2f}"
               f"   (MAD {st['mad']:.2f})", style="grey70")
    return out


# -- heatmaps (half blocks: two pixels per character cell) ----------------------------------
_RAMP = [(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21),
         (250, 193, 39), (252, 255, 164)]  # inferno-like


def _ramp(v: float) -> tuple[int, int, int]:
    if not math.isfinite(v):
        v = 0.0
    v = min(1.0, max(0.0, v))
    x = v * (len(_RAMP) - 1)
    i = min(len(_RAMP) - 2, int(x))
    t = x - i
    a, b = _RAMP[i], _RAMP[i + 1]
    return tuple(int(round(a[k] + (b[k] - a[k]) * t)) for k in range(3))  # type: ignore[return-value]


def _as_grid(a: Any) -> list[list[Any]]:
    return [list(r) for r in a]


def _minmax(grid: list[list[float]]) -> tuple[float, float]:
    flat = [float(v) for r in grid for v in r if v is not None and math.isfinite(float(v))]
    if not flat:
        return 0.0, 1.0
    lo, hi = min(flat), max(flat)
    return lo, (hi if hi > lo else lo + 1.0)


def heatmap(values: Any, *, xscale: int = 1, yscale: int = 1, normalise: bool = True, rgb: bool = False) -> Text:
    """Draw an H×W grid (or 3×H×W when ``rgb``) with half blocks: two pixels per character cell.

    A cell is about twice as tall as wide, so a half block is a square pixel;
    ``xscale``/``yscale`` repeat pixels to enlarge the picture.
    """
    if yscale > 1:
        if rgb:
            values = [[list(r) for r in ch for _ in range(yscale)] for ch in values]
        else:
            values = [list(r) for r in values for _ in range(yscale)]
    if rgb:
        chans = [_as_grid(c) for c in values]
        h, w = len(chans[0]), len(chans[0][0]) if chans[0] else 0
        lo_hi = [_minmax(c) for c in chans]

        def colour(y: int, x: int) -> tuple[int, int, int]:
            out = []
            for c, (lo, hi) in zip(chans, lo_hi):
                v = (float(c[y][x]) - lo) / (hi - lo) if normalise else float(c[y][x])
                out.append(int(round(255 * min(1.0, max(0.0, v)))))
            return tuple(out)  # type: ignore[return-value]
    else:
        grid = _as_grid(values)
        h, w = len(grid), len(grid[0]) if grid else 0
        lo, hi = _minmax(grid) if normalise else (0.0, 1.0)

        def colour(y: int, x: int) -> tuple[int, int, int]:
            return _ramp((float(grid[y][x]) - lo) / (hi - lo))

    text = Text()
    for y in range(0, h, 2):
        for x in range(w):
            top = colour(y, x)
            bottom = colour(y + 1, x) if y + 1 < h else (0, 0, 0)
            # The glyph also carries a 1-bit picture (bright = above half), so the shape survives
            # in a plain-text capture; the colours carry the intensity of both pixels.
            hi_t, hi_b = _bright(top), _bright(bottom)
            if hi_t and hi_b:
                glyph, fg, bg = "█", top, bottom
            elif hi_b:
                glyph, fg, bg = "▄", bottom, top
            elif hi_t:
                glyph, fg, bg = "▀", top, bottom
            else:
                glyph, fg, bg = " ", top, top
            style = Style(color=f"rgb({fg[0]},{fg[1]},{fg[2]})", bgcolor=f"rgb({bg[0]},{bg[1]},{bg[2]})")
            text.append(glyph * xscale, style=style)
        text.append("\n")
    return text


def _bright(rgb: tuple[int, int, int]) -> bool:
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) >= 110


def gray_pattern(pattern: Any) -> tuple[Any, bool]:
    """A pattern as (grid, rgb?): C×H×W with C=3 is colour, C=1 or H×W gray."""
    if pattern and isinstance(pattern[0], list) and pattern[0] and isinstance(pattern[0][0], list):
        if len(pattern) == 3:
            return pattern, True
        return pattern[0], False
    return pattern, False


def stamped_trigger(mask: Any, pattern: Any) -> Any:
    """mask × pattern (what the trigger paints), gray or per channel."""
    grid, rgb = gray_pattern(pattern)
    if rgb:
        return [[[float(m) * float(p) for m, p in zip(mr, pr)] for mr, pr in zip(mask, ch)] for ch in grid]
    return [[float(m) * float(p) for m, p in zip(mr, pr)] for mr, pr in zip(mask, grid)]


def side_by_side(blocks: Sequence[tuple[str, Text]], gap: int = 3) -> Text:
    """Join several multi-line Texts horizontally under their titles."""
    split = [(title, b.split("\n", allow_blank=True)) for title, b in blocks]
    widths = [max([len(title)] + [ln.cell_len for ln in lines]) for title, lines in split]
    rows = max(len(lines) for _, lines in split)
    out = Text()
    for i, (title, _) in enumerate(split):
        out.append(title.ljust(widths[i] + gap), style="bold")
    out.append("\n")
    for r in range(rows):
        for i, (_, lines) in enumerate(split):
            line = lines[r] if r < len(lines) else Text("")
            out.append_text(line)
            out.append(" " * (widths[i] - line.cell_len + gap))
        out.append("\n")
    return out


def hbar(value: float, top: float, width: int = 24, style: str = "steel_blue1") -> Text:
    n = 0 if top <= 0 else int(round(width * min(1.0, max(0.0, value / top))))
    return Text("█" * n, style=style) + Text("·" * (width - n), style="grey30")


SPARK = " ▁▂▃▄▅▆▇█"


def sparkline(counts: Sequence[int], style: str = "steel_blue1") -> Text:
    """A histogram as one line of block characters (the tallest bin is a full block)."""
    top = max(counts) if counts else 0
    if not top:
        return Text("—", style="grey50")
    cells = "".join(SPARK[0 if c == 0 else max(1, round(8 * c / top))] for c in counts)
    return Text(cells, style=style)
