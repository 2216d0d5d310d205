"""A small, size-capped LZ4 frame decoder (the ``lz4`` package is not a dependency).

Standard library only and importable by file path: the static scan reads
``.lz4`` joblib streams with it, and the dynamic probe's sealed child (a
standalone script that imports nothing from the project) loads this same file
to decode them when the ``lz4`` package is absent. Frames follow one another;
every block is checked against its declared size and the output against ``limit``.
"""

from __future__ import annotations

MAGIC = b"\x04\x22\x4d\x18"


class TooLarge(MemoryError):
    """The decoded output would exceed the caller's limit."""


def decompress(data: bytes, limit: int = 1 << 31) -> bytes:
    """Every LZ4 frame of ``data`` decoded; ValueError for malformed input, TooLarge past ``limit`` bytes."""
    out = bytearray()
    i, n = 0, len(data)
    if n < 7 or data[:4] != MAGIC:
        raise ValueError("not an lz4 frame")
    while i + 7 <= n and data[i:i + 4] == MAGIC:
        flg = data[i + 4]
        i += 6 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0) + 1  # descriptor, content size, dict id, HC
        while True:
            if i + 4 > n:
                raise ValueError("truncated lz4 frame")
            size = int.from_bytes(data[i:i + 4], "little")
            i += 4
            if size == 0:
                break
            raw, size = bool(size & 0x80000000), size & 0x7FFFFFFF
            block = data[i:i + size]
            if len(block) != size:
                raise ValueError("truncated lz4 block")
            i += size + (4 if flg & 0x10 else 0)
            if raw:
                out += block
            else:
                _block(block, out, limit)
            if len(out) > limit:
                raise TooLarge("lz4 output too large")
        if flg & 0x04:
            i += 4  # content checksum
    return bytes(out)


def _length(src: bytes, j: int, base: int) -> tuple[int, int]:
    """An LZ4 length that continues in 255-valued bytes: (length, next index)."""
    if base != 15:
        return base, j
    while True:
        b = src[j]
        j += 1
        base += b
        if b != 255:
            return base, j


def _block(src: bytes, out: bytearray, limit: int) -> None:
    j, m = 0, len(src)
    while j < m:
        token = src[j]
        lit, j = _length(src, j + 1, token >> 4)
        out += src[j:j + lit]
        j += lit
        if j >= m:
            break
        off = src[j] | (src[j + 1] << 8)
        ml, j = _length(src, j + 2, token & 15)
        ml += 4
        start = len(out) - off
        if off == 0 or start < 0:
            raise ValueError("bad lz4 match offset")
        if len(out) + ml > limit:
            raise TooLarge("lz4 output too large")
        if off >= ml:
            out += out[start:start + ml]
        else:
            for k in range(ml):
                out.append(out[start + k])
