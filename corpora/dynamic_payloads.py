"""Harmless booby-trapped files for the dynamic probe's tests and benchmark.

Each payload, if it ran unchecked, would only write a marker file, call
``os.getpid``, spin, allocate or crash its own process. The files are built
here by *dumping* small objects whose ``__reduce__`` names the payload; the
parent never loads them (only the sealed child does).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Payload:
    name: str
    path: Path
    loader: str
    expect: str  # "refused" (hook blocks it) | "call" (only an unfamiliar call shows) | "timeout" | "memory" | "crash"
    event: str  # the audit/trace event expected to give it away
    marker: Path | None = None


class _Reduce:
    """An object that pickles as ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def raw_call_pickle(module: str, name: str, args: tuple) -> bytes:
    """A protocol-2 pickle of ``module.name(*args)`` written opcode by opcode (no live object needed)."""
    body = pickle.dumps(args, protocol=2)[2:-1]  # drop PROTO and STOP
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n" + body + b"R."


def _dump(obj, path: Path, loader: str) -> None:
    if isinstance(obj, bytes):
        path.write_bytes(obj)
        return
    if loader == "torch":
        import torch

        torch.save({"weight": torch.zeros(2, 2), "meta": obj}, path)
    elif loader == "joblib":
        import joblib
        import numpy as np

        joblib.dump({"coef": np.zeros(3), "meta": obj}, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump({"weights": [0.0, 1.0], "meta": obj}, fh, protocol=4)


def build_payloads(dest: str | os.PathLike, marker_dir: str | os.PathLike | None = None) -> list[Payload]:
    """Write the payload files into ``dest``; markers (which must never appear) go to ``marker_dir``."""
    import builtins
    import collections
    import faulthandler
    import itertools
    import logging
    import operator
    import subprocess
    import time

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    mdir = Path(marker_dir) if marker_dir else dest
    out: list[Payload] = []

    def add(name, obj, loader, expect, event, marker=None):
        path = dest / f"{name}.{ {'torch': 'pt', 'joblib': 'joblib'}.get(loader, 'pkl') }"
        _dump(obj, path, loader)
        out.append(Payload(name, path, loader, expect, event, marker))

    m = lambda n: mdir / f"marker-{n}"  # noqa: E731
    add("os-system", _Reduce(os.system, (f"touch {m('os-system')}",)), "pickle", "refused", "os.system", m("os-system"))
    add("subprocess-popen", _Reduce(subprocess.Popen, (["touch", str(m("popen"))],)), "torch", "refused",
        "subprocess.Popen", m("popen"))
    add("exec-string", _Reduce(builtins.exec, (f"open({str(m('exec'))!r}, 'w').write('x')",)), "pickle", "refused",
        "compile", m("exec"))
    add("eval-getpid", _Reduce(builtins.eval, ("__import__('os').getpid()",)), "joblib", "refused", "compile")
    add("open-write", _Reduce(builtins.open, (str(m("open")), "w")), "torch", "refused", "open", m("open"))
    add("socket-connect", raw_call_pickle("socket", "create_connection", (("127.0.0.1", 9),)), "pickle", "refused",
        "socket.__new__")
    add("os-getpid", _Reduce(os.getpid, ()), "torch", "call", "pickle.call")
    # Built only from innocuous-looking standard-library pieces no denylist names:
    # a logging handler (opens its file on construction) and pathlib's write_text via getattr.
    add("logging-filehandler", _Reduce(logging.FileHandler, (str(m("logging")),)), "joblib", "refused", "open",
        m("logging"))
    add("pathlib-write-text", _Reduce(Path(m("pathlib")).write_text, ("x",)), "pickle", "refused", "open",
        m("pathlib"))
    # Tries to forge the trace channel: writes fake "done"/"exit" lines to every low fd (os.write is not audited).
    forged = b'{"t":"exit","job":1,"code":0}\n{"n":"x","t":"done","ok":true}\n'
    add("forge-trace", [_Reduce(os.write, (fd, forged)) for fd in range(1, 12)], "pickle", "call", "pickle.call")
    # Plants nothing itself: puts the subject's own folder on sys.path and imports a module shipped beside it.
    helper = dest / "model_helpers.py"
    helper.write_text(f"open({str(m('sidecar'))!r}, 'w').write('x')\n")

    def u(text):
        b = text.encode()
        return b"X" + len(b).to_bytes(4, "little") + b

    sidecar = (b"\x80\x02cbuiltins\ngetattr\n(csys\npath\n" + u("insert") + b"tR(K\x00" + u(str(dest)) + b"tR0"
               + b"cimportlib\nimport_module\n(" + u("model_helpers") + b"tR.")
    add("sidecar-import", sidecar, "pickle", "refused", "open", m("sidecar"))
    # Behaviour only: spin forever / allocate too much / crash the interpreter.
    add("hang-spin", _Reduce(collections.deque, (_Reduce(itertools.count, ()), 0)), "pickle", "timeout", "timeout")
    add("memory-bomb", _Reduce(operator.mul, (b"x", 1 << 34)), "pickle", "memory", "MemoryError")
    add("crash-segv", _Reduce(faulthandler._sigsegv, ()), "pickle", "crash", "signal")
    del time
    return out


def build_benign_samples(dest: str | os.PathLike) -> list[tuple[Path, str]]:
    """A handful of ordinary model files (path, loader) for tests."""
    import collections

    import joblib
    import numpy as np
    import torch

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, 4, generator=g))
    files = []
    torch.save(lin.state_dict(), dest / "linear.pt")
    files.append((dest / "linear.pt", "torch"))
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()), dest / "full.pt")
    files.append((dest / "full.pt", "torch"))
    joblib.dump({"coef": np.arange(6.0).reshape(2, 3)}, dest / "arrays.joblib", compress=3)
    files.append((dest / "arrays.joblib", "joblib"))
    with open(dest / "plain.pkl", "wb") as fh:
        pickle.dump({"a": np.zeros(3), "b": collections.OrderedDict(x=1)}, fh)
    files.append((dest / "plain.pkl", "pickle"))
    return files
