"""A symbolic pickle machine: walks opcodes and simulates stack and memo, never imports or calls.

The simulator decodes every opcode itself (the argument formats of
:mod:`pickletools`), keeps a model of the unpickler's stack, metastack and memo,
and records what the real unpickler *would* import and call:

* every ``GLOBAL`` / ``STACK_GLOBAL`` / ``INST`` import, resolved through the
  memo and through constant strings wherever they came from;
* every call (``REDUCE``, ``INST``, ``OBJ``, ``NEWOBJ``/``NEWOBJ_EX``), including
  calls of values computed at load time (``getattr(importlib.import_module('os'),
  'system')``, ``operator.attrgetter``/``methodcaller`` results, ``functools.partial``);
* ``BUILD`` on imported objects (monkey-patching) and ``BUILD`` states that plant
  ``__setstate__``/``__reduce__`` hooks;
* extension-registry opcodes (``EXT1/2/4``), whose target is unknowable statically;
* ``bytes`` constants that are themselves pickles (or zips) - scanned recursively;
* joblib's inline arrays: after ``BUILD`` of a ``NumpyArrayWrapper`` the raw array
  bytes (or, for object arrays, a nested pickle) follow in the stream, exactly
  as joblib reads them.

Binary blobs are skipped by length without being copied, so a pickle holding
large arrays is walked at close to I/O speed.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from probes.static_scan import policy

BLOB_KEEP = 1 << 20  # bytes/str constants larger than this are not copied
MAX_NESTING = 6
LOADERS = {
    "pickle.loads", "pickle.load", "_pickle.loads", "_pickle.load", "pickle._loads",
    "pickle._load", "dill.loads", "dill.load", "cloudpickle.loads", "torch.load",
    "torch.serialization.load", "joblib.load", "numpy.load", "marshal.loads",
    "pickle.Unpickler", "_pickle.Unpickler",
}


class PickleParseError(Exception):
    def __init__(self, pos: int, msg: str):
        super().__init__(msg)
        self.pos = pos
        self.msg = msg


@dataclass(eq=False)
class SGlobal:
    """An imported name (real, or 'virtual' when reached through getattr & co.)."""

    module: str
    name: str
    offset: int
    opcode: str
    tier: str = policy.UNKNOWN
    reason: str = ""
    eff_module: str = ""
    eff_name: str = ""
    via: str = ""
    uses: set = field(default_factory=set)
    call_offset: int | None = None
    call_opcode: str | None = None
    enum_like: bool = True  # every call so far had one constant scalar argument (Enum(value) pattern)

    full: str = ""

    def __post_init__(self) -> None:
        m = policy.normalize_module(self.module)
        self.full = f"{m}.{self.name}" if self.name else m


class SObj:
    """The result of a call / instantiation / persistent id / extension lookup."""

    __slots__ = ("kind", "func", "args", "offset", "opcode", "resolved", "partial", "attrgetter",
                 "methodcaller", "const", "planted", "items", "state", "size_hint")

    def __init__(self, kind: str, func: Any = None, args: tuple = (), offset: int = 0, opcode: str = ""):
        self.kind = kind  # call | new | persid | ext | unknown
        self.func = func
        self.args = args
        self.offset = offset
        self.opcode = opcode
        self.resolved: SGlobal | None = None  # what this value *is*, when it is a looked-up attribute
        self.partial: tuple | None = None
        self.attrgetter: list | None = None
        self.methodcaller: tuple | None = None
        self.const: Any = None
        self.planted: dict | None = None  # created on first use (most objects never need them)
        self.items: list | None = None
        self.state: Any = None
        self.size_hint: int = 0  # elements of a range() result (what a consumer would materialise)


@dataclass(eq=False)
class SList:
    items: list = field(default_factory=list)


@dataclass(eq=False)
class SDict:
    pairs: list = field(default_factory=list)

    def get(self, key, default=None):
        for k, v in self.pairs:
            if k == key and isinstance(k, str):
                return v
        return default


@dataclass(eq=False)
class SSet:
    items: list = field(default_factory=list)


@dataclass(frozen=True)
class SBlob:
    """A large bytes/str constant left in the buffer (start, end are buffer positions)."""

    start: int
    end: int


_MISSING = object()


def describe(v: Any) -> str:
    if isinstance(v, SGlobal):
        return v.full
    if isinstance(v, SObj):
        if v.resolved is not None:
            return v.resolved.full
        if v.kind == "ext":
            return f"extension-registry object {v.args[0] if v.args else '?'}"
        if isinstance(v.func, SGlobal):
            return f"result of {v.func.full}(...)"
        return f"{v.kind} result"
    if isinstance(v, (str, bytes, int, float)) or v is None:
        r = repr(v)
        return r if len(r) < 60 else r[:57] + "..."
    return type(v).__name__


def sym(v: Any) -> tuple[str, str] | None:
    """(module, dotted name) that a value statically denotes, if any."""
    if isinstance(v, SGlobal):
        return v.module, v.name
    if isinstance(v, SObj) and v.resolved is not None:
        return v.resolved.module, v.resolved.name
    return None


def const_str(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(v, SObj) and isinstance(v.const, str):
        return v.const
    if isinstance(v, SObj) and isinstance(v.const, bytes) and len(v.const) < 4096:
        try:
            return v.const.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


# ---------------------------------------------------------------- opcode table
A_NONE, A_U1, A_U2, A_I4, A_U4, A_U8, A_LONG1, A_LONG4, A_S1, A_S4, A_B1, A_B4, A_B8, \
    A_BA8, A_U_1, A_U_4, A_U_8, A_F8, A_LINE_INT, A_LINE_LONG, A_LINE_STR, A_LINE_RAW, \
    A_LINE_PAIR, A_LINE_UNI, A_LINE_FLOAT = range(25)

_OPS: dict[int, tuple[str, int]] = {}


def _build_table() -> None:
    import pickletools

    kinds = {
        None: A_NONE, "uint1": A_U1, "uint2": A_U2, "int4": A_I4, "uint4": A_U4, "uint8": A_U8,
        "long1": A_LONG1, "long4": A_LONG4, "string1": A_S1, "string4": A_S4, "bytes1": A_B1,
        "bytes4": A_B4, "bytes8": A_B8, "bytearray8": A_BA8, "unicodestring1": A_U_1,
        "unicodestring4": A_U_4, "unicodestring8": A_U_8, "float8": A_F8,
        "decimalnl_short": A_LINE_INT, "decimalnl_long": A_LINE_LONG, "stringnl": A_LINE_STR,
        "stringnl_noescape": A_LINE_RAW, "stringnl_noescape_pair": A_LINE_PAIR,
        "unicodestringnl": A_LINE_UNI, "floatnl": A_LINE_FLOAT,
    }
    for op in pickletools.opcodes:
        _OPS[ord(op.code)] = (op.name, kinds[op.arg.name if op.arg else None])


_build_table()


def looks_like_pickle(buf, start: int, end: int) -> bool:
    """Cheap check: a protocol 2+ header, or a protocol 0 GLOBAL line."""
    if end - start < 4:
        return False
    b0 = buf[start]
    if b0 == 0x80:
        return buf[start + 1] <= 5 and buf[start + 2] in _OPS
    if b0 in (0x63, 0x28, 0x69, 0x5D, 0x7D):  # c ( i ] }
        nl = buf.find(b"\n", start, min(end, start + 256))
        return nl > start + 1 and buf[start] == 0x63
    return False


class PickleSim:
    """Walk one pickle (from ``start`` to its STOP) in ``buf`` and report what it would do.

    ``emit(finding_dict)`` receives findings; ``nested(buf, start, end, kind, label)``
    is called for bytes constants that look like pickles or zips and returns
    ``True`` if it scanned them. Offsets in findings are ``pos - base``.
    """

    def __init__(self, buf, start: int, end: int, *, emit: Callable[[dict], None],
                 base: int = 0, nested: Callable | None = None, depth: int = 0,
                 context: str = "", joblib_arrays: bool = True, max_ops: int | None = None, cancel=None,
                 deadline: float | None = None):
        self.buf = buf
        self.start = start
        self.end = end
        self.emit = emit
        self.base = base
        self.nested = nested
        self.depth = depth
        self.context = context
        self.joblib_arrays = joblib_arrays
        self.max_ops = max_ops if max_ops is not None else 1 << 62
        self.cancel = cancel
        self.deadline = deadline  # time.monotonic() after which the walk stops (not fully read)
        self._walked: set = set()  # (id, size) of argument structures already walked
        self.globals: list[SGlobal] = []
        self.persids: list = []
        self.value: Any = None
        self.proto = 0
        self.n_ops = 0
        self.stop_pos: int | None = None
        self.skipped_bytes = 0  # blob / inline-array bytes not copied
        self.arrays_skipped = 0  # joblib inline arrays stepped over
        self.frames = 0
        self.frame_issues: list[tuple[int, int | None, str]] = []  # (opcode pos, resync pos or None, why)

    # ---------------------------------------------------------------- findings
    def _finding(self, pos: int, opcode: str, module: str | None, name: str | None,
                 severity: str, rule: str, explanation: str) -> None:
        if self.context:
            explanation = f"{self.context}: {explanation}"
        self.emit({"offset": pos - self.base, "opcode": opcode, "module": module, "name": name,
                   "severity": severity, "rule": rule, "explanation": explanation})

    def _global(self, module: str, name: str, pos: int, opcode: str, via: str = "") -> SGlobal:
        tier, reason, em, en = policy.classify(module, name)
        g = SGlobal(module, name, pos, opcode, tier, reason, em, en, via)
        self.globals.append(g)
        return g

    def _use(self, v: Any, mode: str, pos: int, opcode: str) -> None:
        g = v if isinstance(v, SGlobal) else (v.resolved if isinstance(v, SObj) else None)
        if g is None:
            if isinstance(v, SObj) and v.partial is not None:
                self._use(v.partial[0], mode, pos, opcode)
            return
        g.uses.add(mode)
        if mode == "call" and g.call_offset is None:
            g.call_offset, g.call_opcode = pos, opcode

    def finish(self) -> None:
        """Emit one finding per non-allowlisted import (called at STOP or on a parse error)."""
        for g in self.globals:
            if g.tier == policy.ALLOW:
                continue
            mod = policy.normalize_module(g.eff_module or g.module)
            nm = g.eff_name if g.eff_module else g.name
            via = f" (reached through {g.via})" if g.via else ""
            if (mod, nm) != (g.module, g.name) and g.module != "?":
                via += f" (written as {g.module}.{g.name})"
            called = (f"; called by {g.call_opcode} at offset {g.call_offset - self.base}"
                      if g.call_offset is not None else "")
            if g.tier == policy.CRITICAL:
                self._finding(g.offset, g.opcode, mod, nm, "critical", "dangerous-callable",
                              f"{mod}.{nm}: {g.reason}{via}{called}")
            elif "call" in g.uses:
                if g.enum_like and "new" not in g.uses and policy.well_known(g.module) and policy.looks_like_class(g.name) \
                        and not g.via:
                    self._finding(g.offset, g.opcode, mod, nm, "low", "review-class",
                                  f"{g.full}(<constant>) looks like an Enum member lookup{called}; review")
                elif policy.constructor_ok(g.module) and policy.looks_like_class(g.name) and not g.via:
                    self._finding(g.offset, g.opcode, mod, nm, "low", "review-class",
                                  f"constructor of library class {g.full} is called while loading{called}; review")
                else:
                    self._finding(g.offset, g.opcode, mod, nm, "high", "unknown-callable",
                                  f"{g.full} is not on the allowlist and is called while loading{via}{called}")
            else:
                sev = "low" if policy.well_known(g.module) and not g.via else "medium"
                how = ("instantiated without __init__ (NEWOBJ/reconstructor), its __setstate__ may run"
                       if ("new" in g.uses or "build" in g.uses) else "imported (its module's code runs on import)")
                self._finding(g.offset, g.opcode, mod, nm, sev, "review-class",
                              f"class/name outside the allowlist {g.full} is {how}{via}; review")

    # ---------------------------------------------------------------- semantics
    def _check_args(self, full: str, args: tuple, pos: int, opcode: str) -> None:
        spec = policy.CALLS_ARGUMENTS.get(full)
        if not spec:
            return
        if "*" in spec:
            for v in _callables_in(args, self._walked):
                self._use(v, spec["*"], pos, opcode)
        for i, mode in spec.items():
            if i == "*" or not isinstance(args, tuple) or i >= len(args):
                continue
            v = args[i]
            if mode == "base" and isinstance(v, SGlobal) and v.full == "builtins.object":
                continue
            self._use(v, "call" if mode in ("call", "base") else "new", pos, opcode)

    def _check_sizes(self, full: str, args: tuple, pos: int, opcode: str) -> None:
        """A resource-exhaustion finding when an allowed callable is given a huge size or a huge range."""
        for a in args:
            if type(a) is int and a >= policy.HUGE_BYTES and full in policy.SIZED_CONSTRUCTORS:
                self._finding(pos, opcode, *_split(full), "high", "resource-exhaustion",
                              f"{full}({a}) allocates {a / (1 << 30):.1f} GiB while loading (memory bomb)")
            elif type(a) is SObj and a.size_hint >= policy.HUGE_ELEMENTS:
                self._finding(pos, opcode, *_split(full), "high", "resource-exhaustion",
                              f"{full} materialises a range of {a.size_hint:,} elements while loading "
                              "(memory/CPU exhaustion)")
            elif type(a) is tuple and full in _SHAPED and a and all(type(x) is int for x in a):
                n = 1
                for x in a:
                    n *= max(x, 0)
                if n >= policy.HUGE_ELEMENTS * 8:
                    self._finding(pos, opcode, *_split(full), "high", "resource-exhaustion",
                                  f"{full} with shape {a} allocates {n:,} elements while loading (memory bomb)")

    def _virtual(self, target: tuple[str, str], attr: str, pos: int, opcode: str, via: str) -> SGlobal:
        module, name = target
        name = f"{name}.{attr}" if name and attr else (name or attr)
        return self._global(module, name, pos, opcode, via)

    def _call(self, func: Any, args: Any, pos: int, opcode: str, mode: str = "call") -> SObj:  # noqa: C901 - the table of callables the symbolic machine resolves, one branch per family
        if not isinstance(args, tuple):
            args = tuple(args.items) if isinstance(args, SList) else (args,)
        res = SObj("call" if mode == "call" else "new", func, args, pos, opcode)
        if isinstance(func, SGlobal):
            self._use(func, mode, pos, opcode)
            if mode == "call" and not (len(args) == 1 and (args[0] is None or type(args[0]) in (str, int, float, bool))):
                func.enum_like = False
            full = func.full
            if func.tier == policy.ALLOW:
                self._check_args(full, args, pos, opcode)
                if args and full not in policy.RANGE_OK or full in policy.SIZED_CONSTRUCTORS:
                    self._check_sizes(full, args, pos, opcode)
                if full == "builtins.range" and args and all(type(a) is int for a in args):
                    res.size_hint = _range_len(args)
                if full == "torch.storage._load_from_bytes" and not (args and isinstance(args[0], (bytes, SBlob))):
                    self._finding(pos, opcode, "torch.storage", "_load_from_bytes", "high", "computed-call",
                                  "torch.storage._load_from_bytes runs torch.load(weights_only=False) on bytes computed "
                                  f"while loading ({describe(args[0]) if args else 'no argument'}); they cannot be checked")
                if full in ("numpy.core._ufunc_reconstruct", "numpy._core._ufunc_reconstruct"):
                    m, n = (const_str(args[0]), const_str(args[1])) if len(args) == 2 else (None, None)
                    if m is not None and n is not None:
                        res.resolved = self._global(m, n, pos, opcode, "")
                        res.resolved.via = "" if m.split(".")[0] == "numpy" else full
                    else:
                        self._finding(pos, opcode, None, None, "high", "computed-global",
                                      f"{full} imports a computed module/name ({', '.join(describe(a) for a in args)})")
                if full == "functools.partial" and args:
                    res.partial = (args[0], args[1:])
                elif full in ("_codecs.encode", "codecs.encode") and args and isinstance(args[0], str):
                    s = args[0]
                    if len(s) >= 4 and (s[0] == "\x80" or s.startswith("PK\x03\x04")):
                        data = s.encode("latin-1", "replace")
                        res.const = data
                        self._nested_bytes(data, 0, len(data), pos, "bytes built by _codecs.encode")
            elif full in ("builtins.getattr",) and len(args) >= 2 and const_str(args[1]) is not None:
                t = sym(args[0])
                if t:
                    res.resolved = self._virtual(t, const_str(args[1]), pos, opcode, "builtins.getattr")
                else:
                    res.resolved = self._global("?", const_str(args[1]), pos, opcode, "builtins.getattr on a computed object")
            elif full in ("importlib.import_module", "builtins.__import__", "importlib.__import__") and args and const_str(args[0]):
                res.resolved = self._global(const_str(args[0]), "", pos, opcode, full)
            elif full in ("operator.attrgetter", "_operator.attrgetter"):
                res.attrgetter = [const_str(a) for a in args if const_str(a)]
            elif full in ("operator.methodcaller", "_operator.methodcaller") and args and const_str(args[0]):
                res.methodcaller = (const_str(args[0]), args[1:])
            elif full in ("operator.add", "_operator.add", "operator.concat", "_operator.concat") and len(args) == 2:
                a, b = const_str(args[0]), const_str(args[1])
                if a is not None and b is not None:
                    res.const = a + b
            elif full in ("builtins.str.join",) and len(args) == 2 and const_str(args[0]) is not None:
                parts = args[1].items if isinstance(args[1], SList) else args[1]
                if isinstance(parts, (list, tuple)) and all(const_str(p) is not None for p in parts):
                    res.const = const_str(args[0]).join(const_str(p) for p in parts)
            elif full in _DECODERS and args:
                data = _decode(full, args)
                if data is not None:
                    res.const = data
                    if len(data) >= 4:
                        self._nested_bytes(data, 0, len(data), pos, f"bytes decoded by {full}")
            elif full in ("sys.modules.get", "sys.modules.__getitem__") and args and const_str(args[0]):
                res.resolved = self._global(const_str(args[0]), "", pos, opcode, full)
            return res
        if isinstance(func, SObj):
            if func.partial is not None:
                return self._call(func.partial[0], tuple(func.partial[1]) + args, pos, opcode, mode)
            if func.resolved is not None:
                self._use(func.resolved, mode, pos, opcode)
                return res
            if func.attrgetter is not None and args:
                t = sym(args[0])
                for a in func.attrgetter:
                    res.resolved = self._virtual(t, a, pos, opcode, "operator.attrgetter") if t else \
                        self._global("?", a, pos, opcode, "operator.attrgetter on a computed object")
                return res
            if func.methodcaller is not None and args:
                t = sym(args[0])
                v = self._virtual(t, func.methodcaller[0], pos, opcode, "operator.methodcaller") if t else \
                    self._global("?", func.methodcaller[0], pos, opcode, "operator.methodcaller on a computed object")
                self._use(v, "call", pos, opcode)
                return res
        self._finding(pos, opcode, None, None, "high", "computed-call",
                      f"{opcode} calls {describe(func)}, a value computed while loading (not a plain import)")
        return res

    def _build(self, inst: Any, state: Any, pos: int) -> int | None:
        dicts = []
        if isinstance(state, SDict):
            dicts.append(state)
        elif isinstance(state, tuple) and len(state) == 2:
            dicts.extend(d for d in state if isinstance(d, SDict))
        for d in dicts:
            for k, v in d.pairs:
                if isinstance(k, str) and k.startswith("__") and k.endswith("__") and k not in ("__dict__", "__doc__", "__module__"):
                    t = sym(v)
                    self._finding(pos, "BUILD", t[0] if t else None, t[1] if t else None, "critical", "build-hook",
                                  f"BUILD plants {k} on {describe(inst)} = {describe(v)}; the unpickler will call it")
                    self._use(v, "call", pos, "BUILD")
                    if isinstance(inst, SObj):
                        if inst.planted is None:
                            inst.planted = {}
                        inst.planted[k] = v
        if isinstance(inst, SGlobal):
            keys = [k for d in dicts for k, _ in d.pairs]
            sev = "critical" if inst.tier == policy.CRITICAL else "high"
            self._finding(pos, "BUILD", inst.eff_module or inst.module, inst.eff_name or inst.name, sev, "monkey-patch",
                          f"BUILD sets attributes {keys[:5]!r} on imported object {inst.full} (monkey-patching)")
            for d in dicts:
                for _, v in d.pairs:
                    self._use(v, "call", pos, "BUILD")
            return None
        if isinstance(inst, SObj):
            hook = inst.planted.get("__setstate__", _MISSING) if inst.planted else _MISSING
            if hook is not _MISSING and not any("__setstate__" == k for d in dicts for k, _ in d.pairs):
                self._call(hook, (state,), pos, "BUILD")
            if isinstance(inst.func, SGlobal):
                self._use(inst.func, "build", pos, "BUILD")
                if self.joblib_arrays and inst.func.tier == policy.ALLOW and inst.func.name in ("NumpyArrayWrapper",):
                    return self._joblib_array_size(state)
            inst.state = state
        return None

    def _joblib_array_size(self, state: Any) -> int | None:
        """Bytes of the inline array after a NumpyArrayWrapper BUILD; -1 = nested object pickle."""
        if not isinstance(state, SDict):
            return None
        shape = state.get("shape")
        dtype = state.get("dtype")
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise PickleParseError(self.start, "joblib array wrapper with an unreadable shape")
        count = 1
        for s in shape:
            count *= s
        itemsize, hasobject = _dtype_info(dtype)
        if hasobject:
            return -1
        if itemsize is None:
            raise PickleParseError(self.start, "joblib array wrapper with an unreadable dtype")
        self._joblib_align = state.get("numpy_array_alignment_bytes", _MISSING) is not _MISSING
        return count * itemsize

    def _nested_bytes(self, buf, a: int, b: int, pos: int, what: str) -> None:
        if self.nested is None or self.depth >= MAX_NESTING or b - a < 4:
            return
        self.nested(buf, a, b, pos, what, self.depth + 1, buf is self.buf)

    # ---------------------------------------------------------------- the walk
    def run(self) -> int:
        """Walk to STOP; return the position after STOP. Raises PickleParseError."""
        try:
            return self._run()
        finally:
            self.finish()

    def _run(self) -> int:  # noqa: C901 - one flat dispatch loop is the fast way in Python
        buf, end = self.buf, self.end
        pos = self.start
        stack: list = []
        metastack: list = []
        memo: dict = {}
        ops = _OPS
        unpack = struct.unpack_from
        self._joblib_align = False

        def pop_mark():
            nonlocal stack
            items = stack
            stack = metastack.pop()
            return items

        n_ops = 0
        opos = pos
        lim = end  # min(end, end of the current FRAME): the loop head checks frame boundaries for free
        fend = -1
        reused = 0  # containers pushed again by GET/DUP: an expansion needs dozens of them
        containers = _CONTAINERS
        try:
            while True:
                if pos >= lim:
                    if fend >= 0 and pos >= fend and fend < end:
                        if pos > fend:
                            self._frame_issue(opos, fend, f"opcode at offset {opos - self.base} runs past the end of "
                                              f"its FRAME (offset {fend - self.base}): the pure-Python unpickler stops "
                                              "here ('pickle exhausted before end of frame'), the C unpickler reads on")
                        fend, lim = -1, end
                    if pos >= end:
                        raise PickleParseError(pos, "pickle ends without STOP (truncated)")
                code = buf[pos]
                opos = pos
                n_ops += 1
                if not n_ops & 0xFFFF:
                    if n_ops > self.max_ops:
                        raise PickleParseError(opos, "opcode budget exhausted")
                    if self.cancel is not None and self.cancel.is_set():
                        from probes.errors import Cancelled

                        raise Cancelled("cancelled")
                    if self.deadline is not None and time.monotonic() > self.deadline:
                        raise PickleParseError(opos, f"time budget spent after {n_ops} opcodes (not fully read)")
                # ---- fast paths for the opcodes that make up most of a state_dict pickle
                if code == 0x71 or code == 0x68 or code == 0x4B:  # BINPUT / BINGET / BININT1
                    if pos + 2 > end:
                        raise PickleParseError(opos, "truncated opcode argument")
                    a1 = buf[pos + 1]
                    pos += 2
                    if code == 0x71:
                        memo[a1] = stack[-1]
                    elif code == 0x68:
                        if a1 not in memo:
                            raise PickleParseError(opos, f"BINGET of memo key {a1} that was never stored")
                        v = memo[a1]
                        stack.append(v)
                        if type(v) in containers:
                            reused += 1
                    else:
                        stack.append(a1)
                    continue
                if code == 0x72 or code == 0x6A:  # LONG_BINPUT / LONG_BINGET
                    if pos + 5 > end:
                        raise PickleParseError(opos, "truncated opcode argument")
                    a1 = unpack("<I", buf, pos + 1)[0]
                    pos += 5
                    if code == 0x72:
                        memo[a1] = stack[-1]
                    else:
                        if a1 not in memo:
                            raise PickleParseError(opos, f"LONG_BINGET of memo key {a1} that was never stored")
                        v = memo[a1]
                        stack.append(v)
                        if type(v) in containers:
                            reused += 1
                    continue
                if code == 0x86:  # TUPLE2
                    b2 = stack.pop()
                    stack[-1] = (stack[-1], b2)
                    pos += 1
                    continue
                if code == 0x52:  # REDUCE
                    args = stack.pop()
                    stack[-1] = self._call(stack[-1], args, opos, "REDUCE")
                    pos += 1
                    continue
                if code == 0x8C:  # SHORT_BINUNICODE
                    if pos + 2 > end:
                        raise PickleParseError(opos, "truncated opcode argument")
                    a = pos + 2
                    pos = a + buf[pos + 1]
                    if pos > end:
                        raise PickleParseError(opos, "SHORT_BINUNICODE runs past the end")
                    stack.append(bytes(buf[a:pos]).decode("utf-8", "surrogatepass"))
                    continue
                if code == 0x28:  # MARK
                    metastack.append(stack)
                    stack = []
                    pos += 1
                    continue
                if code == 0x74:  # TUPLE
                    items = stack
                    stack = metastack.pop()
                    stack.append(tuple(items))
                    pos += 1
                    continue
                if code == 0x94:  # MEMOIZE
                    memo[len(memo)] = stack[-1]
                    pos += 1
                    continue
                if code == 0x85:  # TUPLE1
                    stack[-1] = (stack[-1],)
                    pos += 1
                    continue
                if code == 0x89 or code == 0x88:  # NEWFALSE / NEWTRUE
                    stack.append(code == 0x88)
                    pos += 1
                    continue
                if code == 0x29:  # EMPTY_TUPLE
                    stack.append(())
                    pos += 1
                    continue
                if code == 0x47:  # BINFLOAT
                    if pos + 9 > end:
                        raise PickleParseError(opos, "truncated opcode argument")
                    stack.append(unpack(">d", buf, pos + 1)[0])
                    pos += 9
                    continue
                if code == 0x4A:  # BININT
                    if pos + 5 > end:
                        raise PickleParseError(opos, "truncated opcode argument")
                    stack.append(unpack("<i", buf, pos + 1)[0])
                    pos += 5
                    continue
                if code == 0x5D or code == 0x7D:  # EMPTY_LIST / EMPTY_DICT
                    stack.append(SList() if code == 0x5D else SDict())
                    pos += 1
                    continue
                if code == 0x65 or code == 0x75:  # APPENDS / SETITEMS
                    items = stack
                    stack = metastack.pop()
                    target = stack[-1]
                    if code == 0x65:
                        if type(target) is SList:
                            target.items.extend(items)
                        else:
                            self._add_items(target, items, opos, "APPENDS")
                    elif type(target) is SDict:
                        target.pairs.extend(zip(items[::2], items[1::2]))
                    else:
                        self._set_items(target, list(zip(items[::2], items[1::2])), opos, "SETITEMS")
                    pos += 1
                    continue
                if code == 0x4E:  # NONE
                    stack.append(None)
                    pos += 1
                    continue
                if code == 0x30:  # POP
                    if stack:
                        stack.pop()
                    else:
                        pop_mark()
                    pos += 1
                    continue
                if code == 0x87:  # TUPLE3
                    c3 = stack.pop()
                    b3 = stack.pop()
                    stack[-1] = (stack[-1], b3, c3)
                    pos += 1
                    continue
                if code == 0x93:  # STACK_GLOBAL
                    nm = stack.pop()
                    mod = stack.pop()
                    if type(mod) is str and type(nm) is str:
                        stack.append(self._global(mod, nm, opos, "STACK_GLOBAL"))
                        pos += 1
                        continue
                    stack.append(mod)
                    stack.append(nm)  # computed names: the general path below reports them
                if code == 0x58:  # BINUNICODE
                    if pos + 5 > end:
                        raise PickleParseError(opos, "truncated opcode argument")
                    n = unpack("<I", buf, pos + 1)[0]
                    a = pos + 5
                    if n <= 4096 and a + n <= end:
                        pos = a + n
                        stack.append(bytes(buf[a:pos]).decode("utf-8", "surrogatepass"))
                        continue
                if code == 0x51:  # BINPERSID
                    pid = stack.pop()
                    stack.append(self._persid(pid, opos, "BINPERSID"))
                    pos += 1
                    continue
                op = ops.get(code)
                if op is None:
                    raise PickleParseError(pos, f"invalid opcode byte 0x{code:02x}")
                name, kind = op
                pos += 1
                arg: Any = None
                blob = None  # (start, end) of a bytes/str constant in buf
                try:
                    if kind == A_NONE:
                        pass
                    elif kind == A_U1:
                        arg = buf[pos]; pos += 1
                    elif kind == A_U2:
                        arg = unpack("<H", buf, pos)[0]; pos += 2
                    elif kind == A_I4:
                        arg = unpack("<i", buf, pos)[0]; pos += 4
                    elif kind == A_U4:
                        arg = unpack("<I", buf, pos)[0]; pos += 4
                    elif kind == A_U8:
                        arg = unpack("<Q", buf, pos)[0]; pos += 8
                    elif kind == A_F8:
                        arg = unpack(">d", buf, pos)[0]; pos += 8
                    elif kind in (A_LONG1, A_LONG4):
                        if kind == A_LONG1:
                            n = buf[pos]; pos += 1
                        else:
                            n = unpack("<i", buf, pos)[0]; pos += 4
                            if n < 0:
                                raise PickleParseError(opos, "negative LONG4 length")
                        if pos + n > end:
                            raise PickleParseError(opos, f"{name} runs past the end")
                        arg = int.from_bytes(buf[pos:pos + n], "little", signed=True) if n <= 4096 else 0
                        pos += n
                    elif kind in (A_S1, A_S4, A_B1, A_B4, A_B8, A_BA8, A_U_1, A_U_4, A_U_8):
                        if kind in (A_S1, A_B1, A_U_1):
                            n = buf[pos]; pos += 1
                        elif kind == A_S4:
                            n = unpack("<i", buf, pos)[0]; pos += 4
                            if n < 0:
                                raise PickleParseError(opos, "negative BINSTRING length")
                        elif kind in (A_B4, A_U_4):
                            n = unpack("<I", buf, pos)[0]; pos += 4
                        else:
                            n = unpack("<Q", buf, pos)[0]; pos += 8
                        if pos + n > end:
                            if n >= policy.HUGE_BYTES:
                                self._finding(opos, name, None, None, "medium", "resource-exhaustion",
                                              f"{name} declares {n:,} bytes ({n / (1 << 30):.1f} GiB) with {end - pos:,} "
                                              "left: an unpickler reading a file allocates the declared size first")
                            raise PickleParseError(opos, f"{name} of {n} bytes runs past the end")
                        blob = (pos, pos + n)
                        if n > BLOB_KEEP:
                            arg = SBlob(pos, pos + n)
                            self.skipped_bytes += n
                        elif kind in (A_U_1, A_U_4, A_U_8):
                            arg = bytes(buf[pos:pos + n]).decode("utf-8", "surrogatepass")
                        elif kind in (A_S1, A_S4):
                            arg = bytes(buf[pos:pos + n]).decode("latin-1")  # py2 str (text under encoding='latin1')
                        else:
                            arg = bytes(buf[pos:pos + n])
                        pos += n
                    else:  # newline-terminated text arguments
                        nl = buf.find(b"\n", pos, end)
                        if nl < 0:
                            raise PickleParseError(opos, f"{name} argument has no newline")
                        line = bytes(buf[pos:nl])
                        pos = nl + 1
                        if kind == A_LINE_PAIR:
                            nl2 = buf.find(b"\n", pos, end)
                            if nl2 < 0:
                                raise PickleParseError(opos, f"{name} name has no newline")
                            arg = (line.decode("utf-8", "replace"), bytes(buf[pos:nl2]).decode("utf-8", "replace"))
                            pos = nl2 + 1
                        elif kind == A_LINE_INT:
                            arg = True if line == b"01" else False if line == b"00" else int(line)
                        elif kind == A_LINE_LONG:
                            arg = int(line.rstrip(b"L") or b"0")
                        elif kind == A_LINE_FLOAT:
                            arg = float(line)
                        elif kind == A_LINE_RAW:
                            arg = line.decode("utf-8", "replace")
                        elif kind == A_LINE_UNI:
                            arg = line.decode("raw-unicode-escape")
                        elif kind == A_LINE_STR:
                            if len(line) < 2 or line[:1] not in (b"'", b'"') or line[-1:] != line[:1]:
                                raise PickleParseError(opos, "STRING argument is not quoted")
                            import codecs

                            arg = codecs.escape_decode(line[1:-1])[0]
                except (struct.error, IndexError, ValueError) as exc:
                    if isinstance(exc, PickleParseError):
                        raise
                    raise PickleParseError(opos, f"{name}: truncated or malformed argument") from None

                try:
                    # ---- constants
                    if blob is not None:
                        a, b = blob
                        if b - a >= 4 and (buf[a] == 0x80 or buf[a] in (0x63, 0x28) or buf[a:a + 4] == b"PK\x03\x04"):
                            self._nested_bytes(buf, a, b, opos, f"{name} constant")
                        stack.append(arg)
                    elif name in ("BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT",
                                  "UNICODE"):
                        stack.append(arg)
                    elif name == "STRING":
                        if len(arg) >= 4 and (arg[:1] == b"\x80" or arg[:1] == b"c"):
                            self._nested_bytes(arg, 0, len(arg), opos, "STRING constant")
                        stack.append(arg.decode("latin-1"))
                    elif name == "NONE":
                        stack.append(None)
                    elif name == "NEWTRUE":
                        stack.append(True)
                    elif name == "NEWFALSE":
                        stack.append(False)
                    # ---- memo
                    elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                        memo[arg] = stack[-1]
                    elif name == "MEMOIZE":
                        memo[len(memo)] = stack[-1]
                    elif name in ("BINGET", "LONG_BINGET", "GET"):
                        if arg not in memo:
                            raise PickleParseError(opos, f"{name} of memo key {arg} that was never stored")
                        stack.append(memo[arg])
                        reused += 1
                    # ---- containers
                    elif name == "MARK":
                        metastack.append(stack)
                        stack = []
                    elif name == "EMPTY_LIST":
                        stack.append(SList())
                    elif name == "EMPTY_DICT":
                        stack.append(SDict())
                    elif name == "EMPTY_TUPLE":
                        stack.append(())
                    elif name == "EMPTY_SET":
                        stack.append(SSet())
                    elif name == "TUPLE1":
                        stack[-1] = (stack[-1],)
                    elif name == "TUPLE2":
                        b2 = stack.pop(); stack[-1] = (stack[-1], b2)
                    elif name == "TUPLE3":
                        c3 = stack.pop(); b3 = stack.pop(); stack[-1] = (stack[-1], b3, c3)
                    elif name == "TUPLE":
                        items = pop_mark(); stack.append(tuple(items))
                    elif name == "LIST":
                        items = pop_mark(); stack.append(SList(items))
                    elif name == "DICT":
                        items = pop_mark(); stack.append(SDict(list(zip(items[::2], items[1::2]))))
                    elif name == "FROZENSET":
                        items = pop_mark(); stack.append(SSet(items))
                    elif name == "APPEND":
                        v = stack.pop(); self._add_items(stack[-1], [v], opos, name)
                    elif name == "APPENDS":
                        items = pop_mark(); self._add_items(stack[-1], items, opos, name)
                    elif name == "ADDITEMS":
                        items = pop_mark(); self._add_items(stack[-1], items, opos, name)
                    elif name == "SETITEM":
                        v = stack.pop(); k = stack.pop(); self._set_items(stack[-1], [(k, v)], opos, name)
                    elif name == "SETITEMS":
                        items = pop_mark(); self._set_items(stack[-1], list(zip(items[::2], items[1::2])), opos, name)
                    elif name == "POP":
                        if stack:
                            stack.pop()
                        else:
                            pop_mark()
                    elif name == "POP_MARK":
                        pop_mark()
                    elif name == "DUP":
                        stack.append(stack[-1])
                        reused += 1
                    # ---- imports and calls
                    elif name == "GLOBAL":
                        stack.append(self._global(arg[0], arg[1], opos, name))
                    elif name == "STACK_GLOBAL":
                        nm = stack.pop(); mod = stack.pop()
                        ms, ns = const_str(mod), const_str(nm)
                        if ms is None or ns is None:
                            self._finding(opos, name, ms, ns, "high", "computed-global",
                                          f"STACK_GLOBAL with a computed module/name ({describe(mod)}, {describe(nm)})")
                            stack.append(SObj("unknown", offset=opos, opcode=name))
                        else:
                            via = "" if isinstance(mod, str) and isinstance(nm, str) else "strings computed while loading"
                            stack.append(self._global(ms, ns, opos, name, via))
                    elif name == "REDUCE":
                        args = stack.pop(); func = stack[-1]
                        stack[-1] = self._call(func, args, opos, name)
                    elif name == "NEWOBJ":
                        args = stack.pop(); cls = stack[-1]
                        stack[-1] = self._call(cls, args, opos, name, mode="new")
                    elif name == "NEWOBJ_EX":
                        kwargs = stack.pop(); args = stack.pop(); cls = stack[-1]
                        stack[-1] = self._call(cls, args, opos, name, mode="new")
                        for v in _callables_in(kwargs, self._walked):
                            self._use(v, "ref", opos, name)
                    elif name == "INST":
                        items = pop_mark()
                        g = self._global(arg[0], arg[1], opos, name)
                        mode = "new" if (not items and policy.looks_like_class(arg[1])) else "call"
                        stack.append(self._call(g, tuple(items), opos, name, mode=mode))
                    elif name == "OBJ":
                        items = pop_mark()
                        if not items:
                            raise PickleParseError(opos, "OBJ with an empty mark")
                        cls, args = items[0], tuple(items[1:])
                        mode = "new" if (not args and isinstance(cls, SGlobal) and policy.looks_like_class(cls.name)) else "call"
                        stack.append(self._call(cls, args, opos, name, mode=mode))
                    elif name == "BUILD":
                        state = stack.pop()
                        size = self._build(stack[-1], state, opos)
                        if size is not None:
                            if pos == fend:  # joblib commits the frame, then writes the array bytes unframed
                                fend, lim = -1, end
                            pos = self._skip_joblib_array(pos, size, opos)
                    elif name in ("PERSID", "BINPERSID"):
                        pid = arg if name == "PERSID" else stack.pop()
                        stack.append(self._persid(pid, opos, name))
                    elif name in ("EXT1", "EXT2", "EXT4"):
                        self._finding(opos, name, "copyreg", f"extension code {arg}", "high", "ext-opcode",
                                      f"{name} {arg} imports whatever the loading process registered under this "
                                      "copyreg extension code; unknowable statically")
                        stack.append(SObj("ext", args=(arg,), offset=opos, opcode=name))
                    elif name in ("NEXT_BUFFER", "READONLY_BUFFER"):
                        if name == "NEXT_BUFFER":
                            stack.append(SObj("unknown", offset=opos, opcode=name))
                    elif name == "PROTO":
                        if arg > 5:
                            raise PickleParseError(opos, f"unsupported pickle protocol {arg}")
                        self.proto = arg
                    elif name == "FRAME":
                        if fend >= 0 and opos < fend:
                            self._frame_issue(opos, fend, f"FRAME at offset {opos - self.base} starts before the "
                                              f"previous frame ends (offset {fend - self.base}): the pure-Python "
                                              "unpickler refuses it, the C unpickler reads on")
                        fend = pos + arg
                        self.frames += 1
                        if fend > end:
                            self._frame_issue(opos, None, f"FRAME at offset {opos - self.base} declares {arg} bytes "
                                              f"but {end - pos} remain: the C unpickler stops here, the pure-Python "
                                              "one executes what follows")
                            lim = end
                        else:
                            lim = fend
                    elif name == "STOP":
                        self.value = stack.pop() if stack else None
                        self.stop_pos = pos
                        if 0 <= fend and pos < fend <= end:
                            self._frame_issue(opos, fend, f"STOP at offset {opos - self.base} inside a FRAME that "
                                              f"ends at offset {fend - self.base}: the pure-Python unpickler continues "
                                              "a stream at the frame end, the C unpickler right after STOP")
                        if reused >= EXPANSION_REUSES:
                            self._expansion(stack, memo, opos)
                        return pos
                    else:  # pragma: no cover - every opcode is handled above
                        raise PickleParseError(opos, f"unhandled opcode {name}")
                except IndexError:
                    raise PickleParseError(opos, f"{name} on an empty stack or mark (the unpickler would fail here)") from None
        except UnicodeDecodeError:
            raise PickleParseError(opos, "text argument is not valid UTF-8 (the unpickler would fail here)") from None
        except (IndexError, KeyError, struct.error):
            if reused >= EXPANSION_REUSES:
                self._expansion(stack, memo, opos)
            raise PickleParseError(opos, "opcode on an empty stack/mark or with a truncated argument "
                                         "(the unpickler would fail here)") from None
        except PickleParseError:
            if reused >= EXPANSION_REUSES:
                self._expansion(stack, memo, opos)
            raise
        finally:
            self.n_ops += n_ops

    def _persid(self, pid: Any, pos: int, opcode: str) -> SObj:
        """A persistent-load record. Legacy torch files save a whole module's classes as
        ``('module', <class GLOBAL>, source_file, source)``, for which torch's persistent_load returns the class
        itself: the record then *is* that class (tiered as the class is), not an unknown computed value."""
        self.persids.append(pid)
        obj = SObj("persid", args=(pid,), offset=pos, opcode=opcode)
        if type(pid) is tuple and len(pid) >= 2 and const_str(pid[0]) == "module" and type(pid[1]) is SGlobal:
            obj.resolved = pid[1]
        return obj

    def _frame_issue(self, opos: int, resync: int | None, why: str) -> None:
        if len(self.frame_issues) < 16:
            self.frame_issues.append((opos, resync, why))

    def _expansion(self, stack: list, memo: dict, pos: int) -> None:
        """A resource-exhaustion finding when memo/DUP re-use makes the object graph expand far beyond its size."""
        roots = [self.value, *stack, *memo.values()]
        if not roots:
            return
        logical, nodes = _fanout(roots)
        if logical >= EXPANSION_MIN and logical >= 1000 * max(nodes, 1):
            self._finding(pos, "STOP" if self.stop_pos is not None else "?", None, None, "high", "resource-exhaustion",
                          f"{nodes:,} containers re-used through the memo/DUP expand to ~{_approx(logical)} elements "
                          "when the loaded object is traversed, hashed, printed or copied (billion-laughs expansion)")

    def _skip_joblib_array(self, pos: int, size: int, opos: int) -> int:
        buf = self.buf
        if size == -1:  # object array: a nested pickle follows, which joblib loads
            sub = PickleSim(buf, pos, self.end, emit=self.emit, base=self.base, nested=self.nested,
                            depth=self.depth + 1, context="in a joblib object-array pickle", joblib_arrays=True,
                            cancel=self.cancel, deadline=self.deadline)
            newpos = sub.run()
            self.n_ops += sub.n_ops
            self.skipped_bytes += sub.skipped_bytes
            return newpos
        if self._joblib_align:
            if pos >= self.end:
                raise PickleParseError(opos, "joblib array padding runs past the end")
            pos += 1 + buf[pos]
        if pos + size > self.end:
            raise PickleParseError(opos, f"joblib inline array of {size} bytes runs past the end")
        self.skipped_bytes += size
        self.arrays_skipped += 1
        return pos + size

    def _add_items(self, target: Any, items: list, pos: int, opcode: str) -> None:
        if isinstance(target, (SList, SSet)):
            target.items.extend(items)
        elif isinstance(target, SObj):
            if target.items is None:
                target.items = []
            target.items.extend(items)
        elif isinstance(target, SGlobal):
            self._mutates(target, pos, opcode, items)

    def _set_items(self, target: Any, pairs: list, pos: int, opcode: str) -> None:
        if isinstance(target, SDict):
            target.pairs.extend(pairs)
        elif isinstance(target, SObj):
            if target.items is None:
                target.items = []
            target.items.extend(pairs)
        elif isinstance(target, SGlobal):
            self._mutates(target, pos, opcode, [v for p in pairs for v in p])

    def _mutates(self, target: SGlobal, pos: int, opcode: str, values: list) -> None:
        sev = "critical" if target.tier == policy.CRITICAL else "high"
        self._finding(pos, opcode, target.eff_module or target.module, target.eff_name or target.name, sev,
                      "monkey-patch", f"{opcode} mutates imported object {target.full} (e.g. os.environ, a registry)")
        for v in values:
            self._use(v, "call", pos, opcode)


_SHAPED = {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray",
           "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"}


def _split(full: str) -> tuple[str, str]:
    m, _, n = full.rpartition(".")
    return m, n


def _range_len(args: tuple) -> int:
    """len(range(*args)) without building it (arbitrary ints; 0 for what range() would refuse)."""
    if len(args) == 1:
        start, stop, step = 0, args[0], 1
    elif len(args) in (2, 3):
        start, stop, step = args[0], args[1], args[2] if len(args) == 3 else 1
    else:
        return 0
    if step == 0:
        return 0
    n = (stop - start + (step - (1 if step > 0 else -1))) // step
    return max(n, 0)


_DECODERS = {
    "base64.b64decode", "base64.standard_b64decode", "base64.urlsafe_b64decode", "base64.b85decode",
    "base64.a85decode", "base64.b32decode", "base64.b16decode", "base64.decodebytes", "binascii.a2b_base64",
    "binascii.unhexlify", "binascii.a2b_hex", "builtins.bytes.fromhex", "builtins.bytearray.fromhex",
    "zlib.decompress", "bz2.decompress", "lzma.decompress", "gzip.decompress", "codecs.decode", "_codecs.decode",
}
_DECODE_CAP = 64 << 20


def _decode(full: str, args: tuple) -> bytes | None:  # noqa: C901 - one argument decoder per opcode argument kind
    """Fold a pure decoding call on constant data (to find the pickle it hides); None if not constant."""
    import base64
    import binascii
    import bz2
    import lzma
    import zlib

    a = args[0]
    if isinstance(a, str):
        raw = a.encode("latin-1", "replace")
    elif isinstance(a, (bytes, bytearray)):
        raw = bytes(a)
    else:
        return None
    try:
        if full.startswith("base64."):
            fn = getattr(base64, full.split(".", 1)[1])
            return fn(raw)
        if full == "binascii.a2b_base64":
            return binascii.a2b_base64(raw)
        if full in ("binascii.unhexlify", "binascii.a2b_hex", "builtins.bytes.fromhex", "builtins.bytearray.fromhex"):
            return binascii.unhexlify(raw.replace(b" ", b""))
        if full == "zlib.decompress":
            d = zlib.decompressobj(args[1] if len(args) > 1 and isinstance(args[1], int) else 15)
            return d.decompress(raw, _DECODE_CAP)
        if full == "bz2.decompress":
            return bz2.BZ2Decompressor().decompress(raw, _DECODE_CAP)
        if full in ("lzma.decompress",):
            return lzma.LZMADecompressor().decompress(raw, _DECODE_CAP)
        if full == "gzip.decompress":
            return zlib.decompressobj(31).decompress(raw, _DECODE_CAP)
        if full in ("codecs.decode", "_codecs.decode") and len(args) > 1 and isinstance(args[1], str):
            enc = args[1].lower().replace("-", "_")
            if enc in ("base64", "base64_codec"):
                return base64.b64decode(raw)
            if enc in ("hex", "hex_codec"):
                return binascii.unhexlify(raw)
            if enc in ("zlib", "zlib_codec"):
                return zlib.decompressobj().decompress(raw, _DECODE_CAP)
            if enc in ("bz2", "bz2_codec"):
                return bz2.BZ2Decompressor().decompress(raw, _DECODE_CAP)
            if enc in ("rot13", "rot_13") and isinstance(a, str):
                import codecs

                return codecs.decode(a, "rot13").encode("latin-1", "replace")
    except (ValueError, TypeError, binascii.Error, zlib.error, OSError, EOFError, lzma.LZMAError):
        return None
    return None


def _callables_in(root: Any, walked: set | None = None, limit: int = 1_000_000) -> list:
    """Imported names / resolved attributes / partials anywhere inside a value (iterative, bounded).

    ``walked`` holds (id, size) of containers already walked by this simulator: a structure recalled
    from the memo again and again (a classic amplification) is walked once per size it has had."""
    out = []
    todo = [root]
    n = 0
    while todo and n < limit:
        v = todo.pop()
        n += 1
        t = type(v)
        if walked is not None and (t is SList or t is SDict or t is SSet or t is tuple):
            size = len(v) if t is tuple else len(v.pairs) if t is SDict else len(v.items)
            if size > 8:
                key = (id(v), size)
                if key in walked:
                    continue
                walked.add(key)
        if t is tuple:
            todo.extend(v)
        elif t is SGlobal:
            out.append(v)
        elif t is SObj:
            if v.resolved is not None or v.partial is not None:
                out.append(v)
            if v.items and v.kind in ("call", "new") and type(v.func) is SGlobal and v.func.tier == policy.ALLOW:
                todo.extend(v.items)
        elif t is SList or t is SSet:
            todo.extend(v.items)
        elif t is SDict:
            for k, x in v.pairs:
                todo.append(k)
                todo.append(x)
    return out


EXPANSION_MIN = 10 ** 8
EXPANSION_REUSES = 16  # 10^8 elements at 1000x the distinct containers need at least ~27 re-uses
_CONTAINERS = frozenset({tuple, SList, SDict, SSet, SObj})


def _approx(n: int) -> str:
    return f"{n:,}" if n < 10 ** 12 else f"10^{len(str(n)) - 1}"


def _kids(v: Any, t: type) -> Any:
    if t is tuple:
        return v
    if t is SList or t is SSet:
        return v.items
    if t is SDict:
        return [x for p in v.pairs for x in p]
    return (*v.args, *(v.items or ()))  # SObj


def _fanout(roots: list, limit: int = 2_000_000) -> tuple[int, int]:
    """(elements of the largest root when shared nodes are counted once per reference, distinct nodes).

    Shared containers (memo / DUP re-use) make the first number grow exponentially while the second stays
    small: that is an expansion bomb. Iterative post-order, each distinct node sized once (at most ``limit``)."""
    size: dict[int, int] = {}
    visiting: set[int] = set()
    cont = _CONTAINERS
    best = 0
    for r in roots:
        if type(r) not in cont:
            continue
        todo = [r]
        while todo and len(size) < limit:
            v = todo[-1]
            k = id(v)
            if k in size:
                todo.pop()
                continue
            total = 1
            missing = False
            for c in _kids(v, type(v)):
                if type(c) in cont:
                    ck = id(c)
                    n = size.get(ck)
                    if n is not None:
                        total += n
                    elif ck in visiting or k in visiting:
                        total += 1  # a cycle back to a node being sized (or a child cut off by the limit)
                    else:
                        missing = True
                        todo.append(c)
                else:
                    total += 1
            if missing:
                visiting.add(k)
                continue
            size[k] = total
            visiting.discard(k)
            todo.pop()
        best = max(best, size.get(id(r), 1))
    return best, len(size)


def _dtype_info(dtype: Any) -> tuple[int | None, bool]:
    """(itemsize, has_object) of a pickled numpy dtype (``numpy.dtype('f8', False, True)`` + BUILD state)."""
    if not isinstance(dtype, SObj) or not dtype.args:
        return None, False
    s = const_str(dtype.args[0])
    if s is None:
        return None, False
    state = dtype.state
    if s.startswith("O") or s.startswith("|O"):
        return 8, True
    if isinstance(state, tuple) and len(state) >= 8:
        flags = state[7]
        if isinstance(flags, int) and flags & 1:  # NPY_ITEM_REFCOUNT: holds Python objects
            return None, True
        if isinstance(state[5], int) and state[5] > 0:
            return state[5], False
    try:
        import numpy as np

        dt = np.dtype(s)
        return dt.itemsize, dt.hasobject
    except (TypeError, ValueError):
        return None, False
