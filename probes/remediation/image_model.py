"""An image classifier as remediation needs it: a trainable copy, its classifier head, and saving it in its own format.

The repaired model is written in the subject's own format: TorchScript stays
TorchScript (``torch.jit.save``), a Hugging Face folder stays a folder
(``save_pretrained``, safetensors), and a state_dict loaded with ``--arch``
becomes ``repaired.safetensors`` with a ``repaired.json`` naming the
architecture. The written file is loaded back through the workbench's own safe
loader and must give the same logits as the model that was measured.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from probes import formats
from probes.errors import ProbeError, explain
from probes.subjects.base import ImageClassifier


def is_torchscript(module: Any) -> bool:
    import torch

    return isinstance(module, torch.jit.ScriptModule)


def working_copy(subject: ImageClassifier) -> ImageClassifier:
    """A deep copy of ``subject`` whose parameters can be trained; ProbeError when the model has none."""
    try:
        if is_torchscript(subject.module):
            # a deep copy of a ScriptModule holds non-leaf parameters; a round trip through torch.jit.save of the
            # module already loaded (and scanned) gives an independent, trainable one
            import io

            import torch

            buf = io.BytesIO()
            with warnings.catch_warnings():  # torch 2.13 marks jit as deprecated; the subject already is TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(subject.module, buf)
                buf.seek(0)
                module = torch.jit.load(buf, map_location=subject.device)
        else:
            module = copy.deepcopy(subject.module)
    except Exception as exc:  # noqa: BLE001 - any module that refuses to be copied cannot be repaired
        raise ProbeError(f"the model cannot be copied for repair: {explain(exc, 120)}") from None
    params = list(module.parameters())
    if not params or not any(p.dtype.is_floating_point for p in params):
        raise ProbeError("the model has no trainable floating-point parameters; it cannot be fine-tuned or pruned")
    for p in params:
        if p.dtype.is_floating_point:
            p.requires_grad_(True)
    feature_fn, layer = subject.feature_fn, subject.feature_layer_name
    if feature_fn is not None and is_torchscript(module):
        from probes.subjects.torchscript import build_feature_fn

        try:
            feature_fn, layer = build_feature_fn(module)
        except ProbeError:
            feature_fn = None
    out = ImageClassifier(kind=subject.kind, path=subject.path, format=subject.format,
                          metadata=dict(subject.metadata), module=module, input_shape=subject.input_shape,
                          num_classes=subject.num_classes, device=subject.device, feature_fn=feature_fn,
                          feature_layer_name=layer)
    return out


def head_weight(subject: ImageClassifier):
    """``(name, weight)`` of the classifier head (K, D): the parameter that reads the penultimate features."""
    layer = subject.penultimate_layer()
    if not layer.startswith("input:"):
        raise ProbeError(f"the penultimate layer {layer!r} is not the input of a classifier head; cannot prune it")
    name = layer.split(":", 1)[1]
    params = dict(subject.module.named_parameters())
    w = params.get(f"{name}.weight")
    if w is None or w.ndim != 2 or int(w.shape[0]) != int(subject.num_classes):
        raise ProbeError(f"no (classes x features) weight at the classifier head {name!r}; cannot prune it")
    return name, w


def _sha256(path: Path) -> str:
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(subject: ImageClassifier, out_dir: Path, *, arch: str | None = None) -> dict[str, Any]:
    """Write the repaired model in the subject's own format; returns ``{path, format, sha256}``."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    module = subject.module.eval()
    if subject.format == formats.TORCHSCRIPT or is_torchscript(module):
        path = out_dir / "repaired.ts.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(module, str(path))
        fmt = formats.TORCHSCRIPT
    elif subject.format == formats.HF_FOLDER:
        path = out_dir / "repaired"
        inner = getattr(module, "model", None)
        if inner is None or not hasattr(inner, "save_pretrained"):
            raise ProbeError("the Hugging Face image classifier cannot be saved (no save_pretrained)")
        inner.save_pretrained(str(path), safe_serialization=True)
        src = Path(subject.path)
        for extra in ("preprocessor_config.json",):
            if (src / extra).is_file():
                shutil.copy2(src / extra, path / extra)
        fmt = formats.HF_FOLDER
    else:
        from safetensors.torch import save_file

        path = out_dir / "repaired.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(path))
        arch = arch or subject.metadata.get("arch")
        sidecar = {"arch": arch, "input_shape": list(subject.input_shape), "num_classes": int(subject.num_classes),
                   "repaired_from": subject.path}
        (out_dir / "repaired.json").write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
        fmt = formats.SAFETENSORS
    return {"path": str(path), "format": fmt, "sha256": _sha256(path), "arch": arch if fmt == formats.SAFETENSORS
            else None}


def check_saved(subject: ImageClassifier, saved: dict[str, Any], x) -> float:
    """Load the written model with the workbench's safe loader; the largest logit difference to ``subject``."""
    import numpy as np

    from probes.subjects.loader import load_subject

    if saved["format"] == formats.SAFETENSORS and not saved.get("arch"):
        raise ProbeError("the repaired weights need an architecture (--arch) to be loaded back")
    back = load_subject(saved["path"], arch=saved.get("arch"), input_shape=subject.input_shape,
                        device=subject.device)
    assert isinstance(back, ImageClassifier)
    a = subject.predict_proba(x[:64])
    b = back.predict_proba(x[:64])
    diff = float(np.abs(a - b).max()) if len(a) else 0.0
    if diff > 1e-4:
        raise ProbeError(f"the written model does not reproduce the repaired one (probabilities differ by {diff:.2g})")
    return diff
