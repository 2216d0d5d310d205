"""Describe a subject on disk without loading it: hashes, sizes, format and kind."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes import formats
from probes.errors import ProbeError

_MODEL_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz",
                   ".h5", ".hdf5", ".keras", ".onnx", ".msgpack", ".gguf", ".sav", ".model", ".pb", ".nemo", ".tflite"}
_MAX_FILES = 10_000


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class SubjectInfo:
    path: str
    name: str
    sha256: str
    size: int
    format: str
    kind: str
    files: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "format": self.format, "kind": self.kind,
                "size": self.size, "files": self.files}


def describe(path: str | Path) -> SubjectInfo:
    """Hash every file of a subject (a file, or a Hugging Face-style folder).

    A folder's sha256 is the hash of its manifest (sorted ``relpath sha256``
    lines), so it changes when any file does. Symlinks are recorded, never followed.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ProbeError(f"no such file or folder: {p}")
    p = p.resolve()
    try:
        if p.is_file():
            fmt = formats.detect_file(p)
            digest = sha256_file(p)
            size = p.stat().st_size
            return SubjectInfo(str(p), p.name, digest, size, fmt, formats.guess_kind(p),
                               [{"path": p.name, "sha256": digest, "size": size, "format": fmt}])
        if not p.is_dir():
            raise ProbeError(f"not a regular file or folder: {p}")
        files = []
        for root, dirs, names in os.walk(p, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                fp = Path(root) / name
                rel = fp.relative_to(p).as_posix()
                if fp.is_symlink():
                    files.append({"path": rel, "sha256": None, "size": 0, "format": "symlink",
                                  "target": os.readlink(fp)})
                    continue
                if not fp.is_file():
                    continue
                files.append({"path": rel, "sha256": sha256_file(fp), "size": fp.stat().st_size,
                              "format": formats.detect_file(fp)})
                if len(files) > _MAX_FILES:
                    raise ProbeError(f"{p}: more than {_MAX_FILES} files; is this really a model folder?")
    except PermissionError as exc:
        raise ProbeError(f"cannot read {exc.filename or p}: permission denied") from None
    except OSError as exc:
        raise ProbeError(f"cannot read {p}: {exc.strerror or exc}") from None
    model_files = [f for f in files if f["format"] in formats.WEIGHT_FORMATS | formats.OTHER_MODEL_FORMATS
                   or Path(f["path"]).suffix.lower() in _MODEL_SUFFIXES]
    if not model_files:
        raise ProbeError(f"no model files in folder {p} (looked for safetensors, pickle/torch checkpoints, joblib, "
                         "numpy, Keras, HDF5, SavedModel, ONNX, GGUF, NeMo/tar)")
    manifest = "\n".join(f"{f['path']} {f['sha256']}" for f in files)
    return SubjectInfo(str(p), p.name, hashlib.sha256(manifest.encode("utf-8", "surrogateescape")).hexdigest(),
                       sum(f["size"] for f in files), formats.detect(p), formats.guess_kind(p), files)
