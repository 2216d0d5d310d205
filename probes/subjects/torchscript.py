"""TorchScript subjects: penultimate features by graph surgery, since ScriptModules refuse hooks.

The module's inlined graph is copied, the input of the final classifier op
(the last ``aten::linear``, else ``aten::addmm`` / ``aten::matmul``) is added
as an extra output, and the copy is compiled into a function that is called
with the module's underlying C++ object (``module._c``). The original module
is untouched and its logits are bit-identical to the function's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from probes.errors import ProbeError

HEAD_OPS = ("aten::linear", "aten::addmm", "aten::matmul", "aten::mm")


def _attr_path(value) -> list[str]:
    """``["classifier", "1"]`` for a weight fetched by ``self.classifier.1.weight`` GetAttr chains."""
    names: list[str] = []
    node = value.node()
    while node.kind() == "prim::GetAttr":
        names.append(node.s("name"))
        node = node.input().node()
    return list(reversed(names))


def _head_node(graph):
    """The last classifier-like op of the graph (top-level block) and which input is the feature."""
    nodes = list(graph.nodes())
    for kind in HEAD_OPS:
        found = [n for n in nodes if n.kind() == kind]
        if not found:
            continue
        node = found[-1]
        # aten::linear(input, weight, bias); aten::addmm(bias, input, weight_t); matmul/mm(input, weight_t)
        idx = 1 if kind == "aten::addmm" else 0
        return node, idx
    return None, None


def feature_layer_name(head, kind: str) -> str:
    """``input:NAME`` with NAME the submodule owning the head's weight, as ``named_modules`` spells it."""
    weight_pos = {"aten::linear": 1, "aten::addmm": 2}.get(kind, 1)
    try:
        path = _attr_path(head.inputsAt(weight_pos))
    except Exception:
        path = []
    if len(path) >= 2:
        return "input:" + ".".join(path[:-1])
    return f"input:{kind}"


def build_feature_fn(module) -> tuple[Callable[[Any], tuple[Any, Any]], str]:
    """``(feature_fn, layer_name)``: ``feature_fn(x) -> (features, logits)`` for a ScriptModule."""
    import torch

    try:
        graph = module.inlined_graph.copy()
    except Exception as exc:
        raise ProbeError(f"TorchScript graph cannot be copied for feature extraction: {exc}") from None
    head, idx = _head_node(graph)
    if head is None:
        raise ProbeError("TorchScript model has no linear classifier op; its penultimate layer cannot be found")
    feature = head.inputsAt(idx)
    name = feature_layer_name(head, head.kind())
    if len(list(graph.outputs())) != 1:
        raise ProbeError("TorchScript model's forward returns several values; not a classifier")
    graph.registerOutput(feature)
    graph.makeMultiOutputIntoTuple()
    graph.lint()
    fn = torch._C._create_function_from_graph("workbench_penultimate", graph)
    owner = module._c

    def feature_fn(x):
        logits, feats = fn(owner, x)
        return feats, logits

    return feature_fn, name


def load_torchscript(path, device: str):
    """``torch.jit.load`` onto ``device`` (the caller has scanned and checked the archive)."""
    import torch

    try:
        module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        raise ProbeError(f"{path}: TorchScript archive could not be loaded: {type(exc).__name__}: {text}") from None
    module.eval()
    return module
