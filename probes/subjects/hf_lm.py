"""Causal language models from a local Hugging Face folder, fully offline, never running the folder's code.

``load_causal_lm(folder, device=None) -> CausalLM``:

* ``config.json`` must describe a causal LM that transformers itself implements
  (``model_type`` in the causal-LM auto mapping); ``auto_map`` (remote code) in
  the config or the tokenizer config is refused with :class:`UnsafeModelError`;
* weights: ``model.safetensors`` (sharded or not) or a weights-only PyTorch
  checkpoint (``pytorch_model.bin``, read with ``weights_only=True``);
* tokenizer files (``tokenizer.json`` or a vocabulary + ``tokenizer_config.json``)
  must be present: a probe cannot hunt triggers without the tokenizer;
* ``local_files_only=True`` and ``trust_remote_code=False`` everywhere; hub
  progress bars are silenced.

Every failure ends in a one-line :class:`ProbeError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from probes.errors import ProbeError, UnsafeModelError, one_line
from probes.subjects.base import CAUSAL_LM, CausalLM, pick_device

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer_config.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ProbeError(f"{path} is not readable JSON ({one_line(exc, 120)})") from None
    if not isinstance(data, dict):
        raise ProbeError(f"{path} is not a JSON object")
    return data


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def check_causal_lm_folder(folder: str | Path) -> dict:
    """Validate ``folder`` without loading weights; returns its config. Raises ProbeError/UnsafeModelError."""
    p = Path(folder).expanduser()
    if not p.is_dir():
        raise ProbeError(f"{p} is not a folder; a causal LM is loaded from a Hugging Face model folder")
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise ProbeError(f"{p} has no config.json; not a Hugging Face model folder")
    cfg = _read_json(cfg_path)
    for name in ("config.json", "tokenizer_config.json"):
        f = p / name
        extra = cfg if name == "config.json" else (_read_json(f) if f.is_file() else {})
        if extra.get("auto_map"):
            raise UnsafeModelError(f"{f} asks for the folder's own Python code (auto_map); the workbench never "
                                   "runs a model's code (trust_remote_code=False)")
    model_type = cfg.get("model_type")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not isinstance(model_type, str) or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        archs = ", ".join(str(a) for a in cfg.get("architectures") or []) or "no architectures"
        raise ProbeError(f"{p} is not a causal language model (model_type {model_type!r}, {archs}); "
                         "the kl probe needs a causal LM that transformers implements")
    if not any((p / n).is_file() for n in WEIGHT_FILES) and not any(p.glob("model-*-of-*.safetensors")):
        raise ProbeError(f"{p} has no model weights (model.safetensors or pytorch_model.bin)")
    if not any((p / n).is_file() for n in TOKENIZER_FILES if n != "tokenizer_config.json"):
        raise ProbeError(f"{p} has no tokenizer files (tokenizer.json, vocab.json, tokenizer.model...); "
                         "copy the model's tokenizer into the folder")
    return cfg


def load_causal_lm(folder: str | Path, device: str | None = None) -> CausalLM:
    """Load the causal LM and tokenizer in ``folder`` onto ``device`` (default: CUDA when present)."""
    p = Path(folder).expanduser()
    cfg = check_causal_lm_folder(p)
    _quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise ProbeError(f"{p}: tokenizer could not be loaded ({one_line(exc)})") from None
    if isinstance(tokenizer, bool) or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise ProbeError(f"{p}: tokenizer could not be loaded")
    try:
        # half precision on CUDA (the hunt's divergences are computed in float32 from the logits); float32 on CPU
        dtype = torch.float16 if str(dev).startswith("cuda") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, trust_remote_code=False,
                                                     weights_only=True, dtype=dtype)
    except Exception as exc:  # noqa: BLE001
        raise ProbeError(f"{p}: could not be loaded as a causal LM ({one_line(exc)})") from None
    model = model.to(dev).eval()
    if tokenizer.pad_token_id is None:
        # left padding needs a pad id; any id works because the attention mask hides it
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(0)
    tokenizer.padding_side = "left"
    meta = {"model_type": cfg.get("model_type"), "vocab_size": int(len(tokenizer)),
            "parameters": int(sum(t.numel() for t in model.parameters())),
            "chat_template": bool(getattr(tokenizer, "chat_template", None))}
    return CausalLM(kind=CAUSAL_LM, path=str(p), format="hf-folder", metadata=meta,
                    model=model, tokenizer=tokenizer, device=dev)
