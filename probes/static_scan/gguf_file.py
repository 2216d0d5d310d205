"""GGUF files (llama.cpp): header, metadata and tensor table read in place; tensor data is never touched.

Checked: the header counts and every length against the file size (a malformed
header is inconclusive, never clean), tensor extents within the file, and every
``tokenizer.chat_template*`` value with :mod:`probes.static_scan.chat_template`
(the template a runtime renders with Jinja for each prompt).
"""

from __future__ import annotations

import struct
from typing import Any

from probes.static_scan import chat_template, finding

MAGIC = b"GGUF"
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# ggml type -> (block size, bytes per block), as gguf.constants.GGML_QUANT_SIZES lists them
GGML_SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
              10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
              16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
              22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
              29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18)}
MAX_KV = 1 << 20
MAX_TENSORS = 1 << 22


class GGUFError(ValueError):
    """The GGUF header is malformed."""


class _R:
    def __init__(self, buf, pos: int, end: int):
        self.buf, self.pos, self.end = buf, pos, end

    def unpack(self, fmt: str):
        n = struct.calcsize(fmt)
        if self.pos + n > self.end:
            raise GGUFError(f"header runs past the end of the file at offset {self.pos}")
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def string(self) -> tuple[str, int]:
        n = self.unpack("<Q")
        if self.pos + n > self.end:
            raise GGUFError(f"string of {n} bytes at offset {self.pos} runs past the end of the file")
        at = self.pos
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", "replace")
        self.pos += n
        return s, at

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()[0]
        if vtype == _ARRAY:
            itype = self.unpack("<I")
            count = self.unpack("<Q")
            if count > self.end - self.pos:
                raise GGUFError(f"array of {count} items at offset {self.pos} is larger than the file")
            if itype in _SCALAR:  # skip fixed-size items without reading them
                size = struct.calcsize(_SCALAR[itype]) * count
                if self.pos + size > self.end:
                    raise GGUFError("array runs past the end of the file")
                self.pos += size
                return f"<{count} items>"
            out: list[Any] = []
            for _ in range(count):
                v = self.value(itype, keep)
                if keep and len(out) < 16:
                    out.append(v)
            return out
        raise GGUFError(f"unknown metadata value type {vtype} at offset {self.pos}")


def scan(sc: Any, loc: Any, buf, start: int, end: int) -> None:
    finding.set_format(sc, loc, "gguf")
    try:
        _scan(sc, loc, buf, start, end)
    except (GGUFError, struct.error) as exc:
        sc.fail(loc, f"malformed GGUF header: {exc}")


def _scan(sc: Any, loc: Any, buf, start: int, end: int) -> None:  # noqa: C901 - header, metadata, tensor table in file order
    r = _R(buf, start + 4, end)
    version = r.unpack("<I")
    if version not in (1, 2, 3):
        raise GGUFError(f"unknown GGUF version {version}")
    if version == 1:
        raise GGUFError("GGUF version 1 (32-bit counts) is not read")
    n_tensors = r.unpack("<Q")
    n_kv = r.unpack("<Q")
    if n_kv > MAX_KV or n_tensors > MAX_TENSORS:
        raise GGUFError(f"implausible counts ({n_tensors} tensors, {n_kv} metadata keys)")
    alignment = 32
    keys: set[str] = set()
    for _ in range(n_kv):
        key, _at = r.string()
        if key in keys:
            finding.add(sc, loc, "medium", "gguf-structure", f"metadata key {key!r} occurs twice; readers disagree "
                        "on which value they use", offset=_at - loc.base, where=key)
        keys.add(key)
        vtype = r.unpack("<I")
        at = r.pos
        keep = key.startswith("tokenizer.chat_template") or key == "general.alignment"
        v = r.value(vtype, keep)
        if key == "general.alignment" and isinstance(v, int):
            if v <= 0 or v & (v - 1):
                finding.add(sc, loc, "medium", "gguf-structure", f"general.alignment {v} is not a power of two",
                            offset=at - loc.base, where=key)
            else:
                alignment = v
        elif key.startswith("tokenizer.chat_template"):
            if isinstance(v, str):
                chat_template.check(sc, loc, v, f"GGUF metadata {key}", offset=at - loc.base)
            else:
                sc.fail(loc, f"GGUF metadata {key} is not a string")
    spans = []
    for _ in range(n_tensors):
        name, at = r.string()
        n_dims = r.unpack("<I")
        if n_dims > 8:
            raise GGUFError(f"tensor {name!r} has {n_dims} dimensions")
        dims = [r.unpack("<Q") for _ in range(n_dims)]
        ttype = r.unpack("<I")
        off = r.unpack("<Q")
        n = 1
        for d in dims:
            n *= d
        bs = GGML_SIZES.get(ttype)
        if bs is None:
            finding.add(sc, loc, "low", "gguf-structure", f"tensor {name!r} has unknown ggml type {ttype}",
                        offset=at - loc.base, where=f"tensor {name}")
            continue
        spans.append((off, off + (n // bs[0]) * bs[1], name, at))
    data_start = (r.pos - start + alignment - 1) // alignment * alignment + start
    size = end - data_start
    last = 0
    for a, b, name, at in spans:
        last = max(last, b)
        if b > size:
            finding.add(sc, loc, "medium", "gguf-structure",
                        f"tensor {name!r} spans bytes {a}-{b} of the data section, past its end ({size} bytes)",
                        offset=at - loc.base, where=f"tensor {name}")
    tail = data_start + last if spans else r.pos
    while tail < end and tail - (data_start + last if spans else r.pos) < alignment and buf[tail] == 0:
        tail += 1  # alignment padding
    if tail < end:
        _trailing(sc, loc, buf, tail, end)


def _trailing(sc: Any, loc: Any, buf, pos: int, end: int) -> None:
    """Bytes after the last tensor: no GGUF reader uses them; an appended zip/pickle is a polyglot."""
    if bytes(buf[pos:pos + 4]) == b"PK\x03\x04":
        from probes.static_scan.scanner import Loc

        finding.add(sc, loc, "medium", "trailing-data", f"a zip archive is appended after the GGUF tensor data at "
                    f"offset {pos - loc.base}: a zip reader (torch.load, numpy) opens this file as that archive",
                    offset=pos - loc.base)
        data = bytes(buf[pos:end])
        sub = Loc(loc.file, f"{loc.member + '!' if loc.member else ''}(appended zip @{pos - loc.base})", 0)
        sc.scan_zip(data, 0, len(data), sub, "zip", nested=True)
        return
    sc._trailing(buf, pos, end, loc, "after the GGUF tensor data")
