"""ONNX models, read as protobuf with :mod:`probes.static_scan.protowire` (tensor data skipped, external data never opened).

Field numbers are ONNX's ``onnx.proto`` (ModelProto, GraphProto, NodeProto,
AttributeProto, TensorProto, FunctionProto). Reported: operators from custom
domains (a loader needs a native custom-op library for them: code outside the
model), external-data locations outside the model's folder (absolute, ``..``,
URLs), and tensors whose declared size is implausible or disagrees with their
stored bytes. Subgraphs (If/Loop/Scan attributes), model-local functions and
training graphs are walked too.
"""

from __future__ import annotations

import re
from typing import Any

from probes.static_scan import finding
from probes.static_scan import protowire as pw

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training",
                              "com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental",
                              "com.ms.internal.nhwc"})
PYTHON_OPS = frozenset({"PyOp", "PythonOp", "PyFunc", "PythonFunction", "PyTorchOp"})
_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 8: 0, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64,
         15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2, 27: 6, 28: 6}
OVERSIZED_BYTES = 1 << 38  # 256 GiB: no real single tensor is declared that large
_ONNX_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}


def sniff(head: bytes, name: str) -> bool:
    """ModelProto starts with ir_version (field 1) and then producer/graph/opset fields; or a ``.onnx`` name."""
    if len(head) >= 3 and head[0] == 0x08 and 3 <= head[1] <= 30 and head[2] in _ONNX_TAGS:
        return True
    return name.endswith(".onnx")


def _outside(p: str) -> bool:
    q = p.replace("\\", "/")
    return (q.startswith("/") or bool(re.match(r"^[A-Za-z]:", q)) or ".." in q.split("/") or "://" in q
            or q.startswith("~"))


class _Walker:
    def __init__(self, sc: Any, loc: Any, buf):
        self.sc, self.loc, self.buf = sc, loc, buf
        self.local_funcs: set[tuple[str, str]] = set()
        self.custom_seen: set[tuple[str, str]] = set()
        self.nodes = 0
        self.tensors = 0

    def tensor(self, span: tuple[int, int], where: str) -> None:
        buf = self.buf
        self.tensors += 1
        t = pw.message(buf, span)
        name = pw.text(buf, pw.first(t, 8, (0, 0)))
        dims = [pw.signed(d) for d in pw.ints(buf, t.get(1, []))]
        dtype = pw.first(t, 2, 0)
        off = span[0] - self.loc.base
        node = {"tensor": name, "dims": dims, "data_type": dtype}
        if any(d < 0 for d in dims):
            finding.add(self.sc, self.loc, "medium", "onnx-tensor-size", f"tensor {name!r} ({where}) has negative "
                        f"dimensions {dims}", offset=off, name=name, where=where, node=node)
            return
        n = 1
        for d in dims:
            n *= d
        declared = n * _BITS.get(dtype, 8) // 8
        ext = {pw.text(buf, pw.first(e, 1, (0, 0))): pw.text(buf, pw.first(e, 2, (0, 0)))
               for e in (pw.message(buf, s) for s in t.get(13, []))}
        if ext or pw.first(t, 14, 0) == 1:
            node["external_data"] = ext
            location = ext.get("location", "")
            if not location:
                finding.add(self.sc, self.loc, "medium", "onnx-external-data",
                            f"tensor {name!r} ({where}) is marked external but names no location", offset=off,
                            name=name, where=where, node=node)
            elif _outside(location):
                finding.add(self.sc, self.loc, "high", "onnx-external-data",
                            f"tensor {name!r} ({where}) loads its data from {location!r}, outside the model's folder "
                            "(a loader reads whatever file that names)", offset=off, name=name, where=where, node=node)
            length = ext.get("length")
            if length and length.isdigit() and declared and int(length) != declared and _BITS.get(dtype):
                finding.add(self.sc, self.loc, "low", "onnx-tensor-size",
                            f"tensor {name!r} ({where}) declares {declared} bytes but its external length is {length}",
                            offset=off, name=name, where=where, node=node)
        if declared > OVERSIZED_BYTES:
            finding.add(self.sc, self.loc, "medium", "onnx-tensor-size",
                        f"tensor {name!r} ({where}) declares {declared} bytes (dims {dims}): a loader allocating it "
                        "exhausts memory", offset=off, name=name, where=where, node=node)
        raw = pw.first(t, 9)
        if isinstance(raw, tuple) and _BITS.get(dtype) and raw[1] - raw[0] != declared:
            finding.add(self.sc, self.loc, "medium", "onnx-tensor-size",
                        f"tensor {name!r} ({where}) holds {raw[1] - raw[0]} bytes of raw data but its dims {dims} "
                        f"declare {declared}", offset=off, name=name, where=where, node=node)

    def graph(self, span: tuple[int, int], where: str, depth: int = 0) -> None:
        if depth > 32:
            raise pw.WireError("subgraphs nested deeper than 32")
        g = pw.message(self.buf, span)
        gname = pw.text(self.buf, pw.first(g, 2, (0, 0)))
        gw = f"{where} {gname!r}" if gname else where
        for s in g.get(5, []):
            self.tensor(s, f"{gw} initializer")
        for s in g.get(15, []):
            sp = pw.message(self.buf, s)
            for v in sp.get(1, []):
                self.tensor(v, f"{gw} sparse initializer")
        for s in g.get(1, []):
            self.node(s, gw, depth)

    def node(self, span: tuple[int, int], where: str, depth: int) -> None:
        buf = self.buf
        self.nodes += 1
        m = pw.message(buf, span)
        name = pw.text(buf, pw.first(m, 3, (0, 0)))
        op = pw.text(buf, pw.first(m, 4, (0, 0)))
        domain = pw.text(buf, pw.first(m, 7, (0, 0)))
        nw = f"{where}/node {name or op!r}"
        if op in PYTHON_OPS:
            finding.add(self.sc, self.loc, "high", "onnx-custom-op",
                        f"operator {domain or 'ai.onnx'}::{op} (node {name!r}, {where}) runs Python code registered "
                        "by the runtime (onnxruntime-extensions PyOp style)", offset=span[0] - self.loc.base,
                        module=domain or "ai.onnx", name=op, opcode=op, where=nw, node={"node": name, "op_type": op})
        if domain not in STANDARD_DOMAINS and (domain, op) not in self.local_funcs:
            key = (domain, op)
            if key not in self.custom_seen:
                self.custom_seen.add(key)
                finding.add(self.sc, self.loc, "medium", "onnx-custom-op",
                            f"operator {domain}::{op} (node {name!r}, {where}) is from a custom domain: running the "
                            "model needs a native custom-op library, code that is not in this file",
                            offset=span[0] - self.loc.base, module=domain, name=op, opcode=op, where=nw,
                            node={"node": name, "op_type": op, "domain": domain,
                                  "input": [pw.text(buf, s) for s in m.get(1, [])][:16],
                                  "output": [pw.text(buf, s) for s in m.get(2, [])][:16]})
        for a in m.get(5, []):
            am = pw.message(buf, a)
            aname = pw.text(buf, pw.first(am, 1, (0, 0)))
            for t in am.get(5, []) + am.get(10, []):
                self.tensor(t, f"{nw} attribute {aname}")
            for g in am.get(6, []) + am.get(11, []):
                self.graph(g, f"{nw} attribute {aname}", depth + 1)
            for st in am.get(22, []) + am.get(23, []):
                for v in pw.message(buf, st).get(1, []):
                    self.tensor(v, f"{nw} attribute {aname}")


def scan(sc: Any, loc: Any, buf, start: int, end: int) -> None:
    finding.set_format(sc, loc, "onnx")
    try:
        top = pw.message(buf, (start, end))
        if not top.get(7) and not top.get(25):
            raise pw.WireError("no graph (field 7) and no functions: not an ONNX ModelProto")
        if set(top) - {1, 2, 3, 4, 5, 6, 7, 8, 14, 20, 25, 26}:
            raise pw.WireError(f"unknown top-level fields {sorted(set(top) - {1, 2, 3, 4, 5, 6, 7, 8, 14, 20, 25, 26})}")
        w = _Walker(sc, loc, buf)
        funcs = []
        for f in top.get(25, []):
            fm = pw.message(buf, f)
            w.local_funcs.add((pw.text(buf, pw.first(fm, 10, (0, 0))), pw.text(buf, pw.first(fm, 1, (0, 0)))))
            funcs.append(fm)
        for g in top.get(7, []):
            w.graph(g, "graph")
        for fm in funcs:
            fname = pw.text(buf, pw.first(fm, 1, (0, 0)))
            for n in fm.get(7, []):
                w.node(n, f"function {fname!r}", 0)
        for ti in top.get(20, []):  # TrainingInfoProto: initialization (1) and algorithm (2) graphs
            tm = pw.message(buf, ti)
            for g in tm.get(1, []) + tm.get(2, []):
                w.graph(g, "training graph")
    except (pw.WireError, IndexError) as exc:
        sc.fail(loc, f"malformed ONNX protobuf: {exc}")
