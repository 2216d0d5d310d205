"""Examiner-supplied data files: ``.npz`` with ``x`` (N,C,H,W float32), ``y`` (N,), optional ``is_poison``."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probes.errors import ProbeError, one_line


@dataclass
class LabelledData:
    """Images already on the model's input scale, with labels and optional ground truth."""

    x: np.ndarray
    y: np.ndarray
    is_poison: np.ndarray | None = None
    source: str = "<memory>"
    sha256: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def describe(self) -> dict:
        """A JSON-able record of where the data came from (kept in a run's params)."""
        return {"source": self.source, "sha256": self.sha256, "n": len(self),
                "shape": list(self.x.shape[1:]), "has_ground_truth": self.is_poison is not None}

    def subset(self, idx: np.ndarray) -> LabelledData:
        return LabelledData(self.x[idx], self.y[idx],
                            None if self.is_poison is None else self.is_poison[idx],
                            source=self.source, sha256=self.sha256)


def load_npz(path: str | Path) -> LabelledData:
    """Load and validate a data file; never unpickles (``allow_pickle=False``)."""
    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"data file not found: {p}")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z.files or "y" not in z.files:
                raise ProbeError(f"{p.name}: data file needs arrays 'x' and 'y' (has {sorted(z.files)})")
            x = np.asarray(z["x"])
            y = np.asarray(z["y"])
            poison = np.asarray(z["is_poison"]).astype(bool) if "is_poison" in z.files else None
    except ProbeError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        msg = one_line(exc)
        raise ProbeError(f"{p.name}: not a readable .npz data file ({msg})") from None
    if x.ndim == 3:  # (N, H, W) grey images
        x = x[:, None]
    if x.ndim != 4:
        raise ProbeError(f"{p.name}: x must be (N, C, H, W), got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ProbeError(f"{p.name}: y must be (N,) matching x, got {y.shape} for {x.shape[0]} images")
    if poison is not None and poison.shape != y.shape:
        raise ProbeError(f"{p.name}: is_poison must be (N,), got {poison.shape}")
    if x.shape[0] == 0:
        raise ProbeError(f"{p.name}: data file is empty")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ProbeError(f"{p.name}: x contains NaN or inf")
    return LabelledData(x, y.astype(np.int64, copy=False), poison, source=str(p), sha256=digest)


def save_npz(path: str | Path, x: np.ndarray, y: np.ndarray, is_poison: np.ndarray | None = None) -> Path:
    """Write a data file in the format :func:`load_npz` reads."""
    arrays = {"x": x.astype(np.float32), "y": y.astype(np.int64)}
    if is_poison is not None:
        arrays["is_poison"] = is_poison.astype(bool)
    np.savez(path, **arrays)
    return Path(path)
