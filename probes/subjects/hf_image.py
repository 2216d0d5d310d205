"""Hugging Face image classifiers from a local folder, wrapped to return a logits tensor.

``from_pretrained(folder, local_files_only=True, trust_remote_code=False,
weights_only=True)``: nothing is downloaded, no code from the folder runs, and
pickled ``.bin`` weights go through torch's restricted unpickler. Weights the
checkpoint lacks (which transformers would silently initialise at random) are
an error, not a warning: a half-random suspect is no evidence.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from probes.errors import ProbeError


def _adapter_class():
    import torch.nn as nn

    class HFImageClassifierAdapter(nn.Module):
        """``forward(x) -> logits``: the probes' view of a transformers image classifier."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(pixel_values=x).logits

    return HFImageClassifierAdapter


def _size_from(value):
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value and "longest_edge" not in value:
            return int(value["shortest_edge"]), int(value["shortest_edge"])
    return None


def config_input_shape(folder: Path, config) -> tuple[tuple[int, int, int] | None, str]:
    """``(C, H, W)`` from the model config (``image_size``) or the preprocessor's crop/resize size."""
    channels = int(getattr(config, "num_channels", 3) or 3)
    hw = _size_from(getattr(config, "image_size", None))
    if hw:
        return (channels, *hw), "config.json image_size"
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        try:
            data = json.loads(pre.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict):
            keys = ("size",) if data.get("do_center_crop") is False else ("crop_size", "size")
            for key in keys:
                hw = _size_from(data.get(key))
                if hw:
                    return (channels, *hw), f"preprocessor_config.json {key}"
    return None, ""


def _offline_and_quiet() -> None:
    """Belt and braces on top of ``local_files_only``: the hub client stays offline; no progress bars or log lines."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def load_hf_image_classifier(folder: Path, device: str):
    """``(adapter_module, config, loading_info)`` for an image-classification folder."""
    _offline_and_quiet()
    import torch
    from transformers import AutoConfig, AutoModelForImageClassification

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        raise ProbeError(f"{folder}: config.json is not a usable transformers config: {text}") from None
    try:
        model, info = AutoModelForImageClassification.from_pretrained(
            str(folder), config=config, local_files_only=True, trust_remote_code=False,
            weights_only=True, output_loading_info=True, dtype=torch.float32)
    except Exception as exc:
        if _is_unpickling_refusal(exc):
            raise
        text = " ".join(str(exc).split())[:200]
        raise ProbeError(f"{folder}: transformers could not load the image classifier: {type(exc).__name__}: {text}") from None
    missing = list(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    errors = list(info.get("error_msgs") or [])
    if missing or mismatched or errors:
        parts = []
        if mismatched:
            first = mismatched[0]
            parts.append(f"{len(mismatched)} shape mismatch(es), e.g. {first[0] if isinstance(first, tuple) else first}")
        if missing:
            parts.append(f"{len(missing)} weights missing (would be random), e.g. {missing[0]}")
        if errors:
            parts.append(" ".join(str(errors[0]).split())[:120])
        raise ProbeError(f"{folder}: weights do not fit config.json: {'; '.join(parts)}")
    model = model.to(device).eval()
    adapter = _adapter_class()(model).to(device).eval()
    return adapter, config, info


def _is_unpickling_refusal(exc: BaseException) -> bool:
    import pickle

    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
