"""Read the names a marshalled Python code object refers to, without ``marshal.loads``.

Keras ``Lambda`` layers (and ``__lambda__`` functions anywhere in a Keras config)
store ``marshal.dumps(func.__code__)`` base64-encoded. Unmarshalling hostile bytes
in the workbench process is exactly what the scan must not do, so this module walks
the marshal format itself: it decodes only literal data (ints, strings, tuples…),
never builds a code object, and returns each code object's ``co_names`` (globals and
attributes the bytecode loads), its string constants and its nested code objects.
The code-object layout differs between CPython versions; the known layouts
(3.0-3.7, 3.8-3.10, 3.11+) are tried in turn and the first that parses is used.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass, field

# names whose presence in a lambda's bytecode means it reaches the OS, Python's
# import system or another code runner (the lambda is already a finding; these name the target)
DANGEROUS_NAMES = frozenset({
    "os", "posix", "nt", "system", "popen", "spawn", "spawnv", "execv", "execve", "execl", "fork", "subprocess",
    "Popen", "run", "call", "check_output", "check_call", "getoutput", "exec", "eval", "compile", "__import__",
    "import_module", "importlib", "builtins", "__builtins__", "open", "socket", "urllib", "request", "urlopen",
    "requests", "shutil", "rmtree", "remove", "unlink", "getattr", "setattr", "globals", "locals", "vars",
    "pickle", "marshal", "loads", "load", "ctypes", "CDLL", "pty", "sys", "modules", "environ", "write", "putenv",
    "webbrowser", "runpy", "run_path", "code", "interact", "breakpoint", "input",
})

_MAX_DEPTH = 64
_MAX_ITEMS = 1 << 20


class MarshalError(ValueError):
    """The bytes are not a marshal stream this reader understands."""


@dataclass
class CodeInfo:
    """What one code object (and the code nested in it) refers to."""

    name: str = ""
    names: list[str] = field(default_factory=list)  # co_names: globals, attributes, imports
    consts: list[str] = field(default_factory=list)  # string constants
    nested: list[CodeInfo] = field(default_factory=list)
    layout: str = ""

    def all_names(self) -> list[str]:
        out = list(self.names)
        for c in self.nested:
            out.extend(n for n in c.all_names() if n not in out)
        return out

    def all_consts(self) -> list[str]:
        out = list(self.consts)
        for c in self.nested:
            out.extend(s for s in c.all_consts() if s not in out)
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "names": self.names, "consts": self.consts, "layout": self.layout,
                "nested": [c.to_dict() for c in self.nested]}


class _Code:
    """A parsed code object: just the fields the report needs."""

    def __init__(self, info: CodeInfo):
        self.info = info


# code layouts: "i" = raw 4-byte int, "o" = object; names_at / name_at are indexes in the "o" list
_LAYOUTS = (
    ("3.11+", "iiiii", ("code", "consts", "names", "localsplusnames", "localspluskinds", "filename", "name",
                        "qualname", "#firstlineno", "linetable", "exceptiontable")),
    ("3.8-3.10", "iiiiii", ("code", "consts", "names", "varnames", "freevars", "cellvars", "filename", "name",
                            "#firstlineno", "lnotab")),
    ("3.0-3.7", "iiiii", ("code", "consts", "names", "varnames", "freevars", "cellvars", "filename", "name",
                          "#firstlineno", "lnotab")),
)


class _Reader:
    def __init__(self, data: bytes, layout: int | None):
        self.d, self.p, self.layout, self.items = data, 0, layout, 0
        self.refs: list[object] = []

    def byte(self) -> int:
        if self.p >= len(self.d):
            raise MarshalError("truncated marshal data")
        b = self.d[self.p]
        self.p += 1
        return b

    def take(self, n: int) -> bytes:
        if n < 0 or self.p + n > len(self.d):
            raise MarshalError("truncated marshal data")
        out = self.d[self.p:self.p + n]
        self.p += n
        return out

    def i32(self) -> int:
        return struct.unpack("<i", self.take(4))[0]

    def obj(self, depth: int = 0):  # noqa: C901 - one branch per marshal type code
        if depth > _MAX_DEPTH:
            raise MarshalError("marshal data nested too deeply")
        self.items += 1
        if self.items > _MAX_ITEMS:
            raise MarshalError("too many marshal items")
        code = self.byte()
        flag, t = code & 0x80, chr(code & 0x7F)
        idx = None
        if flag and t not in "r":
            idx = len(self.refs)
            self.refs.append(None)
        v: object
        if t in "0NFTS.":
            v = {"0": None, "N": None, "F": False, "T": True, "S": StopIteration, ".": Ellipsis}[t]
        elif t == "i":
            v = self.i32()
        elif t == "l":
            n = self.i32()
            self.take(2 * abs(n))
            v = 0
        elif t == "g":
            v = struct.unpack("<d", self.take(8))[0]
        elif t == "y":
            self.take(16)
            v = 0j
        elif t in "fx":  # old text float / complex
            self.take(self.byte())
            if t == "x":
                self.take(self.byte())
            v = 0.0
        elif t in "stuaA":
            raw = self.take(self.i32())
            v = raw if t == "s" else raw.decode("utf-8", "replace")
        elif t in "zZ":
            v = self.take(self.byte()).decode("latin-1")
        elif t == ")":
            v = tuple(self.obj(depth + 1) for _ in range(self.byte()))
        elif t in "([<>":
            n = self.i32()
            if n < 0 or n > len(self.d):
                raise MarshalError("bad sequence length")
            v = tuple(self.obj(depth + 1) for _ in range(n))
        elif t == "{":
            items = []
            while True:
                if self.p < len(self.d) and self.d[self.p] == ord("0"):
                    self.p += 1
                    break
                items.append((self.obj(depth + 1), self.obj(depth + 1)))
            v = tuple(items)
        elif t == "r":
            n = struct.unpack("<I", self.take(4))[0]
            if n >= len(self.refs):
                raise MarshalError("bad back-reference")
            v = self.refs[n]
        elif t == "c":
            v = self.code(depth)
        else:
            raise MarshalError(f"unknown marshal type {code:#x} at {self.p - 1}")
        if idx is not None:
            self.refs[idx] = v
        return v

    def code(self, depth: int) -> _Code:
        if self.layout is None:
            raise MarshalError("code object layout unknown")
        label, ints, fields = _LAYOUTS[self.layout]
        for _ in ints:
            self.take(4)
        got: dict[str, object] = {}
        for f in fields:
            if f.startswith("#"):
                self.take(4)
                continue
            got[f] = self.obj(depth + 1)
        if not isinstance(got["code"], bytes):
            raise MarshalError("code object without a bytes body")
        if not isinstance(got["consts"], tuple) or not isinstance(got["names"], tuple):
            raise MarshalError("code object consts/names are not tuples")
        if not all(isinstance(n, str) for n in got["names"]):
            raise MarshalError("code object names are not strings")
        info = CodeInfo(name=str(got.get("qualname") or got.get("name") or ""), names=list(got["names"]),
                        layout=label)
        for c in got["consts"]:
            if isinstance(c, _Code):
                info.nested.append(c.info)
            elif isinstance(c, str) and c not in info.consts:
                info.consts.append(c)
        return _Code(info)


def read_code(data: bytes) -> CodeInfo:
    """The names a marshalled code object refers to (tries every known layout); MarshalError if none parses."""
    if not data or (data[0] & 0x7F) != ord("c"):
        raise MarshalError("not a marshalled code object")
    errors = []
    for i in range(len(_LAYOUTS)):
        r = _Reader(data, i)
        try:
            v = r.obj()
        except (MarshalError, RecursionError) as exc:
            errors.append(f"{_LAYOUTS[i][0]}: {exc}")
            continue
        if isinstance(v, _Code) and r.p == len(data):
            return v.info
        errors.append(f"{_LAYOUTS[i][0]}: {len(data) - r.p} bytes left over")
    raise MarshalError("; ".join(errors))


_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{1,63}")


def strings_in(data: bytes) -> list[str]:
    """Fallback for code no layout parses: identifier-like strings in the raw bytes (order kept, unique)."""
    out: list[str] = []
    for m in _IDENT.finditer(data):
        s = m.group().decode()
        if s not in out:
            out.append(s)
        if len(out) >= 200:
            break
    return out


_B64 = re.compile(r"^[A-Za-z0-9+/=\s]{16,}$")


def decode_b64_source(text: str) -> str | None:
    """The text if ``text`` is base64 of printable Python-like source (some tools store lambdas so), else None."""
    compact = re.sub(r"\s", "", text)
    if len(compact) < 8 or len(compact) % 4 or not re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", compact):
        return None
    try:
        raw = base64.b64decode(text.replace("\n", "").replace(" ", ""), validate=False)
        src = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    printable = sum(ch.isprintable() or ch in "\n\t" for ch in src)
    return src if src and printable / len(src) > 0.95 and re.search(r"[A-Za-z_]\w*", src) else None


def decode_b64_code(text: str) -> bytes | None:
    """The bytes of ``text`` if it is base64 of a marshalled code object (Keras ``func_dump``), else None."""
    if len(text) < 16 or not _B64.match(text):
        return None
    try:
        raw = base64.b64decode(text.replace("\n", "").replace(" ", ""), validate=False)
    except (binascii.Error, ValueError):
        return None
    return raw if raw and (raw[0] & 0x7F) == ord("c") else None
