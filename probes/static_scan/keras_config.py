"""Keras model configs (v3 ``.keras`` zip ``config.json``, legacy HDF5 ``model_config``, ``keras_metadata.pb``).

A Keras config is JSON that ``load_model`` turns into objects: it imports the
``module`` each object names and, for ``Lambda`` layers and ``__lambda__`` functions,
unmarshals and runs the stored bytecode (CVE-2024-3660). This module walks the JSON
(never imports, never unmarshals) and reports:

* ``keras-lambda``: a Lambda layer or ``__lambda__`` function, with the layer name
  and the names its bytecode refers to (read by :mod:`probes.static_scan.bytecode`);
* ``keras-import``: an object whose ``module`` is outside Keras' own namespaces
  (critical when that module/name is a dangerous callable, as CVE-2025-1550 used);
* ``keras-safe-mode-bypass``: Keras' own functions that undo ``safe_mode`` or touch
  files/the network from a config (``enable_unsafe_deserialization``, ``get_file``…);
* ``keras-external-model``: ``TFSMLayer`` and other layers that load an external
  SavedModel or file at load time.
"""

from __future__ import annotations

import json
import re
from typing import Any

from probes.static_scan import finding
from probes.static_scan.bytecode import (
    DANGEROUS_NAMES,
    MarshalError,
    decode_b64_code,
    decode_b64_source,
    read_code,
    strings_in,
)

KERAS_NAMESPACES = ("keras", "keras_nlp", "keras_hub", "keras_cv", "tf_keras", "tensorflow.keras",
                    "tensorflow.python.keras", "keras_core")
# Keras' own callables a config can name that defeat safe_mode or reach files/the network
KERAS_GADGETS = {
    "enable_unsafe_deserialization": "turns safe_mode off for the rest of the load, so a later Lambda runs "
                                     "(CVE-2025-9906 family)",
    "get_file": "downloads a file / writes to a path chosen by the config (CVE-2025-8747 family)",
    "load_model": "loads another model file from a path chosen by the config",
    "load_weights": "reads a weights file from a path chosen by the config",
    "save_model": "writes a model file to a path chosen by the config",
    "load_img": "reads a file from a path chosen by the config",
    "save_img": "writes a file to a path chosen by the config",
    "deserialize_keras_object": "deserialises a nested object outside the normal layer walk",
    "register_keras_serializable": "registers a class while loading",
    "get_custom_objects": "reaches the global custom-object registry",
    "import_module": "imports an arbitrary module",
}
EXTERNAL_LAYERS = {"TFSMLayer": "filepath", "SavedModelLayer": "filepath", "KerasLayer": "handle"}
_MAX_NODES = 200_000


def in_keras_namespace(module: str) -> bool:
    return any(module == ns or module.startswith(ns + ".") for ns in KERAS_NAMESPACES)


def is_keras_zip(names: list[str]) -> bool:
    """A Keras v3 ``.keras`` archive: ``config.json`` at the root plus ``metadata.json`` or the weights file."""
    s = set(names)
    return "config.json" in s and bool({"metadata.json", "model.weights.h5", "model.weights.npz"} & s)


def scan_json_bytes(sc: Any, loc: Any, data: bytes, what: str) -> None:
    """Parse a Keras config's JSON text and check it; unparseable JSON is inconclusive."""
    try:
        cfg = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        sc.fail(loc, f"{what} is not valid JSON: {str(exc)[:120]}")
        return
    check_model(sc, loc, cfg, what)


MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})


def structure_problem(cfg: Any, depth: int = 0) -> str | None:
    """Why a model config is not shaped as Keras writes it (so parts of it could hide from a walk), or None."""
    if depth > 64:
        return "models nested deeper than 64"
    if not isinstance(cfg, dict):
        return f"model config is a {type(cfg).__name__}, not an object"
    if cfg.get("class_name") not in MODEL_CLASSES:
        return None  # a layer or a subclassed model: its own config shape is its own
    conf = cfg.get("config")
    if not isinstance(conf, dict):
        return f"{cfg['class_name']} config is a {type(conf).__name__}, not an object"
    layers = conf.get("layers")
    if not isinstance(layers, list):
        return f"{cfg['class_name']} config has no layers list"
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            return f"layer {i} is a {type(layer).__name__}, not an object"
        if "config" in layer and not isinstance(layer["config"], dict):
            return f"layer {i} ({layer.get('class_name')!r}) config is a {type(layer['config']).__name__}"
        inner = structure_problem(layer, depth + 1)
        if inner:
            return f"layer {i}: {inner}"
    return None


def check_model(sc: Any, loc: Any, cfg: Any, what: str) -> int:
    """A whole model config: its structure (not as Keras writes it: inconclusive) and every object in it."""
    problem = structure_problem(cfg)
    if problem:
        sc.fail(loc, f"{what}: {problem}")
    return check(sc, loc, cfg, what)


def check(sc: Any, loc: Any, cfg: Any, what: str) -> int:
    """Walk a parsed Keras config; returns the number of findings added."""
    before = len(sc.findings)
    seen = [0]
    done: set[bytes] = set()

    def walk(obj: Any, path: str, depth: int) -> None:
        seen[0] += 1
        if depth > 200 or seen[0] > _MAX_NODES:
            if seen[0] == _MAX_NODES + 1 or depth == 201:
                sc.fail(loc, f"{what}: config too large or deeply nested to check completely")
            return
        if isinstance(obj, dict):
            _check_object(sc, loc, obj, path, what, done)
            for k, v in obj.items():
                walk(v, f"{path.rstrip('/')}/{k}", depth + 1)
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, f"{path.rstrip('/')}/{i}", depth + 1)

    walk(cfg, "/", 0)
    return len(sc.findings) - before


def _layer_name(obj: dict, path: str = "") -> str:
    conf = obj.get("config")
    if isinstance(conf, dict) and isinstance(conf.get("name"), str):
        return conf["name"]
    return str(obj.get("name") or path or "?")


def _code_strings(obj: Any, out: list, depth: int = 0) -> None:
    """Every base64-marshalled code object anywhere under ``obj`` (Keras 2 and 3 layouts alike)."""
    if depth > 30 or len(out) > 20:
        return
    if isinstance(obj, str):
        raw = decode_b64_code(obj)
        if raw is not None:
            out.append(raw)
    elif isinstance(obj, dict):
        for v in obj.values():
            _code_strings(v, out, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _code_strings(v, out, depth + 1)


def _source_strings(obj: Any, out: list, depth: int = 0) -> None:
    """Base64 strings that decode to source text (not marshal) under a Lambda's function field."""
    if depth > 30 or len(out) > 20:
        return
    if isinstance(obj, str):
        src = decode_b64_source(obj)
        if src is not None:
            out.append(src)
    elif isinstance(obj, dict):
        for v in obj.values():
            _source_strings(v, out, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _source_strings(v, out, depth + 1)


def _report_lambda(sc: Any, loc: Any, obj: dict, path: str, what: str, label: str, done: set[bytes]) -> None:
    codes: list[bytes] = []
    _code_strings(obj.get("config"), codes)
    if codes and all(c in done for c in codes):
        return  # already reported with the Lambda layer that holds it
    done.update(codes)
    sources: list[str] = []
    if not codes:
        conf0 = obj.get("config")
        _source_strings(conf0.get("function") if isinstance(conf0, dict) else None, sources)
        _source_strings(conf0.get("code") if isinstance(conf0, dict) else None, sources)
        _source_strings(conf0.get("value") if isinstance(conf0, dict) else None, sources)
    for src in sources:
        key = src.encode()
        if key in done:
            return
        done.add(key)
        names = strings_in(key)
        bad = [n for n in names if n in DANGEROUS_NAMES or (n.startswith("__") and n.endswith("__"))]
        finding.add(sc, loc, "critical" if bad else "high", "keras-lambda",
                    f"{label} {_layer_name(obj, path)!r} in {what} stores a base64-encoded function "
                    f"({len(src)} characters of source text) that Keras decodes and runs at load"
                    + (f"; it refers to {', '.join(bad[:10])}" if bad else "") + f": {src[:160]!r}",
                    where=path, node=obj, name=_layer_name(obj, path),
                    module="Lambda" if label.startswith("Lambda") else "__lambda__", opcode="base64")
    if sources:
        return
    if not codes:
        conf = obj.get("config") if isinstance(obj.get("config"), dict) else {}
        fn = conf.get("function") if isinstance(conf, dict) else None
        if isinstance(fn, dict):
            return  # a serialised function object: the generic walk checks its module/name
        fmod = conf.get("module") if isinstance(conf, dict) else None
        if isinstance(fn, list) and fn and isinstance(fn[0], str):
            fn = fn[0]
        if isinstance(fn, str) and re.search(r"[^\w.]", fn.strip()):  # source text, not a function name
            names = strings_in(fn.encode("utf-8", "replace"))
            bad = [n for n in names if n in DANGEROUS_NAMES or (n.startswith("__") and n.endswith("__"))]
            finding.add(sc, loc, "critical" if bad else "high", "keras-lambda",
                        f"{label} {_layer_name(obj, path)!r} in {what} stores its function as source text"
                        + (f" referring to {', '.join(bad[:10])}" if bad else "") + f": {fn[:160]!r}",
                        where=path, node=obj, name=_layer_name(obj, path),
                        module="Lambda" if label.startswith("Lambda") else "__lambda__", opcode="source")
            return
        if isinstance(fn, str) and isinstance(fmod, str) and not in_keras_namespace(fmod):
            _report_import(sc, loc, fmod, fn, path, what, obj, via=f"{label} function")
            return
        finding.add(sc, loc, "medium", "keras-lambda",
                    f"{label} in {what} with no readable bytecode (function {fn!r}); Keras resolves it by name at load",
                    where=path, node=obj, name=str(fn) if fn else None)
        return
    for raw in codes:
        try:
            info = read_code(raw)
            names = info.all_names()
            consts = info.all_consts()
            how = f"bytecode ({info.layout} layout) refers to"
        except MarshalError:
            names, consts = strings_in(raw), []
            how = "bytecode (layout not recognised; identifier strings) contains"
        bad = [n for n in names if n in DANGEROUS_NAMES or n.startswith("__")]
        sev = "critical" if bad else "high"
        shown = ", ".join(names[:20]) or "no names"
        extra = f"; string constants {', '.join(repr(c[:60]) for c in consts[:6])}" if consts else ""
        finding.add(sc, loc, sev, "keras-lambda",
                    f"{label} {_layer_name(obj, path)!r} in {what} carries marshalled Python bytecode that runs when the "
                    f"model is loaded with safe_mode=False (CVE-2024-3660); {how}: {shown}{extra}",
                    where=path, node=obj, name=_layer_name(obj, path),
                    module="Lambda" if label.startswith("Lambda") else "__lambda__",
                    opcode="marshal")


def _report_import(sc: Any, loc: Any, module: str, name: str, path: str, what: str, obj: dict, via: str) -> None:
    from probes.static_scan import policy

    reason = policy.is_critical(module, name) or policy.is_critical(module, "") or (
        "Python builtins (eval, exec, __import__, getattr...)" if module.split(".")[0] in policy.BUILTIN_MODULES
        else None)
    if reason:
        finding.add(sc, loc, "critical", "keras-import",
                    f"{via} in {what} imports {module}.{name} ({reason}); Keras imports the named module while "
                    "loading (CVE-2025-1550 family)", module=module, name=name, where=path, node=obj)
    else:
        finding.add(sc, loc, "medium", "keras-import",
                    f"{via} in {what} names {module}.{name}, outside Keras' own namespaces: loading imports "
                    "third-party code (review that the package is trusted)", module=module, name=name,
                    where=path, node=obj)


def _check_object(sc: Any, loc: Any, obj: dict, path: str, what: str, done: set[bytes]) -> None:
    cls = obj.get("class_name")
    if not isinstance(cls, str):
        return
    module = obj.get("module")
    conf = obj.get("config")
    if cls == "Lambda":
        _report_lambda(sc, loc, obj, path, what, "Lambda layer", done)
    elif cls == "__lambda__":
        _report_lambda(sc, loc, obj, path, what, "__lambda__ function", done)
    target = conf if cls == "function" and isinstance(conf, str) else cls
    if isinstance(module, str) and module and not in_keras_namespace(module) and cls != "Lambda":
        if module in ("builtins", "__builtin__") and cls.startswith("__") and target == cls:
            pass  # Keras' own markers (__tuple__, __bytes__...) use no module import
        else:
            _report_import(sc, loc, module, target, path, what, obj, via=f"object {cls!r}")
    elif isinstance(module, str) and in_keras_namespace(module) and target in KERAS_GADGETS:
        finding.add(sc, loc, "high", "keras-safe-mode-bypass",
                    f"{what} calls Keras' own {module}.{target}: {KERAS_GADGETS[target]}",
                    module=module, name=target, where=path, node=obj)
    elif not module and target in KERAS_GADGETS and cls == "function":
        finding.add(sc, loc, "high", "keras-safe-mode-bypass",
                    f"{what} names the function {target!r}: {KERAS_GADGETS[target]}", name=target, where=path, node=obj)
    if isinstance(conf, dict):
        for key in ("fn_module", "function_module"):
            fm = conf.get(key)
            if isinstance(fm, str) and fm and not in_keras_namespace(fm):
                fname = str(conf["function"]) if isinstance(conf.get("function"), str) else ""
                _report_import(sc, loc, fm, fname, f"{path}/config/{key}", what, obj, via=f"{key} of {cls!r}")
    reg = obj.get("registered_name")
    if isinstance(reg, str) and (">" in reg or "." in reg) and not module and reg != cls:
        pkg = reg.split(">", 1)[0] if ">" in reg else reg.rsplit(".", 1)[0]
        if not in_keras_namespace(pkg):
            finding.add(sc, loc, "medium", "keras-import",
                        f"{what} uses the custom registered object {reg!r}: it loads only if that package's code "
                        "is imported (review it)", name=reg, where=path, node=obj)
    if cls in EXTERNAL_LAYERS:
        key = EXTERNAL_LAYERS[cls]
        target_path = conf.get(key) if isinstance(conf, dict) else None
        finding.add(sc, loc, "high", "keras-external-model",
                    f"{cls} {_layer_name(obj, path)!r} in {what} loads the external model {target_path!r} at load time; "
                    "its graph is not part of this file and is not covered by safe_mode", name=cls, where=path,
                    node=obj)
