"""A ``pickletools.dis``-style listing of the opcodes around a finding, from the project's own opcode table.

Used by the TUI (Enter on a static-scan finding) and by anyone reading a report: the
bytes are decoded opcode by opcode with :data:`probes.static_scan.pickle_sim._OPS`
(names and argument kinds taken from ``pickletools``' table) - never executed, never
unpickled. :func:`finding_context` also fetches the bytes a finding points at (the file,
or a stored/deflated zip member, or a tar member) and, for non-pickle formats, returns
the offending config/graph node the scanner recorded.
"""

from __future__ import annotations

import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

from probes.static_scan import pickle_sim as ps

MAX_BYTES = 64 << 20


def _arg(buf: bytes, pos: int, kind: int) -> tuple[object, int]:  # noqa: C901 - one branch per argument kind
    """(decoded argument, position after it) for one opcode argument of ``kind``."""
    def need(n: int) -> None:
        if pos + n > len(buf):
            raise ValueError("truncated argument")

    if kind == ps.A_NONE:
        return None, pos
    fixed = {ps.A_U1: "<B", ps.A_U2: "<H", ps.A_I4: "<i", ps.A_U4: "<I", ps.A_U8: "<Q", ps.A_F8: ">d"}
    if kind in fixed:
        n = struct.calcsize(fixed[kind])
        need(n)
        return struct.unpack_from(fixed[kind], buf, pos)[0], pos + n
    if kind in (ps.A_LONG1, ps.A_LONG4):
        ln = 1 if kind == ps.A_LONG1 else 4
        need(ln)
        n = buf[pos] if ln == 1 else struct.unpack_from("<i", buf, pos)[0]
        need(ln + n)
        return int.from_bytes(buf[pos + ln:pos + ln + n], "little", signed=True), pos + ln + n
    sized = {ps.A_S1: 1, ps.A_B1: 1, ps.A_U_1: 1, ps.A_S4: 4, ps.A_B4: 4, ps.A_U_4: 4, ps.A_B8: 8, ps.A_BA8: 8,
             ps.A_U_8: 8}
    if kind in sized:
        ln = sized[kind]
        need(ln)
        n = int.from_bytes(buf[pos:pos + ln], "little")
        need(ln + n)
        raw = buf[pos + ln:pos + ln + n]
        text = kind in (ps.A_U_1, ps.A_U_4, ps.A_U_8)
        return (raw.decode("utf-8", "replace") if text else raw), pos + ln + n
    # newline-terminated arguments (protocol 0/1)
    nl = buf.find(b"\n", pos)
    if nl < 0:
        raise ValueError("argument without newline")
    line = buf[pos:nl].decode("latin-1")
    if kind == ps.A_LINE_PAIR:
        nl2 = buf.find(b"\n", nl + 1)
        if nl2 < 0:
            raise ValueError("GLOBAL without second line")
        return f"{line} {buf[nl + 1:nl2].decode('latin-1')}", nl2 + 1
    return line, nl + 1


def listing(buf: bytes, at: int, *, before: int = 12, after: int = 12, start: int = 0) -> list[str]:
    """Lines ``offset: OPCODE arg`` for the opcodes around offset ``at`` (walked from ``start``, across STOPs)."""
    pos, target_line = start, None
    lines: list[str] = []
    while pos < len(buf) and len(lines) < 2_000_000:
        op = ps._OPS.get(buf[pos])
        if op is None:
            lines.append(f"{pos:>8}: <byte {buf[pos]:#04x}: not an opcode; listing stops>")
            break
        name, kind = op
        try:
            arg, nxt = _arg(buf, pos + 1, kind)
        except (ValueError, struct.error, IndexError) as exc:
            lines.append(f"{pos:>8}: {name:<16} <{exc}>")
            break
        shown = "" if arg is None else repr(arg if not isinstance(arg, bytes) or len(arg) <= 48 else arg[:48] + b"...")
        mark = "=>" if pos == at or (target_line is None and pos > at) else "  "
        if mark == "=>":
            target_line = len(lines)
        lines.append(f"{mark}{pos:>6}: {name:<16} {shown}")
        pos = nxt
        if target_line is not None and len(lines) > target_line + after:
            break
    if target_line is None:
        return lines[-before:] + [f"(offset {at} is past the last opcode read)"]
    return lines[max(0, target_line - before):target_line + after + 1]


def _member_bytes(path: Path, member: str) -> bytes | None:
    """The bytes of ``member`` (one level: zip or tar member) without extracting anything to disk."""
    if "!" in member:
        return None  # nested archive members: not re-read here
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(member)
            if info.file_size > MAX_BYTES:
                return None
            with open(path, "rb") as fh:
                fh.seek(info.header_offset + 26)
                nlen, xlen = struct.unpack("<HH", fh.read(4))
                fh.seek(info.header_offset + 30 + nlen + xlen)
                raw = fh.read(info.compress_size)
            if info.compress_type == zipfile.ZIP_STORED:
                return raw
            if info.compress_type == zipfile.ZIP_DEFLATED:
                return zlib.decompressobj(-15).decompress(raw, MAX_BYTES)
            return None
    if tarfile.is_tarfile(path):
        with tarfile.open(path, "r:") as tf:
            m = tf.getmember(member)
            if not m.isfile() or m.size > MAX_BYTES:
                return None
            with open(path, "rb") as fh:
                fh.seek(m.offset_data)
                return fh.read(m.size)
    return None


def finding_context(finding: dict) -> str:
    """What Enter on a finding shows: the opcodes around it (pickles) or the offending node (other formats)."""
    head = [f"{finding.get('severity', '?')} · {finding.get('rule', '?')}",
            f"file {finding.get('file')}" + (f"  member {finding['member']}" if finding.get("member") else ""),
            f"offset {finding.get('offset')}  opcode {finding.get('opcode')}  target "
            + ".".join(x for x in (finding.get("module"), finding.get("name")) if x),
            "", str(finding.get("explanation") or ""), ""]
    if finding.get("node") is not None or finding.get("where"):
        head += [f"at {finding.get('where') or '?'}", "", str(finding.get("node") or "")]
        return "\n".join(head)
    off, opcode = finding.get("offset"), finding.get("opcode")
    if off is None or not opcode or opcode not in {n for n, _ in ps._OPS.values()}:
        return "\n".join(head + ["(no opcode listing for this finding)"])
    try:
        path = Path(finding["file"])
        if finding.get("member"):
            data = _member_bytes(path, finding["member"])
        elif path.stat().st_size <= MAX_BYTES:
            data = path.read_bytes()
        else:
            with open(path, "rb") as fh:
                start = max(0, int(off) - (1 << 20))
                fh.seek(start)
                data = fh.read(2 << 20)
            return "\n".join(head + ["opcodes (read, never executed; listing starts 1 MiB before):"]
                             + listing(data, int(off) - start, start=0))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, tarfile.TarError) as exc:
        return "\n".join(head + [f"(bytes not readable now: {exc})"])
    if data is None:
        return "\n".join(head + ["(member bytes not readable here: nested or compressed archive member)"])
    return "\n".join(head + ["opcodes (read, never executed):"] + listing(data, int(off)))
