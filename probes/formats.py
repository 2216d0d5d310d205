"""Detect a model file's format from its content (never from its extension).

Used by the static scan (which parser to run), the loader (which safe path to
take) and ``subject add`` (what to record). Reads at most a few KiB per file.
"""

from __future__ import annotations

import json
import struct
import tarfile
import zipfile
from collections.abc import Collection
from pathlib import Path

# Formats
SAFETENSORS = "safetensors"
TORCH_ZIP = "torch-zip"  # torch.save since 1.6: zip with <name>/data.pkl
TORCHSCRIPT = "torchscript"  # zip with <name>/code/ and constants.pkl
TORCH_LEGACY = "torch-legacy"  # magic-number pickle + stacked pickles + raw storages
TORCH_TAR = "torch-tar"  # very old torch.save tar format
PICKLE = "pickle"
JOBLIB_COMPRESSED = "joblib-compressed"  # zlib/gzip/bz2/xz/lz4 stream holding a pickle
NUMPY = "npy"
NPZ = "npz"
ZIP = "zip"  # some other zip
KERAS = "keras"  # Keras v3 .keras zip: config.json + metadata.json + weights
HDF5 = "hdf5"  # HDF5 (legacy Keras .h5, h5-based .keras, Keras v3 weights)
ONNX = "onnx"
GGUF = "gguf"
TF_SAVEDMODEL = "tf-savedmodel"  # saved_model.pb
TF_GRAPHDEF = "tf-graphdef"  # frozen GraphDef .pb
KERAS_METADATA = "keras-metadata"  # keras_metadata.pb of a Keras SavedModel
TAR = "tar"  # a tar that is not torch's (NeMo .nemo, wrappers)
SEVENZ = "7z"
HF_FOLDER = "hf-folder"
FOLDER = "folder"
EMPTY = "empty"
UNKNOWN = "unknown"

PICKLE_FORMATS = {PICKLE, TORCH_ZIP, TORCHSCRIPT, TORCH_LEGACY, TORCH_TAR, JOBLIB_COMPRESSED, NUMPY, NPZ}
WEIGHT_FORMATS = {SAFETENSORS, TORCH_ZIP, TORCHSCRIPT, TORCH_LEGACY, TORCH_TAR, PICKLE, JOBLIB_COMPRESSED}
# model files of other frameworks: the static scan reads them; a folder holding one is a model folder
OTHER_MODEL_FORMATS = {KERAS, HDF5, ONNX, GGUF, TF_SAVEDMODEL, TF_GRAPHDEF, KERAS_METADATA, TAR, SEVENZ}

_NPY_MAGIC = b"\x93NUMPY"
_COMPRESSED_MAGICS = {
    b"\x78\x01": "zlib", b"\x78\x5e": "zlib", b"\x78\x9c": "zlib", b"\x78\xda": "zlib",
    b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"\x04\x22\x4d\x18": "lz4",
    b"ZF": "joblib-zlib",  # joblib's own zlib container header "ZF0x..."
    b"\x5d\x00\x00": "lzma",  # joblib compress="lzma" (FORMAT_ALONE); checked before the pickle-opcode guess
}
_PICKLE_OPCODE_STARTS = set(b"(]}cX\x8c\x80KJMNFGIRSUVabdeghjlopqrsttu")  # S: protocol-0 STRING (py2 str, STACK_GLOBAL names)


def _read_head(path: Path, n: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _looks_like_safetensors(path: Path, head: bytes) -> bool:
    if len(head) < 10:
        return False
    (hlen,) = struct.unpack("<Q", head[:8])
    size = path.stat().st_size
    if hlen <= 1 or 8 + hlen > size or hlen > 100 * 1024 * 1024:
        return False
    start = head[8:9]
    return start == b"{"


def _classify_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return ZIP
    if any(n.endswith(".npy") for n in names) and all(n.endswith(".npy") for n in names):
        return NPZ
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return TORCHSCRIPT
    if any(n.endswith("data.pkl") for n in names):
        return TORCH_ZIP
    if "config.json" in names and {"metadata.json", "model.weights.h5", "model.weights.npz"} & set(names):
        return KERAS
    return ZIP


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_SEVENZ_MAGIC = b"7z\xbc\xaf\x27\x1c"
_ONNX_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}


def detect_other(head: bytes, name: str) -> str | None:
    """Formats of other frameworks, from magic bytes (protobufs: their first fields, then the usual file name)."""
    b0 = head[:1]
    if b0 == b"G" and head.startswith(b"GGUF"):
        return GGUF
    if (b0 == b"\x89" and head.startswith(_HDF5_MAGIC)) or (
            len(head) >= 520 and _HDF5_MAGIC in (head[512:520], head[1024:1032], head[2048:2056])):
        return HDF5
    if b0 == b"7" and head.startswith(_SEVENZ_MAGIC):
        return SEVENZ
    if b0 == b"\x08":
        if head[:3] in (b"\x08\x01\x12", b"\x08\x02\x12"):
            return TF_SAVEDMODEL
        if len(head) >= 3 and 3 <= head[1] <= 30 and head[2] in _ONNX_TAGS:
            return ONNX
    if name.endswith(".pb") or name.endswith(".onnx"):
        if name == "keras_metadata.pb":
            return KERAS_METADATA
        if name == "saved_model.pb":
            return TF_SAVEDMODEL
        if name.endswith(".onnx"):
            return ONNX
        if b0 == b"\x0a":
            return TF_GRAPHDEF
    return None


def detect_file(path: str | Path) -> str:
    """One of the format constants above for a single file."""
    p = Path(path)
    if p.stat().st_size == 0:
        return EMPTY
    head = _read_head(p)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _classify_zip(p)
    if head.startswith(_NPY_MAGIC):
        return NUMPY
    if _looks_like_safetensors(p, head):
        return SAFETENSORS
    other = detect_other(head, p.name)
    if other:
        return other
    if len(head) >= 262 and head[257:262] == b"ustar":
        try:
            with tarfile.open(p) as tf:
                names = tf.getnames()
            if "pickle" in names or "storages" in names or "tensors" in names:
                return TORCH_TAR
        except (tarfile.TarError, OSError):
            pass
        return TAR
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        # A torch legacy file starts with a pickled magic number (a LONG1 int).
        if head[2:3] == b"\x8a" and head[3:4] == b"\x0a" and head[4:14] == (0x1950A86A20F9469CFC6C).to_bytes(10, "little"):
            return TORCH_LEGACY
        return PICKLE
    for magic in _COMPRESSED_MAGICS:
        if head.startswith(magic):
            return JOBLIB_COMPRESSED
    if head[:1] and head[0] in _PICKLE_OPCODE_STARTS:
        return PICKLE  # protocol 0/1 pickles have no header; the scanner decides for sure
    return UNKNOWN


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def detect(path: str | Path) -> str:
    """Format of a file, or ``hf-folder`` / ``folder`` for a directory."""
    p = Path(path)
    if p.is_dir():
        return HF_FOLDER if is_hf_folder(p) else FOLDER
    return detect_file(p)


def hf_config(path: Path) -> dict:
    """The folder's config.json as a dict ({} if unreadable); never executes anything."""
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return cfg if isinstance(cfg, dict) else {}
    except (OSError, ValueError):
        return {}


_LM_TYPES = frozenset({"gpt2", "llama", "mistral", "qwen2", "gpt_neox", "phi"})
_IMAGE_TYPES = frozenset({"resnet", "vit", "convnext"})


def hf_kind(cfg: dict, *, full_mapping: bool = False) -> str | None:
    """The subject kind a Hugging Face config describes (``image-classifier``, ``causal-lm``), or None: the one rule.

    ``architectures`` decide when present; otherwise ``model_type`` is looked up in transformers' auto
    mappings when ``full_mapping`` (the loader), or in a short list of common types (a cheap guess that
    imports nothing, for ``subject add``).
    """
    archs = [str(a) for a in (cfg.get("architectures") or []) if isinstance(a, str)]
    if any(a.endswith("ForImageClassification") for a in archs):
        return "image-classifier"
    if any("CausalLM" in a or "LMHeadModel" in a for a in archs):
        return "causal-lm"
    model_type = cfg.get("model_type")
    if archs or not isinstance(model_type, str):
        return None
    if full_mapping:
        from transformers.models.auto import modeling_auto

        image_types: Collection[str] = modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.keys()
        lm_types: Collection[str] = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.keys()
    else:
        image_types, lm_types = _IMAGE_TYPES, _LM_TYPES
    if model_type in image_types:
        return "image-classifier"
    if model_type in lm_types:
        return "causal-lm"
    return None


def guess_kind(path: str | Path) -> str:
    """Cheap guess of the subject kind without loading: ``causal-lm``, ``image-classifier`` or ``unknown``."""
    p = Path(path)
    return (hf_kind(hf_config(p)) or "unknown") if p.is_dir() else "unknown"
