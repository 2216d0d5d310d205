"""Examiner-supplied architectures and state_dicts for ``nn.Module`` subjects.

``--arch path/to/file.py:ClassName`` names *examiner* code: a Python file the
examiner trusts, imported from its path. It is the only code this module runs;
a suspect file contributes tensors only (a state_dict), never code.

Also here: turning a loaded checkpoint into a plain ``{name: tensor}`` mapping,
checking weights are finite, applying a state_dict with a one-line summary of
what does not fit, and finding an image classifier's input shape.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from probes.errors import ProbeError, explain

# Keys under which training scripts commonly nest the weights inside a checkpoint dict.
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "params", "module", "ema")

# Square sizes tried when only the channel count is known (a network with a
# Flatten->Linear head runs at exactly one of them; a fully convolutional one at many).
PROBE_SIZES = (8, 16, 28, 32, 48, 64, 96, 112, 128, 160, 192, 224, 256, 299, 384, 512)


# -- --arch FILE.py:ClassName ---------------------------------------------------------------
def parse_arch_spec(spec: str) -> tuple[Path, str]:
    """Split ``path/file.py:ClassName`` (drive letters and colons in the path are fine)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ProbeError(f"--arch must look like path/to/file.py:ClassName, got {spec!r}")
    file_part, _, name = spec.rpartition(":")
    name = name.strip()
    if not file_part or not name or not all(part.isidentifier() for part in name.split(".")):
        raise ProbeError(f"--arch must look like path/to/file.py:ClassName, got {spec!r}")
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise ProbeError(f"--arch file not found: {path}")
    if path.suffix != ".py":
        raise ProbeError(f"--arch file must be a Python source file (.py): {path}")
    return path, name


def load_arch_class(spec: str):
    """Import the examiner's architecture file from its path and return the named callable."""
    path, name = parse_arch_spec(spec)
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    mod_name = f"_workbench_arch_{path.stem.replace('-', '_')}_{digest}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ProbeError(f"--arch file cannot be imported: {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module  # dataclasses/typing inside the file look themselves up here
    try:
        module_spec.loader.exec_module(module)
    except KeyboardInterrupt:
        sys.modules.pop(mod_name, None)
        raise
    except BaseException as exc:  # noqa: BLE001 - broken, or SystemExit: say how, in one line; never end the scan
        sys.modules.pop(mod_name, None)
        raise ProbeError(f"--arch file {path.name} failed to import: {_explain_base(exc)}") from None
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_"))
            raise ProbeError(f"--arch file {path.name} has no {name!r}; it defines: {', '.join(public) or 'no classes'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ProbeError(f"--arch {name!r} in {path.name} is not a class or factory function")
    return obj


def _explain_base(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}) (SystemExit)"
    if isinstance(exc, Exception):
        return explain(exc)
    return f"{type(exc).__name__}: {exc}"


# Run by ``python -c`` in a child: import the examiner's file from its path, build ClassName(), print the
# state_dict's shapes on one marked line. Whatever the file does (sys.exit, os._exit, a hang, a crash)
# happens there first, so this process learns it before running the file itself.
_PRECHECK = r"""
import importlib.util, json, os, sys
path, name = sys.argv[1], sys.argv[2]
stage = "import"
def out(obj):
    sys.__stdout__.write("\n\x00WB-ARCH " + json.dumps(obj) + "\n"); sys.__stdout__.flush()
try:
    spec = importlib.util.spec_from_file_location("_workbench_arch_precheck", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_workbench_arch_precheck"] = mod
    spec.loader.exec_module(mod)
    obj = mod
    for part in name.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n, v in vars(mod).items() if isinstance(v, type) and not n.startswith("_"))
            out({"ok": False, "stage": "lookup", "error": ", ".join(public) or "no classes"})
            os._exit(0)
        obj = getattr(obj, part)
    stage = "construct"
    model = obj()
    sd = model.state_dict() if hasattr(model, "state_dict") else {}
    out({"ok": True, "shapes": {k: list(getattr(v, "shape", ())) for k, v in sd.items()}})
except BaseException as exc:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    if isinstance(exc, SystemExit):
        what = f"it called sys.exit({exc.code!r}) (SystemExit)"
    else:
        what = f"{type(exc).__name__}: {text}"
    out({"ok": False, "stage": stage, "error": what})
os._exit(0)
"""
_PRECHECKED: dict[tuple, dict[str, list[int]]] = {}
PRECHECK_TIMEOUT_S = 120.0


def precheck_arch(spec: str, *, timeout_s: float = PRECHECK_TIMEOUT_S) -> dict[str, list[int]]:
    """Import and build the ``--arch`` class in a child process first; its state_dict's shapes, or a one-line
    ProbeError for a file that exits, crashes, hangs or fails there (so it never does so in this process)."""
    import os
    import subprocess

    path, name = parse_arch_spec(spec)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, name)
    if key in _PRECHECKED:
        return _PRECHECKED[key]
    try:
        proc = subprocess.run([sys.executable, "-c", _PRECHECK, str(path.resolve()), name], capture_output=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        raise ProbeError(f"--arch {path.name}:{name} did not import and build within {timeout_s:g} s "
                         "(checked in a child process)") from None
    marked = [ln for ln in proc.stdout.decode("utf-8", "replace").splitlines() if ln.startswith("\x00WB-ARCH ")]
    if not marked:
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise ProbeError(f"--arch file {path.name} ended the process while being imported or built ({how}; "
                         "checked in a child process)")
    import json

    report = json.loads(marked[-1].split(" ", 1)[1])
    if not report.get("ok"):
        stage, err = report.get("stage"), report.get("error")
        if stage == "lookup":  # the same words as the in-process checks below
            raise ProbeError(f"--arch file {path.name} has no {name!r}; it defines: {err}")
        if stage == "construct":
            raise ProbeError(f"--arch {name}() could not be constructed without arguments: {err} "
                             "(checked in a child process)")
        raise ProbeError(f"--arch file {path.name} failed to import: {err} (checked in a child process)")
    _PRECHECKED[key] = report["shapes"]
    return report["shapes"]


def build_arch(spec: str):
    """Instantiate ``ClassName()`` (no arguments) from the spec and check it is an ``nn.Module``."""
    import torch.nn as nn

    factory = load_arch_class(spec)
    name = spec.rpartition(":")[2]
    try:
        model = factory()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit from the examiner's code included
        raise ProbeError(f"--arch {name}() could not be constructed without arguments: {_explain_base(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ProbeError(f"--arch {name}() returned {type(model).__name__}, not a torch nn.Module")
    return model


# -- state_dicts ----------------------------------------------------------------------------
def _is_tensor_map(obj) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj) and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj, where: str) -> dict:
    """The ``{name: tensor}`` mapping inside what ``torch.load(weights_only=True)`` returned.

    Accepts a plain state_dict, a checkpoint dict nesting one under a usual key
    (``state_dict``, ``model``...), and drops non-tensor entries such as
    ``_metadata`` or an epoch counter next to the tensors.
    """
    import torch

    if not isinstance(obj, dict):
        raise ProbeError(f"{where} holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors)")
    if _is_tensor_map(obj):
        return dict(obj)
    for key in NESTED_STATE_KEYS:
        if _is_tensor_map(obj.get(key)):
            return dict(obj[key])
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if tensors:
        return tensors
    for value in obj.values():  # one level of an unusual nesting key
        if _is_tensor_map(value):
            return dict(value)
    keys = ", ".join(repr(k) for k in list(obj)[:6])
    raise ProbeError(f"{where} holds a dict without tensors, not a state_dict (keys: {keys})")


def check_finite(named_tensors, where: str) -> None:
    """Refuse weights holding NaN or infinity (every floating-point tensor is checked)."""
    import torch

    bad = []
    for name, t in named_tensors:
        if not isinstance(t, torch.Tensor) or not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
            continue
        if t.device.type == "meta":
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int((~finite).sum()) - n_nan
            bad.append(f"{name} ({n_nan} NaN, {n_inf} inf)")
    if bad:
        more = f" and {len(bad) - 3} more tensors" if len(bad) > 3 else ""
        raise ProbeError(f"{where}: weights are not finite: {'; '.join(bad[:3])}{more}")


def _shape(t) -> str:
    return "(" + ",".join(str(int(s)) for s in t.shape) + ")"


def apply_state_dict(model, state: dict, where: str, arch_name: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line summary of what does not fit."""
    expected = model.state_dict()
    if expected and state and all(k.startswith("module.") for k in state) and not any(
            k.startswith("module.") for k in expected):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} shape mismatch(es), e.g. {k}: file {_shape(state[k])} vs model {_shape(expected[k])}")
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise ProbeError(f"{where} does not fit --arch {arch_name}: {'; '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # dtype trouble, custom hooks in the arch...
        raise ProbeError(f"{where} does not fit --arch {arch_name}: {explain(exc)}") from None


# -- input shape and class count ------------------------------------------------------------
def _as_shape(value) -> tuple[int, int, int] | None:
    try:
        shape = tuple(int(s) for s in value)
    except (TypeError, ValueError):
        return None
    if len(shape) == 4 and shape[0] in (1, -1):  # (N, C, H, W) written with a batch axis
        shape = shape[1:]
    if len(shape) != 3 or min(shape) <= 0:
        return None
    return shape  # type: ignore[return-value]


def parse_input_shape(value) -> tuple[int, int, int]:
    """``(C, H, W)`` from a tuple or from the CLI's ``"C,H,W"`` text."""
    if isinstance(value, str):
        value = [v for v in value.replace("x", ",").split(",") if v.strip()]
    shape = _as_shape(value)
    if shape is None:
        raise ProbeError(f"input shape must be three positive integers C,H,W, got {value!r}")
    return shape


def first_channels(module) -> tuple[str, int] | None:
    """``("conv", C)`` from the first Conv2d or ``("linear", in_features)`` from a leading Linear."""
    import torch.nn as nn

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return "conv", int(m.in_channels)
        if isinstance(m, nn.Linear):
            return "linear", int(m.in_features)
    return None


def first_weight_channels(named_params) -> tuple[str, int] | None:
    """The same from bare parameters (TorchScript): the first 4-D weight, or a leading 2-D one."""
    for name, p in named_params:
        if name.endswith("weight") and p.ndim == 4:
            return "conv", int(p.shape[1])
        if name.endswith("weight") and p.ndim == 2:
            return "linear", int(p.shape[1])
    return None


def classifier_output(module, shape, device) -> int:
    """Run one forward pass at ``shape``; the class count, or ProbeError if it is not (N, K) logits."""
    import torch

    with torch.no_grad():
        out = module(torch.zeros((2, *shape), device=device))
    if not isinstance(out, torch.Tensor):
        raise ProbeError(f"not a classifier: forward returns {type(out).__name__}, not an (N, classes) logits tensor")
    if out.ndim == 2 and out.shape[0] == 2 and out.shape[1] == 1:
        raise ProbeError("not a classifier the probes can use: forward returns one logit per input (N, 1); "
                         "wrap it to return one logit per class (N, 2)")
    if out.ndim != 2 or out.shape[0] != 2 or out.shape[1] < 2:
        raise ProbeError(f"not a classifier: forward returns shape {tuple(out.shape)} for 2 inputs, not (2, classes)")
    if not out.is_floating_point():
        raise ProbeError(f"not a classifier: forward returns {out.dtype} values, not float logits")
    return int(out.shape[1])


def _runs_at(module, shape, device) -> bool:
    try:
        classifier_output(module, shape, device)
        return True
    except Exception:
        return False


def resolve_input_shape(module, *, explicit=None, hint: tuple[str, int] | None = None, device: str = "cpu",
                        config_shape=None, config_source: str = "config") -> tuple[tuple[int, int, int], str]:
    """``(C, H, W)`` and where it came from.

    Order: the explicit argument; the model's own ``input_shape`` attribute; a
    shape from the model's config; then, knowing the channels (first Conv2d) or
    the flattened size (leading Linear), the one common square size at which the
    network runs — only if exactly one does. Otherwise the examiner must say.
    """
    if explicit is not None:
        return parse_input_shape(explicit), "argument"
    attr = getattr(module, "input_shape", None)
    if attr is not None and _as_shape(attr) is not None:
        return _as_shape(attr), "model attribute"
    if config_shape is not None and _as_shape(config_shape) is not None:
        return _as_shape(config_shape), config_source
    if hint is None:
        hint = first_channels(module)
    candidates: list[tuple[int, int, int]] = []
    if hint is not None and hint[0] == "conv":
        candidates = [(hint[1], s, s) for s in PROBE_SIZES]
    elif hint is not None and hint[0] == "linear":
        n = hint[1]
        for c in (1, 3):
            side = round((n / c) ** 0.5)
            if side > 0 and c * side * side == n:
                candidates.append((c, side, side))
    working = []
    for shape in candidates:
        if _runs_at(module, shape, device):
            working.append(shape)
            if len(working) > 1:
                break
    if len(working) == 1:
        return working[0], "inferred"
    raise ProbeError("cannot tell the model's input size; pass --data NPZ or --input-shape C,H,W")
