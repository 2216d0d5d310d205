"""Examiner-supplied data files: ``.npz`` with ``x`` (N,C,H,W float32), ``y`` (N,), optional ``is_poison``."""

from __future__ import annotations

import hashlib
import os
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


# The most memory a data file may ask for once loaded (its arrays as stored plus the float32/int64 copies).
DEFAULT_MAX_DATA_MB = 2048


def max_data_bytes() -> int:
    """``$WORKBENCH_MAX_DATA_MB`` (default 2048 MB): a bigger data file is refused from its headers."""
    raw = os.environ.get("WORKBENCH_MAX_DATA_MB", "")
    try:
        return int(float(raw) * (1 << 20)) if raw.strip() else DEFAULT_MAX_DATA_MB << 20
    except ValueError:
        raise ProbeError(f"WORKBENCH_MAX_DATA_MB must be a number of megabytes, got {raw!r}") from None


def _declared(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an ``.npy`` member declares, read from its header alone (nothing allocated)."""
    from numpy.lib import format as npy_format

    with zf.open(member) as fh:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = npy_format.read_array_header_2_0(fh)
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _check_declared_size(p: Path, limit: int) -> None:
    """Refuse a data file whose arrays declare more memory than ``limit`` before any array is read."""
    try:
        with zipfile.ZipFile(p) as zf:
            names = set(zf.namelist())
            total = 0
            for key, out_item in (("x", 4), ("y", 8), ("is_poison", 1)):
                member = f"{key}.npy"
                if member not in names:
                    continue
                shape, dtype = _declared(zf, member)
                n = int(np.prod(shape, dtype=object)) if shape else 1
                if dtype.kind not in "biuf" and key == "x":
                    raise ProbeError(f"{p.name}: x must hold numbers, not {dtype} values")
                total += n * dtype.itemsize + (n * out_item if dtype.itemsize != out_item or dtype.kind != "f" else 0)
    except ProbeError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ProbeError(f"{p.name}: not a readable .npz data file ({one_line(exc)})") from None
    if total > limit:
        raise ProbeError(f"{p.name}: its arrays declare {total / (1 << 20):,.0f} MB once loaded, over the "
                         f"{limit / (1 << 20):,.0f} MB limit ($WORKBENCH_MAX_DATA_MB); refused before loading")


def _file_sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _integer_labels(p: Path, y: np.ndarray) -> np.ndarray:
    """Labels as int64 class ids; string or fractional labels are a one-line error, not a traceback."""
    if y.dtype.kind in "biu":
        return y.astype(np.int64, copy=False)
    if y.dtype.kind == "f" and np.isfinite(y).all() and np.array_equal(y, np.round(y)):
        return y.astype(np.int64)
    if y.dtype.kind in "US":
        sample = ", ".join(repr(str(v)) for v in np.unique(y)[:3])
        raise ProbeError(f"{p.name}: y holds text labels ({sample}...); the probes need integer class ids 0..K-1")
    raise ProbeError(f"{p.name}: y must hold integer class ids, got {y.dtype} values")


def load_npz(path: str | Path) -> LabelledData:
    """Load and validate a data file; never unpickles (``allow_pickle=False``); refuses by header size first."""
    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"data file not found: {p}")
    if zipfile.is_zipfile(p):
        _check_declared_size(p, max_data_bytes())
    digest = _file_sha256(p)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z.files or "y" not in z.files:
                raise ProbeError(f"{p.name}: data file needs arrays 'x' and 'y' (has {sorted(z.files)})")
            x = np.asarray(z["x"])
            y = np.asarray(z["y"])
            poison = np.asarray(z["is_poison"]).astype(bool) if "is_poison" in z.files else None
    except ProbeError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, AttributeError, TypeError) as exc:
        msg = one_line(exc)
        raise ProbeError(f"{p.name}: not a readable .npz data file ({msg})") from None
    except MemoryError:
        raise ProbeError(f"{p.name}: not enough memory to load this data file") from None
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
    if x.dtype.kind not in "biuf":
        raise ProbeError(f"{p.name}: x must hold numbers, not {x.dtype} values")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ProbeError(f"{p.name}: x contains NaN or inf")
    return LabelledData(x, _integer_labels(p, y), poison, source=str(p), sha256=digest)


def save_npz(path: str | Path, x: np.ndarray, y: np.ndarray, is_poison: np.ndarray | None = None) -> Path:
    """Write a data file in the format :func:`load_npz` reads."""
    arrays = {"x": x.astype(np.float32), "y": y.astype(np.int64)}
    if is_poison is not None:
        arrays["is_poison"] = is_poison.astype(bool)
    np.savez(path, **arrays)
    return Path(path)
