"""Turn a path into a loaded subject, safely: ``load_subject(path, arch=..., input_shape=..., device=...)``.

The format is decided by content (:mod:`probes.formats`), never by extension:

* safetensors file + ``--arch FILE.py:Class``;
* torch zip / legacy / tar checkpoint holding a state_dict, read with
  ``torch.load(weights_only=True)`` + ``--arch``;
* TorchScript archive, after its pickles pass the static scan;
* Hugging Face folder (``config.json`` + weights): image classifiers here,
  causal LMs through :func:`probes.subjects.hf_lm.load_causal_lm`.

Never the full unpickler, never a model's own Python code, never the network.
Everything that goes wrong ends in a one-line :class:`ProbeError` (or
:class:`UnsafeModelError` when loading would need code execution) for that
subject only.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from probes import formats
from probes.errors import ProbeError, UnsafeModelError, explain
from probes.subjects.arch import (
    apply_state_dict,
    build_arch,
    check_finite,
    classifier_output,
    extract_state_dict,
    first_weight_channels,
    precheck_arch,
    resolve_input_shape,
)
from probes.subjects.base import IMAGE_CLASSIFIER, ImageClassifier, Subject, pick_device
from vocabulary import Severity

# Zip sanity limits (torch and TorchScript archives store members uncompressed).
ZIP_MAX_MEMBERS = 100_000
ZIP_BOMB_MIN_BYTES = 8 * 1024 * 1024  # a compressed member this large ...
ZIP_BOMB_RATIO = 100  # ... expanding more than this is a bomb
ZIP_MAX_TOTAL_RATIO = 50  # declared total vs archive size, when over ZIP_BOMB_MIN_BYTES


HF_SAFETENSORS = re.compile(r"^model(-\d+-of-\d+)?\.safetensors$")
HF_PICKLED = re.compile(r"^pytorch_model(-\d+-of-\d+)?\.bin$")
HF_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HF_OTHER_FRAMEWORKS = ("tf_model.h5", "flax_model.msgpack", "model.ckpt.index", "model.onnx")

DYNAMIC_HINT = "run the opt-in dynamic probe (--probes dynamic) to watch it load in a sandbox"


# -- public entry point ---------------------------------------------------------------------
def load_subject(path, *, arch: str | None = None, input_shape: tuple | None = None,
                 device: str | None = None) -> Subject:
    """Load the subject at ``path`` without running any of its code.

    ``arch`` is the examiner's ``path/file.py:ClassName`` for bare weights,
    ``input_shape`` a ``(C, H, W)`` tuple or ``"C,H,W"`` text, ``device`` a
    torch device (default: CUDA when present). Raises :class:`ProbeError` /
    :class:`UnsafeModelError` with a one-line message.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ProbeError(f"no such file or folder: {p}")
    try:
        fmt = formats.detect(p)
    except OSError as exc:
        raise ProbeError(f"{p}: cannot be read: {explain(exc)}") from None
    try:
        return _dispatch(p, fmt, arch=arch, input_shape=input_shape, device=device)
    except ProbeError:
        raise
    except Exception as exc:  # anything else still ends as this subject's one-line error
        raise ProbeError(f"{p}: could not be loaded as {fmt}: {explain(exc)}") from None


def _dispatch(p: Path, fmt: str, *, arch, input_shape, device) -> Subject:
    if fmt == formats.EMPTY:
        raise ProbeError(f"{p} is empty (0 bytes); not a model")
    if fmt == formats.SAFETENSORS:
        return _load_safetensors(p, arch=arch, input_shape=input_shape, device=device)
    if fmt in (formats.TORCH_ZIP, formats.TORCH_LEGACY, formats.TORCH_TAR):
        return _load_torch_checkpoint(p, fmt, arch=arch, input_shape=input_shape, device=device)
    if fmt == formats.TORCHSCRIPT:
        return _load_torchscript(p, input_shape=input_shape, device=device)
    if fmt == formats.HF_FOLDER:
        return _load_hf_folder(p, input_shape=input_shape, device=device)
    if fmt == formats.FOLDER:
        raise ProbeError(f"{p} is a folder without config.json, not a Hugging Face model folder; give the model file itself")
    if fmt == formats.ZIP:
        check_zip(p)  # a truncated/corrupt archive says so here
        raise ProbeError(f"{p} is a zip archive but neither a torch checkpoint nor a TorchScript archive")
    if fmt in (formats.PICKLE, formats.JOBLIB_COMPRESSED):
        raise _unpickler_refusal(p, f"a plain {'pickle' if fmt == formats.PICKLE else 'compressed (joblib) pickle'}, "
                                    "which only the full unpickler can load")
    if fmt in (formats.NUMPY, formats.NPZ):
        raise ProbeError(f"{p} is a numpy array file (data, not a model); pass data files with --data")
    raise ProbeError(f"{p}: unrecognised file format; the workbench loads safetensors, torch checkpoints, "
                     "TorchScript archives and Hugging Face folders")


# -- archive and scan checks ----------------------------------------------------------------
def _bad_member_name(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        return True
    if re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in PurePosixPath(name).parts


def check_zip(path: Path) -> None:
    """Refuse truncated/corrupt archives, path-traversal names, duplicates and zip bombs, reading no data."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise ProbeError(f"{path}: truncated or corrupt zip archive ({explain(exc, 120)})") from None
    if len(infos) > ZIP_MAX_MEMBERS:
        raise ProbeError(f"{path}: zip archive has {len(infos)} members (limit {ZIP_MAX_MEMBERS}); refused")
    names = set()
    total = 0
    packed = 0
    for info in infos:
        name = info.filename
        if _bad_member_name(name):
            raise ProbeError(f"{path}: zip member name escapes the archive (path traversal): {name!r}")
        if name in names:
            raise ProbeError(f"{path}: zip archive has two members named {name!r}; refused as ambiguous")
        names.add(name)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ProbeError(f"{path}: zip member {name!r} uses unsupported compression method {info.compress_type}")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise ProbeError(f"{path}: zip member {name!r} declares inconsistent sizes; refused")
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > ZIP_BOMB_MIN_BYTES and ratio > ZIP_BOMB_RATIO:
            raise ProbeError(f"{path}: zip bomb: member {name!r} expands {info.compress_size} -> "
                             f"{info.file_size} bytes ({ratio:.0f}x); refused")
        if info.header_offset + info.compress_size > size:
            raise ProbeError(f"{path}: truncated zip archive: member {name!r} runs past the end of the file")
        total += info.file_size
        packed += info.compress_size
    if packed > size:
        raise ProbeError(f"{path}: zip members overlap ({packed} packed bytes in a {size}-byte file), "
                         "a zip bomb pattern; refused")
    if total > ZIP_BOMB_MIN_BYTES and total > ZIP_MAX_TOTAL_RATIO * size:
        raise ProbeError(f"{path}: zip bomb: {size}-byte archive declares {total} bytes of content; refused")


def static_scan(path: Path):
    """``(verdict, [finding text...])`` from :func:`probes.static_scan.scan_path`."""
    from probes.static_scan import scan_path

    try:
        result = scan_path(path)
    except Exception as exc:
        return "inconclusive", [f"scan failed: {explain(exc, 100)}"]
    details = getattr(result, "details", None) or {}
    findings = [f for f in details.get("findings", []) if isinstance(f, dict)]
    findings.sort(key=lambda f: -(Severity.parse(str(f.get("severity", "")).lower()) or Severity.INFO).rank)
    seen: list[str] = []
    for f in findings:
        module, name = f.get("module") or "", f.get("name") or ""
        if module and name:
            what = f"{module}.{name}"
        else:
            rule = str(f.get("rule") or f.get("opcode") or "finding")
            what = f"{rule} ({f['member']})" if f.get("member") else rule
        text = f"{what} [{f.get('severity', '?')}]"
        if text not in seen:
            seen.append(text)
    return getattr(result, "verdict", "inconclusive"), seen


def _scan_text(verdict, found: list[str]) -> str:
    if verdict is None:
        return "static scan unavailable"
    listed = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    return f"static scan: {verdict}" + (f", found {listed}" if listed else ", no findings")


def _unpickler_refusal(p: Path, what: str) -> UnsafeModelError:
    """The refusal for a file only the full unpickler could load, naming what the scan found."""
    verdict, found = static_scan(p)
    scan = _scan_text(verdict, found)
    if verdict == "malicious":
        return UnsafeModelError(f"{p} refused: {scan}; it would run code when unpickled. Do not load it; "
                                f"{DYNAMIC_HINT}")
    return UnsafeModelError(f"{p} is {what} ({scan}); not loaded. Export a state_dict "
                            "(torch.save(model.state_dict(), F) or safetensors) and pass --arch FILE.py:Class, "
                            f"or {DYNAMIC_HINT}")


# -- bare weights + --arch --------------------------------------------------------------------
def _need_arch(p: Path, fmt: str, n: int) -> ProbeError:
    return ProbeError(f"{p} holds only weights ({fmt} state_dict, {n} tensors); "
                      "pass the architecture as --arch path/to/file.py:ClassName")


def _shapes_fit(shapes: dict[str, list[int]], state: dict, where: str, arch_name: str) -> None:
    """Refuse, before the architecture runs in this process, a state_dict whose tensors cannot fit it."""
    if shapes and state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in shapes):
        state = {k[len("module."):]: v for k, v in state.items()}
    bad = [k for k in shapes if k in state and list(state[k].shape) != list(shapes[k])]
    if bad:
        k = bad[0]
        raise ProbeError(f"{where} does not fit --arch {arch_name}: {len(bad)} shape mismatch(es), e.g. {k}: "
                         f"file {tuple(state[k].shape)} vs model {tuple(shapes[k])}")


def _finish_arch(p: Path, fmt: str, state: dict, *, arch, input_shape, device, extra=None) -> ImageClassifier:
    where = str(p)
    check_finite(state.items(), where)
    if not arch:
        raise _need_arch(p, fmt, len(state))
    shapes = precheck_arch(arch)  # the examiner's file runs in a child first: exits, hangs, crashes stay there
    arch_name = arch.rpartition(":")[2]
    _shapes_fit(shapes, state, where, arch_name)
    model = build_arch(arch)
    apply_state_dict(model, state, where, arch_name)
    dev = pick_device(device)
    try:
        model = model.to(dev).eval()
    except Exception as exc:
        raise ProbeError(f"{p}: cannot move the model to {dev}: {explain(exc)}") from None
    metadata = {"arch": arch, "tensors": len(state), **(extra or {})}
    return _image_classifier(p, fmt, model, dev, input_shape=input_shape, metadata=metadata)


def _image_classifier(p: Path, fmt: str, module, dev: str, *, input_shape, metadata: dict, hint=None,
                      config_shape=None, config_source: str = "config") -> ImageClassifier:
    shape, source = resolve_input_shape(module, explicit=input_shape, hint=hint, device=dev,
                                        config_shape=config_shape, config_source=config_source)
    try:
        num_classes = classifier_output(module, shape, dev)
    except ProbeError as exc:
        raise ProbeError(f"{p}: {exc}") from None
    except Exception as exc:
        raise ProbeError(f"{p}: the model fails on input shape {shape}: {explain(exc)}") from None
    params = sum(int(t.numel()) for t in module.parameters())
    metadata = {**metadata, "input_shape_source": source, "parameters": params}
    return ImageClassifier(kind=IMAGE_CLASSIFIER, path=str(p), format=fmt, metadata=metadata,
                           module=module, input_shape=tuple(shape), num_classes=num_classes, device=dev)


def _load_safetensors(p: Path, *, arch, input_shape, device) -> ImageClassifier:
    from safetensors.torch import load_file

    try:
        state = load_file(str(p), device="cpu")
    except Exception as exc:
        raise ProbeError(f"{p}: invalid safetensors file: {explain(exc, 160)}") from None
    if not state:
        raise ProbeError(f"{p}: safetensors file holds no tensors")
    return _finish_arch(p, formats.SAFETENSORS, state, arch=arch, input_shape=input_shape, device=device)


def _load_torch_checkpoint(p: Path, fmt: str, *, arch, input_shape, device) -> ImageClassifier:
    import torch

    if fmt == formats.TORCH_ZIP:
        check_zip(p)
    # weights_only still runs what its allowlist permits (bytearray(3e9), huge storages): scan before loading
    verdict, found = static_scan(p)
    if verdict == "malicious":
        raise UnsafeModelError(f"{p} refused before loading: {_scan_text(verdict, found)}. Do not load it; "
                               f"{DYNAMIC_HINT}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        if "Weights only load failed" in str(exc):
            raise _unpickler_refusal(p, "a pickled object that is not a plain state_dict "
                                        "(for example a whole model), which only the full unpickler can load") from None
        raise ProbeError(f"{p}: {fmt} checkpoint could not be read (truncated or corrupt?): {explain(exc, 160)}") from None
    state = extract_state_dict(obj, str(p))
    return _finish_arch(p, fmt, state, arch=arch, input_shape=input_shape, device=device,
                        extra={"weights_only": True})


# -- TorchScript ----------------------------------------------------------------------------
def _load_torchscript(p: Path, *, input_shape, device) -> ImageClassifier:
    import torch

    from probes.subjects import torchscript

    check_zip(p)
    verdict, found = static_scan(p)
    if verdict is None:
        raise UnsafeModelError(f"{p}: TorchScript archive not loaded: the static scan (probes.static_scan) "
                               "is unavailable, and its pickles must pass it first")
    if verdict == "malicious":
        raise UnsafeModelError(f"{p} refused: {_scan_text(verdict, found)}; the TorchScript archive's pickles "
                               f"would run code. Do not load it; {DYNAMIC_HINT}")
    dev = pick_device(device)
    module = torchscript.load_torchscript(p, dev)
    named = list(module.named_parameters()) + list(module.named_buffers())
    check_finite(named, str(p))
    metadata: dict[str, Any] = {"static_scan": _scan_text(verdict, found)}
    sub = _image_classifier(p, formats.TORCHSCRIPT, module, dev, input_shape=input_shape, metadata=metadata,
                            hint=first_weight_channels(module.named_parameters()))
    try:
        feature_fn, layer = torchscript.build_feature_fn(module)
        with torch.no_grad():
            x = torch.zeros((2, *sub.input_shape), device=dev)
            feats, logits = feature_fn(x)
            if not torch.allclose(logits, module(x), rtol=1e-4, atol=1e-5):  # bit-identical on CPU (tested)
                raise ProbeError("TorchScript feature extraction changed the logits")
            if not isinstance(feats, torch.Tensor) or feats.shape[0] != 2:
                raise ProbeError("TorchScript feature extraction gave no per-input features")
    except Exception as exc:
        message = f"{p}: intermediate activations unavailable for this TorchScript model: {explain(exc, 160)}"

        def feature_fn(x, _message=message):
            raise ProbeError(_message)

        layer = "unavailable"
        sub.metadata["feature_error"] = message
    sub.feature_fn = feature_fn
    sub.feature_layer_name = layer
    sub.metadata["feature_layer"] = layer
    return sub


# -- Hugging Face folders -------------------------------------------------------------------
def hf_weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(safetensors files, pickled .bin files)`` transformers would consider in ``folder``."""
    files = [f for f in folder.iterdir() if f.is_file()]
    safe = sorted(f for f in files if HF_SAFETENSORS.match(f.name))
    pickled = sorted(f for f in files if HF_PICKLED.match(f.name))
    return safe, pickled


def _check_hf_index(folder: Path, index: Path) -> None:
    """A shard index may only name plain files inside the folder (no paths leading elsewhere)."""
    import json

    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        shards = set((data.get("weight_map") or {}).values())
    except (OSError, ValueError, AttributeError, TypeError):
        raise ProbeError(f"{index}: unreadable shard index") from None
    for shard in shards:
        if not isinstance(shard, str) or _bad_member_name(shard) or "/" in shard:
            raise ProbeError(f"{index}: shard name {shard!r} points outside the folder (path traversal); refused")
        if not (folder / shard).is_file():
            raise ProbeError(f"{index}: lists shard {shard} that is not in the folder")


def _hf_kind(p: Path, cfg: dict) -> str:
    kind = formats.hf_kind(cfg, full_mapping=True)
    if kind is not None:
        return kind
    archs = [str(a) for a in (cfg.get("architectures") or []) if isinstance(a, str)]
    model_type = cfg.get("model_type")
    described = ", ".join(archs) or str(model_type or "unknown model type")
    raise ProbeError(f"{p}: config.json describes {described}; the workbench loads image classifiers "
                     "(*ForImageClassification) and causal language models")


def _load_hf_folder(p: Path, *, input_shape, device) -> Subject:  # noqa: C901 - the safe-load rules of a Hugging Face folder, one per refusal
    cfg = formats.hf_config(p)
    if not cfg:
        raise ProbeError(f"{p}: config.json is not a readable JSON object")
    if cfg.get("auto_map"):
        auto_map = cfg["auto_map"]
        refs = ", ".join(f"{v}" for v in (auto_map.values() if isinstance(auto_map, dict) else [auto_map]))[:160]
        raise UnsafeModelError(f"{p}: config.json asks for the folder's own Python code (auto_map: {refs}); "
                               "the workbench never runs a model's code (trust_remote_code=False). Export a "
                               f"state_dict and pass --arch FILE.py:Class from code you trust, or {DYNAMIC_HINT}")
    safe, pickled = hf_weight_files(p)
    index_only = [n for n in HF_INDEXES if (p / n).is_file()]
    if not safe and not pickled:
        others = [n for n in HF_OTHER_FRAMEWORKS if (p / n).exists()]
        if others:
            raise ProbeError(f"{p}: only {', '.join(others)} weights; the workbench loads safetensors or PyTorch weights")
        if index_only:
            raise ProbeError(f"{p}: {index_only[0]} lists weight shards that are not in the folder")
        raise ProbeError(f"no model weights in {p}")
    for name in index_only:
        _check_hf_index(p, p / name)
    # transformers prefers safetensors; pickled shards are read only when there are none.
    if not safe:
        for f in pickled:
            fmt = formats.detect(f)
            if fmt == formats.EMPTY:
                raise ProbeError(f"{f} is empty (0 bytes); not a model")
            if fmt == formats.TORCH_ZIP:
                check_zip(f)
            elif fmt not in (formats.TORCH_LEGACY,):
                raise _unpickler_refusal(f, f"a {fmt} file where a torch state_dict belongs, which only the "
                                            "full unpickler can load")
            verdict, found = static_scan(f)
            if verdict == "malicious":
                raise UnsafeModelError(f"{f} refused: {_scan_text(verdict, found)}; it would run code when "
                                       f"unpickled. Do not load it; {DYNAMIC_HINT}")
    else:
        for f in safe:
            if formats.detect(f) != formats.SAFETENSORS:
                raise ProbeError(f"{f} is named .safetensors but is not a valid safetensors file")
    kind = _hf_kind(p, cfg)
    try:
        if kind == "causal-lm":
            return _load_hf_lm(p, device)
        return _load_hf_image(p, cfg, input_shape=input_shape, device=device)
    except ProbeError:
        raise
    except Exception as exc:
        from probes.subjects.hf_image import _is_unpickling_refusal

        if _is_unpickling_refusal(exc):
            target = pickled[0] if len(pickled) == 1 else p
            raise _unpickler_refusal(target, "a pickled file that is not a plain state_dict, which only the full "
                                             "unpickler can load") from None
        raise ProbeError(f"{p}: could not be loaded as a Hugging Face {kind}: {explain(exc)}") from None


def _load_hf_lm(p: Path, device) -> Subject:
    try:
        from probes.subjects.hf_lm import load_causal_lm
    except ImportError as exc:
        raise ProbeError(f"{p}: causal language model support is not available ({explain(exc, 100)})") from None
    sub = load_causal_lm(p, device=device)
    if sub.model is not None:
        named = list(sub.model.named_parameters()) + list(sub.model.named_buffers())
        check_finite(named, str(p))
    if not sub.path:
        sub.path = str(p)
    if not sub.format:
        sub.format = formats.HF_FOLDER
    return sub


def _load_hf_image(p: Path, cfg: dict, *, input_shape, device) -> ImageClassifier:
    from probes.subjects.hf_image import config_input_shape, load_hf_image_classifier

    dev = pick_device(device)
    adapter, config, info = load_hf_image_classifier(p, dev)
    named = list(adapter.named_parameters()) + list(adapter.named_buffers())
    check_finite(named, str(p))
    cfg_shape, cfg_source = config_input_shape(p, config)
    labels = getattr(config, "id2label", None) or {}
    metadata: dict[str, Any] = {
        "model_type": cfg.get("model_type"),
        "architectures": list(cfg.get("architectures") or []),
        "unexpected_weights": len(info.get("unexpected_keys") or []),
    }
    if labels and len(labels) <= 1000:
        metadata["labels"] = [str(labels[k]) for k in sorted(labels, key=int)]
    return _image_classifier(p, formats.HF_FOLDER, adapter, dev, input_shape=input_shape, metadata=metadata,
                             config_shape=cfg_shape, config_source=cfg_source)
