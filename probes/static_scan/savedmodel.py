"""TensorFlow SavedModel (``saved_model.pb``), frozen GraphDef (``.pb``) and ``keras_metadata.pb``, without TensorFlow.

The protobufs are read with :mod:`probes.static_scan.protowire` and a minimal schema
(field numbers from TensorFlow's ``saved_model.proto``, ``meta_graph.proto``,
``graph.proto``, ``function.proto``, ``node_def.proto``, ``attr_value.proto``,
``tensor.proto`` and ``saved_metadata.proto``). Every node of the graph and of every
function in the function library is listed; ops that run Python, read or write files
are reported with the node's name, op and constant inputs, and checkpoint save/restore
ops are reported when their path is a constant outside the model folder. Keras layer
metadata (``keras_metadata.pb``, SavedUserObject metadata) is checked as a Keras config.
"""

from __future__ import annotations

import json
import re
from typing import Any

from probes.static_scan import finding, keras_config
from probes.static_scan import protowire as pw

NATIVE_OPS = {
    "LoadLibrary": "loads a native shared library (arbitrary machine code) into the loading process",
    "LoadLibraryV2": "loads a native shared library (arbitrary machine code) into the loading process",
}
DESERIALIZE_OPS = frozenset({"ParseTensor", "DeserializeSparse", "DeserializeManySparse", "DecodeProtoV2",
                             "DeserializeIterator", "DatasetFromGraph"})
_CODE_STRING = re.compile(r"(\bos\.(system|popen|exec\w*|spawn\w*)|\bsubprocess\.|__import__|\beval\s*\(|\bexec\s*\("
                          r"|\bpickle\.loads|\bmarshal\.loads|/bin/(ba)?sh\b|\bcurl\s+http|\bwget\s+http)")
PYTHON_OPS = {
    "PyFunc": "runs a Python function of the loading process (tf.py_function / tf.numpy_function)",
    "PyFuncStateless": "runs a Python function of the loading process (tf.numpy_function, stateless)",
    "EagerPyFunc": "runs a Python function of the loading process (tf.py_function)",
}
FILE_READ_OPS = frozenset({
    "ReadFile", "MatchingFiles", "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2",
    "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2",
    "TextLineDataset", "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "LoadDataset", "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
    "ImmutableConst", "LMDBReader", "LMDBDataset", "SqlDataset", "ExperimentalSqlDataset", "CSVDataset",
    "ExperimentalCSVDataset", "CSVDatasetV2", "DecodeProtoV2", "LoadAndRemapMatrix", "SnapshotDataset",
    "SnapshotDatasetV2", "FileSystemSetConfiguration", "ReadVariableOp_file",
})
FILE_WRITE_OPS = frozenset({
    "WriteFile", "SaveDataset", "SaveDatasetV2", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord",
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary", "WriteAudioSummary",
    "WriteImageSummary", "WriteHistogramSummary", "WriteRawProtoSummary", "WriteGraphSummary", "ImportEvent",
    "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
    "DebugNumericSummaryV2",
})
NETWORK_OPS = frozenset({"GcsConfigureCredentials", "GcsConfigureBlockCache", "BigQueryReader",
                         "BigQueryTableReader", "ExperimentalAutoShardDataset_remote"})
CHECKPOINT_OPS = {"SaveV2": (0,), "RestoreV2": (0,), "Save": (0,), "Restore": (0,), "SaveSlices": (0,),
                  "RestoreSlice": (0,), "MergeV2Checkpoints": (0, 1), "ShardedFilename": (0,)}
FILE_ARG = {"ReadFile": (0,), "WriteFile": (0,), "MatchingFiles": (0,), "ImmutableConst": ()}
_MAX_NODES = 500_000


def sniff(head: bytes, name: str) -> str | None:
    """``tf-savedmodel`` / ``tf-graphdef`` / ``keras-metadata`` for protobufs of those kinds, else None."""
    if name == "keras_metadata.pb":
        return "keras-metadata"
    if name == "saved_model.pb" or head[:3] in (b"\x08\x01\x12", b"\x08\x02\x12"):
        return "tf-savedmodel"
    if name.endswith(".pb") or _graphdef_head(head):
        return "tf-graphdef"
    return None


def _graphdef_head(head: bytes) -> bool:
    """A GraphDef starts with a NodeDef (field 1) whose first fields are name (1) and op (2)."""
    try:
        msgs = list(_head_fields(head, 0, len(head), 2))
        if not msgs or msgs[0][0] != 1 or msgs[0][1] != pw.LEN:
            return False
        a, b = msgs[0][2]
        inner = list(_head_fields(head, a, min(b, len(head)), 2))
        return len(inner) == 2 and inner[0][0] == 1 and inner[1][0] == 2 and inner[1][1] == pw.LEN
    except pw.WireError:
        return False


def _head_fields(buf, a: int, b: int, n: int):
    pos = a
    while pos < b and n > 0:
        key, pos = pw.varint(buf, pos, b)
        num, wt = key >> 3, key & 7
        if wt == pw.LEN:
            ln, pos = pw.varint(buf, pos, b)
            yield num, wt, (pos, pos + ln)
            pos += ln
        elif wt == pw.VARINT:
            v, pos = pw.varint(buf, pos, b)
            yield num, wt, v
        else:
            return
        n -= 1


def _outside(p: str) -> bool:
    q = p.replace("\\", "/")
    if q.startswith(("file://", "gs://", "s3://", "hdfs://", "http://", "https://", "ram://")):
        return True
    return q.startswith("/") or bool(re.match(r"^[A-Za-z]:", q)) or ".." in q.split("/") or q.startswith("~")


class _Graph:
    """One scope of nodes (the main graph or one library function)."""

    def __init__(self, sc: Any, loc: Any, buf, scope: str):
        self.sc, self.loc, self.buf, self.scope = sc, loc, buf, scope
        self.nodes: list[dict] = []
        self.consts: dict[str, list[str]] = {}

    def add_node(self, span: tuple[int, int]) -> None:
        m = pw.message(self.buf, span)
        name = pw.text(self.buf, pw.first(m, 1, (0, 0)))
        op = pw.text(self.buf, pw.first(m, 2, (0, 0)))
        inputs = [pw.text(self.buf, s) for s in m.get(3, [])]
        attrs: dict[str, Any] = {}
        for entry in m.get(5, []):
            e = pw.message(self.buf, entry)
            key = pw.text(self.buf, pw.first(e, 1, (0, 0)))
            val = pw.first(e, 2)
            attrs[key] = _attr_value(self.buf, val) if isinstance(val, tuple) else None
        node = {"name": name, "op": op, "input": inputs, "attr": attrs, "offset": span[0]}
        self.nodes.append(node)
        if op == "Const" and isinstance(attrs.get("value"), dict):
            strs = attrs["value"].get("strings")
            if strs:
                self.consts[name] = strs

    def const_of(self, inp: str) -> list[str] | None:
        base = inp.lstrip("^").split(":", 1)[0]
        return self.consts.get(base)

    def check(self) -> None:
        for n in self.nodes:
            op = n["op"]
            args = {i: self.const_of(x) for i, x in enumerate(n["input"])}
            const_in = {n["input"][i]: v for i, v in args.items() if v}
            node = {k: v for k, v in n.items() if k != "offset"}
            if const_in:
                node["constant inputs"] = const_in
            where = f"{self.scope}/node {n['name']!r}"
            off = n["offset"] - self.loc.base
            paths = [s for v in const_in.values() for s in v]
            strs = [v for v in n["attr"].values() if isinstance(v, str)]
            for v in n["attr"].values():
                if isinstance(v, dict):
                    strs += [x for x in v.get("strings", []) if isinstance(x, str)]
                elif isinstance(v, list):
                    strs += [x for x in v if isinstance(x, str)]
            code_like = [v for v in strs + paths if _CODE_STRING.search(v)]
            if op in PYTHON_OPS:
                token = n["attr"].get("token")
                refs = [v for v in strs if re.fullmatch(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", v)]
                finding.add(self.sc, self.loc, "critical", "tf-python-op",
                            f"{op} node {n['name']!r} ({where}) {PYTHON_OPS[op]}"
                            + (f"; token {token!r}" if token else "")
                            + (f"; references {', '.join(refs[:4])}" if refs else ""), offset=off, opcode=op,
                            module=op, name=n["name"], where=where, node=node)
            elif op in NATIVE_OPS:
                finding.add(self.sc, self.loc, "critical", "tf-native-op",
                            f"{op} node {n['name']!r} ({where}) {NATIVE_OPS[op]}"
                            + (f"; constant path(s) {paths[:4]!r}" if paths else ""), offset=off, opcode=op,
                            module=op, name=n["name"], where=where, node=node)
            elif op in DESERIALIZE_OPS:
                finding.add(self.sc, self.loc, "medium", "tf-file-op",
                            f"{op} node {n['name']!r} ({where}) deserialises data embedded in or fed to the graph",
                            offset=off, opcode=op, module=op, name=n["name"], where=where, node=node)
            elif op in FILE_READ_OPS or op in FILE_WRITE_OPS or op in NETWORK_OPS:
                kind = ("reads files" if op in FILE_READ_OPS else "writes files" if op in FILE_WRITE_OPS
                        else "reaches the network")
                shown = f"; constant path(s) {paths[:4]!r}" if paths else ""
                finding.add(self.sc, self.loc, "high", "tf-file-op",
                            f"{op} node {n['name']!r} ({where}) {kind} when the graph runs{shown}",
                            offset=off, opcode=op, module=op, name=n["name"], where=where, node=node)
            elif op == "PrintV2" and str(n["attr"].get("output_stream", "")).startswith("file://"):
                finding.add(self.sc, self.loc, "high", "tf-file-op",
                            f"PrintV2 node {n['name']!r} ({where}) writes to {n['attr']['output_stream']!r}",
                            offset=off, opcode=op, module=op, name=n["name"], where=where, node=node)
            if code_like and op not in PYTHON_OPS:
                finding.add(self.sc, self.loc, "high", "tf-string-payload",
                            f"node {n['name']!r} ({where}) carries a string that looks like a shell/Python payload: "
                            f"{code_like[0][:120]!r}", offset=off, opcode=op, module=op, name=n["name"], where=where,
                            node=node)
            if op in CHECKPOINT_OPS:
                bad = [s for i in CHECKPOINT_OPS[op] for s in (args.get(i) or []) if _outside(s)]
                if bad:
                    finding.add(self.sc, self.loc, "high", "tf-path-outside",
                                f"{op} node {n['name']!r} ({where}) saves/restores at {bad[:3]!r}, outside the model "
                                "folder", offset=off, opcode=op, module=op, name=n["name"], where=where, node=node)


def _attr_value(buf, span: tuple[int, int]) -> Any:
    """The readable part of an AttrValue: s, i, b, type, a tensor's strings, list of strings, func name."""
    m = pw.message(buf, span)
    if 2 in m:
        return pw.raw(buf, m[2][0]).decode("utf-8", "replace")
    if 3 in m:
        return pw.signed(m[3][0])
    if 5 in m:
        return bool(m[5][0])
    if 8 in m:
        t = pw.message(buf, m[8][0])
        strs = [pw.raw(buf, s).decode("utf-8", "replace") for s in t.get(8, [])[:64]]
        return {"tensor": True, "strings": strs}
    if 1 in m:
        lst = pw.message(buf, m[1][0])
        return [pw.raw(buf, s).decode("utf-8", "replace") for s in lst.get(2, [])[:64]]
    if 10 in m:
        fn = pw.message(buf, m[10][0])
        return {"func": pw.text(buf, pw.first(fn, 1, (0, 0)))}
    return None


def scan_graphdef(sc: Any, loc: Any, buf, span: tuple[int, int], scope: str = "graph") -> int:
    """All nodes of a GraphDef and of its function library; returns the node count."""
    g = pw.message(buf, span)
    graphs = []
    main = _Graph(sc, loc, buf, scope)
    for s in g.get(1, []):
        main.add_node(s)
    graphs.append(main)
    total = len(main.nodes)
    for lib in g.get(2, []):
        lm = pw.message(buf, lib)
        for fspan in lm.get(1, []):
            fm = pw.message(buf, fspan)
            sig = pw.first(fm, 1)
            fname = pw.text(buf, pw.first(pw.message(buf, sig), 1, (0, 0))) if sig else "?"
            fg = _Graph(sc, loc, buf, f"{scope}/function {fname!r}")
            for s in fm.get(3, []):
                fg.add_node(s)
                total += 1
                if total > _MAX_NODES:
                    raise pw.WireError(f"more than {_MAX_NODES} graph nodes")
            graphs.append(fg)
    for gr in graphs:
        gr.check()
    return total


def scan_saved_model(sc: Any, loc: Any, buf, start: int, end: int) -> None:
    finding.set_format(sc, loc, "tf-savedmodel")
    try:
        top = pw.message(buf, (start, end))
        if set(top) - {1, 2} or not top.get(2):
            raise pw.WireError("not a SavedModel message (expected schema version and meta graphs)")
        for i, mg_span in enumerate(top[2]):
            mg = pw.message(buf, mg_span)
            for gd in mg.get(2, []):
                scan_graphdef(sc, loc, buf, gd, f"meta_graph[{i}]/graph")
            for asset in mg.get(6, []):
                am = pw.message(buf, asset)
                fname = pw.text(buf, pw.first(am, 2, (0, 0)))
                if _outside(fname):
                    finding.add(sc, loc, "high", "tf-path-outside",
                                f"asset file {fname!r} of meta_graph[{i}] is outside the model folder",
                                offset=asset[0] - loc.base, where=f"meta_graph[{i}]/asset {fname!r}",
                                node={"asset_file": fname})
            for og in mg.get(7, []):
                _object_graph(sc, loc, buf, og, i)
    except (pw.WireError, IndexError) as exc:
        sc.fail(loc, f"malformed SavedModel protobuf: {exc}")


def _object_graph(sc: Any, loc: Any, buf, span, i: int) -> None:
    om = pw.message(buf, span)
    for k, node_span in enumerate(om.get(1, [])):
        nm = pw.message(buf, node_span)
        for uo in nm.get(4, []):  # SavedUserObject: identifier (1), metadata (3, Keras JSON)
            um = pw.message(buf, uo)
            meta = pw.first(um, 3)
            if meta:
                _metadata_json(sc, loc, buf, meta, f"meta_graph[{i}]/object_graph node {k}")


def _metadata_json(sc: Any, loc: Any, buf, span, what: str) -> None:
    data = pw.raw(buf, span)
    if not data.strip():
        return
    try:
        cfg = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        sc.fail(loc, f"{what}: Keras metadata is not valid JSON")
        return
    keras_config.check(sc, loc, cfg, f"Keras metadata ({what})")


def scan_keras_metadata(sc: Any, loc: Any, buf, start: int, end: int) -> None:
    finding.set_format(sc, loc, "keras-metadata")
    try:
        top = pw.message(buf, (start, end))
        for k, node_span in enumerate(top.get(1, [])):
            nm = pw.message(buf, node_span)
            path = pw.text(buf, pw.first(nm, 2, (0, 0)))
            meta = pw.first(nm, 4)
            if meta:
                _metadata_json(sc, loc, buf, meta, f"keras_metadata node {k} {path!r}")
    except (pw.WireError, IndexError) as exc:
        sc.fail(loc, f"malformed keras_metadata.pb: {exc}")


def scan_frozen_graph(sc: Any, loc: Any, buf, start: int, end: int) -> None:
    finding.set_format(sc, loc, "tf-graphdef")
    try:
        top = pw.message(buf, (start, end))
        if set(top) - {1, 2, 3, 4, 5} or not top.get(1):
            raise pw.WireError("not a GraphDef message (no nodes)")
        scan_graphdef(sc, loc, buf, (start, end))
    except (pw.WireError, IndexError) as exc:
        sc.fail(loc, f"malformed GraphDef protobuf: {exc}")


def scan(sc: Any, loc: Any, buf, start: int, end: int, kind: str) -> None:
    """Entry point by sniffed kind."""
    if kind == "keras-metadata":
        scan_keras_metadata(sc, loc, buf, start, end)
    elif kind == "tf-savedmodel":
        scan_saved_model(sc, loc, buf, start, end)
    else:
        scan_frozen_graph(sc, loc, buf, start, end)
