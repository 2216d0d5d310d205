"""A minimal protobuf wire-format reader over a buffer (bytes or mmap), for SavedModel, GraphDef and ONNX.

No schema compiler and no TensorFlow: messages are read field by field and
length-delimited payloads are returned as ``(start, end)`` spans into the same
buffer, so large tensor blobs are skipped without being copied. Malformed input
raises :class:`WireError`.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


class WireError(ValueError):
    """The bytes are not a valid protobuf message."""


def varint(buf, pos: int, end: int) -> tuple[int, int]:
    """(value, new position) of the varint at ``pos``."""
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def fields(buf, start: int, end: int) -> Iterator[tuple[int, int, object]]:
    """Yield ``(field number, wire type, value)``; LEN values are ``(a, b)`` spans, others ints."""
    pos = start
    while pos < end:
        key, pos = varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise WireError(f"field number 0 at offset {pos}")
        if wt == VARINT:
            v, pos = varint(buf, pos, end)
            yield num, wt, v
        elif wt == LEN:
            n, pos = varint(buf, pos, end)
            if pos + n > end:
                raise WireError(f"length-delimited field {num} runs past the end ({n} bytes at offset {pos})")
            yield num, wt, (pos, pos + n)
            pos += n
        elif wt == I64:
            if pos + 8 > end:
                raise WireError("truncated fixed64")
            yield num, wt, int.from_bytes(bytes(buf[pos:pos + 8]), "little")
            pos += 8
        elif wt == I32:
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            yield num, wt, int.from_bytes(bytes(buf[pos:pos + 4]), "little")
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wt} (field {num}) at offset {pos}")


def message(buf, span: tuple[int, int]) -> dict[int, list]:
    """All fields of one message: field number -> list of values (spans for LEN fields)."""
    out: dict[int, list] = {}
    for num, _wt, v in fields(buf, span[0], span[1]):
        out.setdefault(num, []).append(v)
    return out


def text(buf, span) -> str:
    """A LEN field as UTF-8 text (replacement characters for bad bytes)."""
    if not isinstance(span, tuple):
        raise WireError("expected a length-delimited string")
    return bytes(buf[span[0]:span[1]]).decode("utf-8", "replace")


def raw(buf, span) -> bytes:
    if not isinstance(span, tuple):
        raise WireError("expected a length-delimited field")
    return bytes(buf[span[0]:span[1]])


def ints(buf, values: list) -> list[int]:
    """A repeated integer field, packed (LEN spans) or not (ints)."""
    out: list[int] = []
    for v in values:
        if isinstance(v, tuple):
            pos, end = v
            while pos < end:
                x, pos = varint(buf, pos, end)
                out.append(x)
        else:
            out.append(int(v))
    return out


def signed(v: int) -> int:
    """A varint read as int64 (two's complement)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def first(msg: dict[int, list], num: int, default=None):
    vals = msg.get(num)
    return vals[0] if vals else default
