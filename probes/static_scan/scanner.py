"""Container walkers: find every pickle in a file or folder and feed it to the simulator.

Formats are taken from :func:`probes.formats.detect` (content, not extension).
Files are memory-mapped and stored archive members are read in place, so a
multi-GB checkpoint costs its pickle part plus a central-directory walk.
Nothing is extracted, imported or unpickled.
"""

from __future__ import annotations

import ast
import bz2
import errno
import json
import lzma
import mmap
import os
import pickletools
import re
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes import formats
from probes.errors import ProbeError
from probes.progress import check_cancel
from probes.static_scan import archives, other_formats, policy
from probes.static_scan.pickle_sim import PickleParseError, PickleSim, SGlobal, SList, looks_like_pickle
from vocabulary import Severity

SEVERITY_RANK = {s.value: s.rank for s in Severity}
DEFAULT_MAX_DECOMPRESSED = 1 << 30  # bomb guard for compressed joblib streams / deflated members
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
TORCHSCRIPT_ALLOW = ("__torch__.", "torch.jit._pickle.")
_SAFETENSORS_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16,
                     "I8": 8, "U64": 64, "U32": 32, "U16": 16, "U8": 8, "BOOL": 8, "F8_E4M3": 8,
                     "F8_E5M2": 8, "F8_E8M0": 8, "C64": 64, "C128": 128, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
_HUNT_RE = re.compile(rb"\x80[\x02-\x05]|c[A-Za-z_][\w.]{0,80}\n[A-Za-z_][\w.]{0,80}\n|\x8c[\x01-\x40][A-Za-z_]")
_OPCODE_BYTES = frozenset(op.code.encode("latin-1")[0] for op in pickletools.opcodes) - {0x2E}
_TEXT_EXT_HINT = re.compile(rb"[\x00-\x08\x0e-\x1f]")


@dataclass
class Loc:
    file: str
    member: str | None = None
    base: int = 0  # position in the buffer that is offset 0 of the file/member
    allow_prefixes: tuple = ()


@dataclass
class FileRecord:
    file: str
    format: str
    size: int = 0
    pickles: int = 0
    pickle_bytes: int = 0
    status: str = "scanned"  # scanned | inconclusive | skipped
    note: str = ""


@dataclass
class Scanner:
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
    crc_limit: int = 64 << 20  # CRC-check every member of archives up to this size; above, pickles only
    progress: Any = None
    cancel: Any = None
    findings: list = field(default_factory=list)
    inconclusive: list = field(default_factory=list)
    records: list = field(default_factory=list)
    pickles: int = 0
    pickle_bytes: int = 0
    opcodes: int = 0
    bytes_total: int = 0
    max_total_decompressed: int = 2 * DEFAULT_MAX_DECOMPRESSED  # over all members/streams of one file
    max_seconds: float | None = None
    max_files: int = 100_000
    deadline: float | None = None
    not_read: list = field(default_factory=list)
    _rec: FileRecord | None = None
    _inflated: int = 0  # decompressed bytes read for the current file

    # ------------------------------------------------------------ bookkeeping
    def add(self, loc: Loc, offset: int | None, opcode: str | None, module: str | None, name: str | None,
            severity: str, rule: str, explanation: str) -> None:
        self.findings.append({"file": loc.file, "member": loc.member, "offset": offset, "opcode": opcode,
                              "module": module, "name": name, "severity": severity, "rule": rule,
                              "explanation": explanation})

    def _emitter(self, loc: Loc, sink: list | None = None):
        def emit(f: dict) -> None:
            f = {"file": loc.file, "member": loc.member, **f}
            (sink if sink is not None else self.findings).append(f)
        return emit

    def fail(self, loc: Loc, reason: str) -> None:
        self.inconclusive.append({"file": loc.file, "member": loc.member, "reason": reason})
        if self._rec is not None:
            self._rec.status = "inconclusive"

    # ------------------------------------------------------------ entry points
    def _budget_spent(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def _not_read(self, loc: Loc, reason: str, *, inconclusive: bool = True) -> None:
        self.not_read.append({"file": loc.file, "member": loc.member, "reason": reason})
        if inconclusive:
            self.fail(loc, f"not fully read: {reason}")

    def _walk(self, path: Path) -> tuple[list[Path], int]:
        """Files under ``path`` (sorted, ``.git`` skipped, symlinked folders not entered), at most ``max_files``;
        and how many more there were."""
        files: list[Path] = []
        more = 0
        for root, dirs, names in os.walk(path, followlinks=False):
            for d in dirs:
                if os.path.islink(os.path.join(root, d)):
                    link = os.path.join(root, d)
                    self.add(Loc(link), None, None, None, None, "low", "symlink-folder",
                             f"symlinked folder to {os.path.realpath(link)} not entered (a loader may follow it)")
            dirs[:] = sorted(d for d in dirs if d != ".git" and not os.path.islink(os.path.join(root, d)))
            for n in sorted(names):
                if len(files) < self.max_files:
                    files.append(Path(root) / n)
                else:
                    more += 1
        return files, more

    def scan_path(self, path: Path) -> None:  # noqa: C901 - one branch per kind of folder entry that is not read
        if self.max_seconds is not None and self.deadline is None:
            self.deadline = time.monotonic() + self.max_seconds
        if not os.path.lexists(path):
            raise ProbeError(f"no such file or folder: {path}")
        if path.is_dir():
            files, more = self._walk(path)
            root_real = os.path.realpath(path)
            for i, f in enumerate(files):
                check_cancel(self.cancel)
                if self._budget_spent():
                    self._not_read(Loc(str(path)), f"time budget of {self.max_seconds:g} s spent; {len(files) - i} "
                                                   f"file(s) from {f.relative_to(path)} on not scanned")
                    break
                if self.progress and (i < 1000 or not i % 1000):
                    self.progress(i, len(files), f"scanning {f.relative_to(path)}")
                if f.is_symlink():
                    target = os.path.realpath(f)
                    try:
                        st = os.stat(f)
                    except OSError as exc:
                        what = "a symlink loop" if exc.errno == errno.ELOOP else f"a dangling symlink ({exc.strerror})"
                        self.add(Loc(str(f)), None, None, None, None, "low", "symlink-unresolved",
                                 f"{what} to {os.readlink(f)!r}; not followed")
                        continue
                    if not target.startswith(root_real + os.sep):
                        self.add(Loc(str(f)), None, None, None, None, "medium", "symlink-outside",
                                 f"symlink points outside the model folder to {target}; not followed")
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        continue
                self.scan_file(f, in_folder=True)
            if more:
                self._not_read(Loc(str(path)), f"folder holds more than {self.max_files} files; {more} not scanned")
            if self.progress:
                self.progress(len(files), len(files), "done")
        else:
            if self.progress:
                self.progress(0, 1, f"scanning {path.name}")
            self.scan_file(path, in_folder=False)
            if self.progress:
                self.progress(1, 1, "done")

    def scan_file(self, path: Path, *, in_folder: bool) -> None:
        loc = Loc(str(path))
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                rec = FileRecord(str(path), "special", 0, status="skipped", note="not a regular file")
                self.records.append(rec)
                self._rec = rec
                kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if (
                    stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) else "a socket" if stat.S_ISSOCK(
                    st.st_mode) else "not a regular file"
                self.add(loc, None, None, None, None, "low", "not-regular-file",
                         f"{kind}, not a regular file: not read (a loader reading it could block or get any data)")
                self._not_read(loc, f"{kind}, not a regular file", inconclusive=not in_folder)
                return
            size = st.st_size
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            fh = os.fdopen(fd, "rb")
        except OSError as exc:
            rec = FileRecord(str(path), formats.UNKNOWN)
            self.records.append(rec)
            self._rec = rec
            self.fail(loc, f"unreadable: {exc.strerror or exc}")
            return
        with fh:
            try:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # swapped for something else after the stat
                    raise OSError("not a regular file")
                small = size <= _SMALL_FILE
                data = fh.read() if small else fh.read(4)
                fmt = _quick_format(data[:16], size)
                if fmt is None:
                    fmt = formats.detect_file(path)
            except OSError as exc:
                rec = FileRecord(str(path), formats.UNKNOWN)
                self.records.append(rec)
                self._rec = rec
                self.fail(loc, f"unreadable: {getattr(exc, 'strerror', None) or exc}")
                return
            self._scan_open(fh, path, loc, size, fmt, in_folder, data if small else None)

    def _scan_open(self, fh, path: Path, loc: Loc, size: int, fmt: str, in_folder: bool, data: bytes | None) -> None:
        rec = FileRecord(str(path), fmt, size)
        self.records.append(rec)
        self._rec = rec
        self.bytes_total += size
        self._inflated = 0
        if fmt == formats.EMPTY:
            if not in_folder:
                self.fail(loc, "empty file")
            rec.status = "skipped" if in_folder else rec.status
            return
        if self._budget_spent():
            self._not_read(loc, f"time budget of {self.max_seconds:g} s spent before this file")
            return
        try:
            if data is not None and len(data) == size:  # small files: one read, no mapping
                self._dispatch(data, 0, size, loc, fmt, in_folder=in_folder, path=path)
                return
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                self._dispatch(mm, 0, size, loc, fmt, in_folder=in_folder, path=path)
        except (OSError, ValueError) as exc:
            self.fail(loc, f"could not read: {exc}")

    # ------------------------------------------------------------ dispatch
    def _dispatch(self, buf, start: int, end: int, loc: Loc, fmt: str, *, in_folder: bool, path: Path | None = None) -> None:
        if fmt in (formats.TORCH_ZIP, formats.TORCHSCRIPT, formats.NPZ, formats.ZIP):
            self.scan_zip(buf, start, end, loc, fmt)
        elif fmt == formats.TORCH_LEGACY:
            self.scan_torch_legacy(buf, start, end, loc)
        elif fmt == formats.NUMPY:
            self.scan_npy(buf, start, end, loc)
        elif fmt == formats.SAFETENSORS:
            self.scan_safetensors(buf, start, end, loc)
        elif fmt == formats.JOBLIB_COMPRESSED:
            self.scan_compressed(buf, start, end, loc)
        elif fmt == formats.TORCH_TAR and path is not None:
            self.scan_torch_tar(path, buf, loc)
        elif fmt == formats.PICKLE:
            self.scan_pickle_file(buf, start, end, loc, in_folder=in_folder)
        elif fmt == formats.GGUF and self._headerless_pickle(buf, start, end, loc):
            # 'GGUF' is also a BINFLOAT opcode: bytes that walk as a pickle are read as the pickle a loader would run
            if self._rec:
                self._rec.format = formats.PICKLE
            self.scan_pickle_file(buf, start, end, loc, in_folder=in_folder)
        elif fmt in formats.OTHER_MODEL_FORMATS:
            other_formats.scan_format(self, buf, start, end, loc, fmt, path)
        else:  # UNKNOWN, or a tar that is not torch's
            self.scan_unknown(buf, start, end, loc, in_folder=in_folder, path=path)

    def scan_unknown(self, buf, start: int, end: int, loc: Loc, *, in_folder: bool, path: Path | None) -> None:
        head = bytes(buf[start:min(end, start + 8192)])
        codec = _compression(head)
        if codec:
            return self.scan_compressed(buf, start, end, loc)
        # a pickle first, whatever its magic: 'GGUF' is also a BINFLOAT opcode, and a loader picks files by name
        if looks_like_pickle(buf, start, end) or self._headerless_pickle(buf, start, end, loc):
            if self._rec and self._rec.format == formats.UNKNOWN:
                self._rec.format = formats.PICKLE
            return self.scan_pickle_file(buf, start, end, loc, in_folder=in_folder)
        inert = _inert_format(Path(loc.file).name, head)
        if inert and in_folder:
            # formats whose parsers run no Python code (the loader decides whether to use them)
            if self._rec:
                self._rec.format = inert
            return
        side = other_formats.side_file(self, Path(loc.file), head) if in_folder and loc.member is None else None
        if side:  # raw tensor data another model file of the folder points at: no parser runs code on it
            if self._rec:
                self._rec.format = side
            self.hunt(buf, start, end, loc, f"{side} file")
            return
        if _is_text(head):
            if self._rec:
                self._rec.format = "text"
            name = Path(loc.file).name
            if in_folder and name.endswith(".py"):
                self.add(loc, None, None, None, None, "medium", "remote-code",
                         "Python source in a model folder: loading with trust_remote_code would run it")
            if in_folder and name == "config.json":
                self._check_hf_config(buf, start, end, loc)
            known = other_formats.check_text(self, buf, start, end, loc, name, in_folder=in_folder)
            hidden = self.hunt(buf, start, end, loc, "text file")
            if not hidden and not in_folder and not known:
                self.fail(loc, "text file, not a model format")
            return
        self.fail(loc, "unknown binary format (not pickle, zip, safetensors, numpy, joblib or torch)")

    def _headerless_pickle(self, buf, start: int, end: int, loc: Loc) -> bool:
        """Protocol 0/1 pickles have no PROTO header: recognised by content, when the bytes walk as opcodes to the
        end of the file, or run a dangerous call before failing (the unpickler executes as it reads). Real GGUF,
        PNG or sentencepiece files fail within a few opcodes."""
        if buf[start] not in _OPCODE_BYTES:
            return False
        pos = start
        for _ in range(64):
            sink: list = []
            sim = PickleSim(buf, pos, end, emit=self._emitter(loc, sink), base=loc.base, max_ops=1 << 16,
                            deadline=self.deadline)
            try:
                pos = sim.run()
            except PickleParseError as exc:  # 65k valid opcodes in a row are a pickle too
                return exc.msg == "opcode budget exhausted" or any(f["severity"] in ("critical", "high") for f in sink)
            except RecursionError:
                return False
            if pos >= end:
                return True
        return False

    def _check_hf_config(self, buf, start: int, end: int, loc: Loc) -> None:
        try:
            cfg = json.loads(bytes(buf[start:end]).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(cfg, dict) and cfg.get("auto_map"):
            self.add(loc, None, None, None, None, "medium", "remote-code",
                     f"config.json auto_map names custom code {cfg['auto_map']!r} (runs only with trust_remote_code)")

    # ------------------------------------------------------------ pickles
    def _nested_cb(self, loc: Loc):
        def nested(buf, a: int, b: int, pos: int, what: str, depth: int, inplace: bool = True) -> None:
            if not inplace:  # bytes decoded from a constant: offsets are inside those bytes
                sub = Loc(loc.file, _sub(loc.member, f"bytes@{pos - loc.base}"), 0, loc.allow_prefixes)
                return self._nested_cb(sub)(buf, a, b, pos, what, depth, True)
            if bytes(buf[a:a + 4]) == b"PK\x03\x04":
                data = bytes(buf[a:b])
                sub = Loc(loc.file, _sub(loc.member, f"bytes@{pos - loc.base}"), 0, loc.allow_prefixes)
                self.scan_zip(data, 0, len(data), sub, formats.ZIP, nested=True)
                return
            if not looks_like_pickle(buf, a, b):
                return
            sink: list = []
            sim = PickleSim(buf, a, b, emit=self._emitter(loc, sink), base=loc.base, nested=nested, depth=depth,
                            context=f"pickle nested in a {what} at offset {pos - loc.base}", cancel=self.cancel,
                            deadline=self.deadline)
            self._allow(sim, loc)
            try:
                sim.run()
                ok = True
            except PickleParseError:
                ok = False
            if ok or any(f["severity"] in ("critical", "high") for f in sink):
                self.findings.extend(sink)
                self.pickles += 1
                self.opcodes += sim.n_ops
        return nested

    def _allow(self, sim: PickleSim, loc: Loc) -> None:
        if loc.allow_prefixes:
            for g_pref in loc.allow_prefixes:
                sim_allow(sim, g_pref)

    def run_pickle(self, buf, start: int, end: int, loc: Loc, *, context: str = "") -> tuple[PickleSim, int | None, str | None]:
        """Walk one pickle; (sim, end position or None, error)."""
        sim = PickleSim(buf, start, end, emit=self._emitter(loc), base=loc.base, nested=self._nested_cb(loc),
                        context=context, cancel=self.cancel, deadline=self.deadline)
        self._allow(sim, loc)
        try:
            newpos = sim.run()
        except PickleParseError as exc:
            self.opcodes += sim.n_ops
            self._frame_readings(buf, end, loc, sim)
            return sim, None, f"{exc.msg} at offset {exc.pos - loc.base}"
        except RecursionError:
            return sim, None, "nesting too deep"
        self._frame_readings(buf, end, loc, sim)
        if sim.persids:
            self._check_storages(sim, loc)
        if sim.arrays_skipped:
            self._plain_reading(buf, start, end, loc, context)
        self.pickles += 1
        self.opcodes += sim.n_ops
        n = (newpos - start) - sim.skipped_bytes
        self.pickle_bytes += n
        if self._rec is not None:
            self._rec.pickles += 1
            self._rec.pickle_bytes += n
        return sim, newpos, None

    def _check_storages(self, sim: PickleSim, loc: Loc) -> None:
        """torch allocates each storage from its declared element count before reading it (legacy format):
        a count far beyond the file's size is a memory bomb."""
        size = self._rec.size if self._rec is not None else 0
        for pid in sim.persids[:100_000]:
            if not (type(pid) is tuple and len(pid) >= 5 and pid[0] == "storage" and type(pid[4]) is int):
                continue
            st = pid[1]
            esize = policy.STORAGE_ELEMENT_SIZES.get(st.name, 1) if isinstance(st, SGlobal) else 1
            nbytes = pid[4] * esize
            if nbytes >= policy.HUGE_BYTES and nbytes > 4 * size:
                self.add(loc, None, "BINPERSID", "torch", "UntypedStorage", "high", "resource-exhaustion",
                         f"storage {pid[2]!r} declares {pid[4]:,} elements ({nbytes / (1 << 30):.1f} GiB) in a "
                         f"{size:,}-byte file: torch allocates it before reading (memory bomb)")

    def _frame_readings(self, buf, end: int, loc: Loc, sim: PickleSim) -> None:
        """Where FRAME lengths disagree with the opcodes, readers differ: the C unpickler reads opcodes straight
        on (the reading already walked), the pure-Python one stops at the inconsistency, a frame-respecting reader
        restarts at the frame end. Report each divergence and walk the reading from the frame end too."""
        seen = {(f["offset"], f["module"], f["name"]) for f in self.findings if f["file"] == loc.file
                and f["member"] == loc.member}
        budget = 1 << 22  # opcodes over all alternative readings of this pickle
        for opos, resync, why in sim.frame_issues:
            self.add(loc, opos - loc.base, "FRAME", None, None, "medium", "frame-divergence", why)
            if resync is None or resync >= end or budget <= 0:
                continue
            sink: list = []
            alt = PickleSim(buf, resync, end, emit=self._emitter(loc, sink), base=loc.base, nested=self._nested_cb(loc),
                            context=f"read from the frame end at offset {resync - loc.base} (frame-respecting reader)",
                            max_ops=budget, cancel=self.cancel, deadline=self.deadline)
            self._allow(alt, loc)
            try:
                alt.run()
            except (PickleParseError, RecursionError):
                pass
            self.opcodes += alt.n_ops
            budget -= alt.n_ops
            for f in sink:
                if f["severity"] in ("critical", "high") and (f["offset"], f["module"], f["name"]) not in seen:
                    self.findings.append(f)

    def _plain_reading(self, buf, start: int, end: int, loc: Loc, context: str) -> None:
        """The bytes joblib reads as inline arrays are opcodes to a plain ``pickle.load``: walk them that way
        too and keep what is dangerous there (only critical names: raw array data is noise otherwise)."""
        sink: list = []
        sim = PickleSim(buf, start, end, emit=self._emitter(loc, sink), base=loc.base, nested=None,
                        context="read with plain pickle.load instead of joblib" + (f", {context}" if context else ""),
                        joblib_arrays=False, cancel=self.cancel, deadline=self.deadline)
        try:
            sim.run()
        except PickleParseError as exc:
            if "time budget" in exc.msg:
                self._not_read(loc, "time budget spent in the plain pickle.load reading of a joblib file")
        except RecursionError:
            pass
        seen = {(f["offset"], f["module"], f["name"]) for f in self.findings if f["file"] == loc.file and f["member"] == loc.member}
        for f in sink:
            if f["severity"] == "critical" and (f["offset"], f["module"], f["name"]) not in seen:
                self.findings.append(f)

    def scan_pickle_stream(self, buf, start: int, end: int, loc: Loc, *, what: str = "pickle",
                           max_pickles: int | None = None) -> tuple[list[PickleSim], int, str | None]:
        """Every pickle from ``start`` on, concatenated; stops at the first non-pickle byte."""
        sims: list[PickleSim] = []
        pos = start
        while pos < end and (max_pickles is None or len(sims) < max_pickles):
            check_cancel(self.cancel)
            ctx = "" if not sims else f"pickle #{len(sims) + 1} in the stream (after the first STOP)"
            sim, newpos, err = self.run_pickle(buf, pos, end, loc, context=ctx)
            if err is not None:
                return sims, pos, err if sims == [] else f"bytes after pickle #{len(sims)} are not a pickle: {err}"
            sims.append(sim)
            pos = newpos
        return sims, pos, None

    def scan_pickle_file(self, buf, start: int, end: int, loc: Loc, *, in_folder: bool) -> None:
        n_before = len(self.findings)
        sims, pos, err = self.scan_pickle_stream(buf, start, end, loc)
        if not sims:
            head = bytes(buf[start:min(end, start + 8192)])
            if len(self.findings) == n_before and _compression(head):
                return self.scan_compressed(buf, start, end, loc)
            if len(self.findings) == n_before and _is_text(head):
                # protocol-0 opcodes are printable, so a text file can look like a pickle start
                return self.scan_unknown_text(buf, start, end, loc, in_folder=in_folder)
            self.fail(loc, f"not a complete pickle: {err}")
            return
        if pos < end:
            self._trailing(buf, pos, end, loc, "after the last pickle in the stream")

    def scan_unknown_text(self, buf, start, end, loc, *, in_folder: bool) -> None:
        if self._rec:
            self._rec.format = "text"
        if in_folder and loc.file.endswith(".py"):
            self.add(loc, None, None, None, None, "medium", "remote-code",
                     "Python source in a model folder: loading with trust_remote_code would run it")
        known = other_formats.check_text(self, buf, start, end, loc, Path(loc.file).name, in_folder=in_folder)
        hidden = self.hunt(buf, start, end, loc, "text file")
        if not hidden and not in_folder and not known:
            self.fail(loc, "text file, not a model format")

    def _trailing(self, buf, pos: int, end: int, loc: Loc, where: str) -> None:
        self.add(loc, pos - loc.base, None, None, None, "low", "trailing-data",
                 f"{end - pos} bytes {where} that no loader reads; checked for hidden pickles")
        self.hunt(buf, pos, end, loc, f"trailing data {where}")

    def hunt(self, buf, start: int, end: int, loc: Loc, what: str, *, limit: int = 64 << 20) -> int:
        """Look for complete pickles hidden inside opaque bytes; report what they would import."""
        found = 0
        tries = 0
        budget = 4_000_000  # opcodes over all candidates: bounded work on hostile trailing data
        stop = min(end, start + limit)
        pos = start
        for m in _HUNT_RE.finditer(buf, start, stop):
            a = m.start()
            if a < pos:
                continue
            tries += 1
            if tries > 2000:
                break
            if budget <= 0:
                self.add(loc, a - loc.base, None, None, None, "low", "hidden-pickle",
                         f"search for hidden pickles in {what} stopped at offset {a - loc.base} (work budget spent)")
                break
            if self._budget_spent():
                self._not_read(loc, f"time budget spent searching {what} for hidden pickles (at offset {a - loc.base})")
                break
            sink: list = []
            sim = PickleSim(buf, a, end, emit=self._emitter(loc, sink), base=loc.base, nested=self._nested_cb(loc),
                            context=f"hidden pickle in {what} at offset {a - loc.base}", max_ops=budget,
                            cancel=self.cancel, deadline=self.deadline)
            try:
                newpos = sim.run()
            except (PickleParseError, RecursionError):
                budget -= sim.n_ops
                if not any(f["severity"] == "critical" for f in sink):
                    continue
                newpos = a + 1
            else:
                budget -= sim.n_ops
            if not sim.globals and not sink:
                continue
            found += 1
            self.pickles += 1
            self.opcodes += sim.n_ops
            self.findings.extend(sink)
            self.add(loc, a - loc.base, None, None, None, "medium", "hidden-pickle",
                     f"a complete pickle hides in {what} at offset {a - loc.base}")
            pos = newpos
        return found

    # ------------------------------------------------------------ zip archives
    def scan_zip(self, buf, start: int, end: int, loc: Loc, fmt: str, *, nested: bool = False) -> None:  # noqa: C901 - the zip checks in the order torch reads an archive
        try:
            zf = zipfile.ZipFile(archives.SliceFile(buf, start, end))
            infos = zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, struct.error, EOFError, NotImplementedError) as exc:
            self.fail(loc, f"malformed zip archive: {exc}")
            return
        names = [i.filename for i in infos]
        if fmt == formats.ZIP and not nested:
            fmt = _classify_names(names)
            if self._rec is not None and loc.member is None:
                self._rec.format = fmt
        is_torch = fmt in (formats.TORCH_ZIP, formats.TORCHSCRIPT)
        prefix = names[0].split("/", 1)[0] + "/" if is_torch and names and "/" in names[0] else ""
        allow = TORCHSCRIPT_ALLOW if fmt == formats.TORCHSCRIPT else ()
        seen: dict[str, int] = {}
        small = (end - start) <= self.crc_limit
        for info in infos:
            check_cancel(self.cancel)
            name = info.filename
            mloc = Loc(loc.file, (f"{loc.member}!{name}" if loc.member else name), 0, allow)
            seen[name] = seen.get(name, 0) + 1
            if seen[name] == 2:
                self.add(mloc, info.header_offset, None, None, None, "medium", "archive-duplicate",
                         f"member name {name!r} occurs more than once; readers disagree on which copy they load")
            if _traversal(name):
                self.add(mloc, info.header_offset, None, None, None, "high", "archive-path-traversal",
                         f"member name {name!r} escapes the extraction directory (absolute path or '..')")
            rel = name[len(prefix):] if prefix and name.startswith(prefix) else None
            if is_torch and rel is None:
                self.add(mloc, info.header_offset, None, None, None, "low", "archive-prefix",
                         f"member {name!r} is outside the archive prefix {prefix!r} that torch reads; other tools may load it")
            kind = _torch_member_kind(rel) if is_torch and rel is not None else None
            # read the member in place (local header), like a zip reader would
            try:
                a, b, local_name = _member_span(buf, start, end, info)
            except ValueError as exc:
                self.add(mloc, info.header_offset, None, None, None, "medium", "archive-malformed", str(exc))
                self.fail(mloc, str(exc))
                continue
            if local_name != name.encode("utf-8") and local_name != name.encode("cp437", "replace"):
                self.add(mloc, info.header_offset, None, None, None, "medium", "archive-name-mismatch",
                         f"local header names {local_name[:80]!r} but the central directory says {name!r}")
            if is_torch and kind == "extra":
                self.add(mloc, info.header_offset, None, None, None, "low", "archive-extra-member",
                         f"member {name!r} is not part of torch's format; torch does not read it")
            if info.file_size >= _DECLARED_MIN and info.file_size > _DECLARED_RATIO * max(info.compress_size, 1):
                self.add(mloc, info.header_offset, None, None, None, "medium", "archive-declared-size",
                         f"member declares {info.file_size:,} bytes over {info.compress_size:,} stored bytes "
                         f"({info.file_size / max(info.compress_size, 1):,.0f}x): a zip-bomb pattern; read bounded")
            # content
            want_crc = small or kind in ("pickle", "meta", "extra") or not is_torch
            if info.flag_bits & 0x1:
                if not self._plaintext_under_flag(buf, a, b, info):
                    self.add(mloc, info.header_offset, None, None, None, "medium", "archive-encrypted",
                             "member has the encrypted flag set; its content cannot be checked")
                    if name.endswith(".pkl") or is_torch:
                        self.fail(mloc, "encrypted archive member")
                    continue
                self.add(mloc, info.header_offset, None, None, None, "medium", "archive-encrypted-flag",
                         "member has the encrypted flag set over plaintext data (its CRC matches): a lenient "
                         "reader may still load it; read and scanned as plaintext")
            if info.compress_type == zipfile.ZIP_STORED:
                mbuf, ma, mb = buf, a, b
                mloc.base = a
                if want_crc:
                    self._check_crc(mloc, info, _crc_mmap(buf, a, b) if isinstance(buf, mmap.mmap) else zlib.crc32(buf[a:b]))
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                if kind == "data" and not want_crc:
                    continue  # raw tensor bytes torch reads as storage: nothing to inflate
                got = self._inflate_member(buf, a, b, mloc, info, full=kind != "data")
                if got is None:
                    continue
                raw, crc, complete, total = got
                if want_crc and complete:
                    self._check_crc(mloc, info, crc)
                mbuf, ma, mb = raw, 0, len(raw)
                mloc.base = 0
                if complete and total > len(raw) and raw[:6] == b"\x93NUMPY":  # plain array: header kept only
                    self.scan_npy(raw, 0, len(raw), mloc, data_len=total)
                    continue
            else:
                self.add(mloc, info.header_offset, None, None, None, "medium", "archive-compression",
                         f"unusual compression method {info.compress_type}; content not checked")
                self.fail(mloc, f"unsupported compression method {info.compress_type}")
                continue
            self._scan_member(mbuf, ma, mb, mloc, kind, name, fmt)
        declared = sum(i.file_size for i in infos)
        if declared >= _DECLARED_MIN and declared > _DECLARED_RATIO * max(end - start, 1):
            self.add(loc, None, None, None, None, "medium", "archive-declared-size",
                     f"archive of {end - start:,} bytes declares {declared:,} bytes of content "
                     f"({declared / max(end - start, 1):,.0f}x): a zip-bomb pattern; read bounded")

    def _check_crc(self, mloc: Loc, info: zipfile.ZipInfo, crc: int) -> None:
        if crc != info.CRC:
            self.add(mloc, info.header_offset, None, None, None, "medium", "archive-crc",
                     f"CRC-32 mismatch (stored {info.CRC:08x}, actual {crc:08x}); strict readers refuse "
                     "the archive but lenient ones (torch) may load it")

    def _plaintext_under_flag(self, buf, a: int, b: int, info: zipfile.ZipInfo) -> bool:
        """Is a member whose encrypted flag is set really plaintext (its data matches the stored CRC)?"""
        if info.compress_type == zipfile.ZIP_STORED:
            if b - a > self.crc_limit:
                return False
            crc = _crc_mmap(buf, a, b) if isinstance(buf, mmap.mmap) else zlib.crc32(buf[a:b])
            return crc == info.CRC
        if info.compress_type == zipfile.ZIP_DEFLATED:
            crc, n = 0, 0
            try:
                for chunk in _inflate_iter(buf, a, b, min(self.max_decompressed, self.crc_limit)):
                    crc = zlib.crc32(chunk, crc)
                    n += len(chunk)
            except (_TooBig, zlib.error):
                return False
            return n == info.file_size and crc == info.CRC
        return False

    def _inflate_member(self, buf, a: int, b: int, mloc: Loc, info: zipfile.ZipInfo, *, full: bool):
        """Inflate a deflated member in chunks, within the per-member cap and the file's total budget.

        Returns (bytes kept, crc of everything inflated, inflated to the end?) or None (reported). Only what the
        scan needs is kept in memory: the whole member when it is (or may be) a pickle, archive or array, else its
        first 8 MiB (searched for hidden pickles); the rest is streamed for the CRC only."""
        budget = min(self.max_decompressed, self.max_total_decompressed - self._inflated)
        if budget <= 0:
            self._not_read(mloc, f"decompression budget of {self.max_total_decompressed >> 20} MiB for this file "
                                 "spent before this member")
            return None
        keep: list[bytes] = []
        kept = crc = n = 0
        need: int | None = None  # bytes to keep: None until the first chunk shows what the member is
        try:
            for chunk in _inflate_iter(buf, a, b, budget):
                if need is None:
                    head = chunk[:4096]
                    parseable = (head[:1] == b"\x80" or head.startswith(b"PK\x03\x04")
                                 or _compression(head) is not None or (head[:1] and head[0] in _OPCODE_BYTES))
                    need = budget if (full and parseable) or mloc.member and mloc.member.endswith(
                        (".pkl", ".debug_pkl")) else (_HUNT_KEEP if full else 0)
                    if full and head.startswith(b"\x93NUMPY"):
                        need = _npy_keep(head, budget)
                crc = zlib.crc32(chunk, crc)
                n += len(chunk)
                if kept < need:
                    part = chunk[:need - kept]
                    keep.append(part)
                    kept += len(part)
                if self._budget_spent():
                    self._not_read(mloc, f"time budget spent while inflating (after {n:,} bytes)")
                    break
            else:
                self._inflated += n
                return (keep[0] if len(keep) == 1 else b"".join(keep)), crc, True, n
        except _TooBig:
            self._inflated += n
            why = (f"deflated member inflates past the {budget >> 20} MiB "
                   + ("cap" if budget == self.max_decompressed else "left of this file's decompression budget"))
            self.add(mloc, info.header_offset, None, None, None, "medium", "decompression-cap", why + " (possible zip bomb)")
            self._not_read(mloc, why)
            return None
        except zlib.error as exc:
            self.fail(mloc, f"corrupt deflate data: {exc}")
            return None
        self._inflated += n
        return b"".join(keep), crc, False, n

    def _scan_member(self, buf, a: int, b: int, loc: Loc, kind: str | None, name: str, fmt: str) -> None:
        if kind == "data":
            return  # raw tensor bytes, read by torch as storage; never unpickled
        if kind is None and b > a and other_formats.scan_member(self, buf, a, b, loc, name, fmt):
            return
        if kind == "meta" or (kind == "code" and not name.endswith(".pkl")):
            head = bytes(buf[a:min(b, a + 4096)])
            if looks_like_pickle(buf, a, b) and not _is_text(head):
                self._scan_member_pickle(buf, a, b, loc)
            return
        if kind == "pickle" or name.endswith(".pkl") or name.endswith(".debug_pkl"):
            return self._scan_member_pickle(buf, a, b, loc)
        if b - a == 0:
            return
        head = bytes(buf[a:min(b, a + 4096)])
        if head.startswith(b"\x93NUMPY"):
            return self.scan_npy(buf, a, b, loc)
        if head.startswith(b"PK\x03\x04"):
            return self.scan_zip(bytes(buf[a:b]), 0, b - a, Loc(loc.file, loc.member, 0), formats.ZIP, nested=True)
        if _compression(head):
            return self.scan_compressed(buf, a, b, loc)
        if looks_like_pickle(buf, a, b) or (head[:1] and head[0] in formats._PICKLE_OPCODE_STARTS and not _is_text(head)):
            return self._scan_member_pickle(buf, a, b, loc)
        if fmt == formats.NPZ and name.endswith(".npy"):
            self.fail(loc, "npz member is not a .npy array")
            return
        if not _is_text(head):
            self.hunt(buf, a, b, loc, f"archive member {name}")

    def _scan_member_pickle(self, buf, a: int, b: int, loc: Loc) -> None:
        sims, pos, err = self.scan_pickle_stream(buf, a, b, loc)
        if not sims:
            self.fail(loc, f"archive member is not a complete pickle: {err}")
        elif pos < b:
            self._trailing(buf, pos, b, loc, "after the pickle in this member")

    # ------------------------------------------------------------ legacy torch
    def scan_torch_legacy(self, buf, start: int, end: int, loc: Loc) -> None:
        sims, pos, err = self.scan_pickle_stream(buf, start, end, loc, max_pickles=5)
        if len(sims) < 5:
            if not sims:
                self.fail(loc, f"legacy torch file whose first pickle is unreadable: {err}")
            elif err:
                self.fail(loc, f"legacy torch file with {len(sims)} of 5 pickles readable: {err}")
            return
        magic, proto = sims[0].value, sims[1].value
        if magic != TORCH_LEGACY_MAGIC or proto != 1001:
            self.add(loc, 0, None, None, None, "low", "legacy-header",
                     f"legacy torch header is unusual (magic {magic!r}, protocol {proto!r})")
        keys = sims[4].value
        sizes: dict[str, int] = {}
        for pid in sims[3].persids:
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage"):
                st, key = pid[1], pid[2]
                el = policy.STORAGE_ELEMENT_SIZES.get(st.name, None) if isinstance(st, SGlobal) else None
                if isinstance(key, bytes):
                    key = key.decode("utf-8", "replace")
                sizes[str(key)] = el or 0
        if not isinstance(keys, SList):
            self._trailing(buf, pos, end, loc, "after the legacy torch pickles (storage key list unreadable)")
            return
        for key in keys.items:
            key = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            el = sizes.get(key)
            if not el or pos + 8 > end:
                self._trailing(buf, pos, end, loc, f"where storage {key!r} should start (its type is unknown)")
                return
            (numel,) = struct.unpack_from("<q", buf, pos)
            if numel < 0 or pos + 8 + numel * el > end:
                self.add(loc, pos - loc.base, None, None, None, "low", "legacy-storage",
                         f"storage {key!r} claims {numel} elements, more than the file holds")
                self.hunt(buf, pos, end, loc, "legacy storage area")
                return
            pos += 8 + numel * el
        if pos < end:
            self._trailing(buf, pos, end, loc, "after the last legacy torch storage")

    def scan_torch_tar(self, path: Path, buf, loc: Loc) -> None:
        try:
            with tarfile.open(path, "r:") as tf:
                members = tf.getmembers()
        except (tarfile.TarError, OSError) as exc:
            self.fail(loc, f"malformed tar: {exc}")
            return
        for m in members:
            check_cancel(self.cancel)
            mloc = Loc(loc.file, m.name, m.offset_data)
            if _traversal(m.name) or m.issym() or m.islnk():
                self.add(mloc, m.offset, None, None, None, "high", "archive-path-traversal",
                         f"tar member {m.name!r} is a link or escapes the extraction directory")
            if not m.isfile():
                continue
            a, b = m.offset_data, m.offset_data + m.size
            if m.name in ("sys_info", "pickle"):
                self._scan_member_pickle(buf, a, b, mloc)
            elif m.name in ("storages", "tensors"):
                self._scan_tar_records(buf, a, b, mloc, m.name)
            else:
                self.add(mloc, m.offset, None, None, None, "low", "archive-extra-member",
                         f"tar member {m.name!r} is not part of torch's old tar format")
                self._scan_member(buf, a, b, mloc, None, m.name, formats.TORCH_TAR)

    def _scan_tar_records(self, buf, a: int, b: int, loc: Loc, kind: str) -> None:
        sim, pos, err = self.run_pickle(buf, a, b, loc)
        if err or not isinstance(sim.value, int):
            self.fail(loc, f"old torch tar member {kind!r} does not start with a count pickle: {err}")
            return
        for _ in range(sim.value):
            check_cancel(self.cancel)
            rec, newpos, err = self.run_pickle(buf, pos, b, loc)
            if err:
                self.hunt(buf, pos, b, loc, f"tar member {kind}")
                return
            pos = newpos
            try:
                if kind == "storages":
                    st = rec.value[2] if isinstance(rec.value, tuple) and len(rec.value) == 3 else None
                    el = policy.STORAGE_ELEMENT_SIZES.get(st.name) if isinstance(st, SGlobal) else None
                    (numel,) = struct.unpack_from("<q", buf, pos)
                    if not el or numel < 0:
                        raise ValueError
                    pos += 8 + numel * el
                else:
                    (ndim,) = struct.unpack_from("<i", buf, pos)
                    if not 0 <= ndim <= 64:
                        raise ValueError
                    pos += 8 + 16 * ndim + 8
            except (struct.error, ValueError):
                self.hunt(buf, pos, b, loc, f"tar member {kind}")
                return
        if pos < b:
            self._trailing(buf, pos, b, loc, f"after the records of tar member {kind}")

    # ------------------------------------------------------------ numpy
    def scan_npy(self, buf, start: int, end: int, loc: Loc, *, data_len: int | None = None) -> None:
        """A .npy array; ``data_len`` is the member's real length when only its header was kept (a plain array
        inflated from a zip: its data is streamed for the CRC, never held)."""
        try:
            major = buf[start + 6]
            if major == 1:
                (hlen,) = struct.unpack_from("<H", buf, start + 8)
                hstart = start + 10
            elif major in (2, 3):
                (hlen,) = struct.unpack_from("<I", buf, start + 8)
                hstart = start + 12
            else:
                raise ValueError(f"unknown .npy version {major}")
            if hstart + hlen > end:
                raise ValueError("header runs past the end")
            header = bytes(buf[hstart:hstart + hlen]).decode("utf-8" if major == 3 else "latin-1")
            if major == 1 and re.search(r"\dL\b", header):  # Python 2 longs, as numpy's own reader accepts
                header = re.sub(r"(\d+)L\b", r"\1", header)
            meta = ast.literal_eval(header)
            if not isinstance(meta, dict) or not {"descr", "shape", "fortran_order"} <= set(meta):
                raise ValueError("header is not a numpy header dict")
            import numpy as np

            dt = np.dtype(meta["descr"])
            shape = meta["shape"]
            if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
                raise ValueError("bad shape")
        except (ValueError, SyntaxError, TypeError, struct.error, IndexError, MemoryError, RecursionError) as exc:
            self.fail(loc, f"malformed .npy header: {exc}")
            return
        data = hstart + hlen
        if self._rec is not None and loc.member is None:
            self._rec.format = formats.NUMPY
        if dt.hasobject:
            self.add(loc, data - loc.base, None, None, None, "low", "numpy-object-array",
                     "object-dtype array: its data is a pickle (np.load needs allow_pickle=True)")
            sims, pos, err = self.scan_pickle_stream(buf, data, end, loc)
            if not sims:
                self.fail(loc, f"object array whose pickle is unreadable: {err}")
            elif pos < end:
                self._trailing(buf, pos, end, loc, "after the object array's pickle")
            return
        self._npy_sizes(buf, data, end, loc, shape, dt.itemsize, start + data_len if data_len is not None else None)

    def _npy_sizes(self, buf, data: int, end: int, loc: Loc, shape: tuple, itemsize: int, real_end: int | None) -> None:
        """Array data shorter or longer than its header promises (the bytes after it searched when kept)."""
        count = 1
        for s in shape:
            count *= s
        need = count * itemsize
        kept = real_end is None  # the bytes after the data are in buf
        real_end = end if real_end is None else real_end
        if data + need < real_end:
            if kept:
                self._trailing(buf, data + need, end, loc, "after the array data")
            else:
                self.add(loc, data + need - loc.base, None, None, None, "low", "trailing-data",
                         f"{real_end - data - need} bytes after the array data (not kept: not searched for pickles)")
        elif data + need > real_end:
            self.add(loc, data - loc.base, None, None, None, "low", "numpy-truncated",
                     f"array data is {real_end - data} bytes, header promises {need}")

    # ------------------------------------------------------------ safetensors
    def scan_safetensors(self, buf, start: int, end: int, loc: Loc) -> None:  # noqa: C901 - the safetensors header checks, one per field
        def bad(msg: str, sev: str = "medium", off: int | None = 0) -> None:
            self.add(loc, off, None, None, None, sev, "safetensors-structure", msg)

        (hlen,) = struct.unpack_from("<Q", buf, start)
        dup: list[str] = []

        def pairs(items):
            keys = [k for k, _ in items]
            if len(keys) != len(set(keys)):
                dup.extend(k for k in keys if keys.count(k) > 1)
            return dict(items)

        try:
            header = json.loads(bytes(buf[start + 8:start + 8 + hlen]).decode("utf-8"), object_pairs_hook=pairs)
        except (ValueError, UnicodeDecodeError) as exc:
            self.fail(loc, f"safetensors header is not valid JSON: {exc}")
            return
        if not isinstance(header, dict):
            self.fail(loc, "safetensors header is not a JSON object")
            return
        if dup:
            bad(f"duplicate keys in the header: {sorted(set(dup))[:5]}")
        data_start = start + 8 + hlen
        data_len = end - data_start
        spans = []
        meta = header.pop("__metadata__", None)
        if meta is not None and (not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())):
            bad("__metadata__ must map strings to strings")
        for name, t in header.items():
            if not isinstance(t, dict) or not {"dtype", "shape", "data_offsets"} <= set(t):
                bad(f"tensor {name!r}: entry lacks dtype/shape/data_offsets")
                continue
            bits = _SAFETENSORS_BITS.get(t["dtype"])
            shape, offs = t["shape"], t["data_offsets"]
            if bits is None:
                bad(f"tensor {name!r}: unknown dtype {t['dtype']!r}")
                continue
            if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
                bad(f"tensor {name!r}: bad shape {shape!r}")
                continue
            if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                    and 0 <= offs[0] <= offs[1]):
                bad(f"tensor {name!r}: bad data_offsets {offs!r}")
                continue
            n = 1
            for s in shape:
                n *= s
            if offs[1] - offs[0] != (n * bits + 7) // 8:
                bad(f"tensor {name!r}: {offs[1] - offs[0]} bytes for shape {shape} of {t['dtype']}")
            if offs[1] > data_len:
                bad(f"tensor {name!r}: data_offsets {offs} past the end of the data ({data_len} bytes)")
            spans.append((offs[0], offs[1], name))
        spans.sort()
        cursor = 0
        for a, b, name in spans:
            if a < cursor:
                bad(f"tensor {name!r} overlaps the previous tensor (offset {a} < {cursor})")
            elif a > cursor:
                bad(f"gap of {a - cursor} bytes before tensor {name!r}", "low", data_start + cursor - loc.base)
            cursor = max(cursor, b)
        if cursor < data_len:
            self._trailing(buf, data_start + cursor, end, loc, "after the last safetensors tensor")

    # ------------------------------------------------------------ compression
    def scan_compressed(self, buf, start: int, end: int, loc: Loc) -> None:
        head = bytes(buf[start:start + 64])
        codec = _compression(head)
        cap = min(self.max_decompressed, self.max_total_decompressed - self._inflated)
        if cap <= 0:
            self._not_read(loc, f"decompression budget of {self.max_total_decompressed >> 20} MiB for this file spent")
            return
        try:
            if codec == "joblib-zf":  # "ZF" + hex length padded to 19 chars, optional space, zlib data
                skip = start + 21 + (1 if bytes(buf[start + 21:start + 22]) == b" " else 0)
                data = _inflate_zlib(bytes(buf[skip:end]), cap)
            elif codec == "lz4":
                data = _lz4_frame(bytes(buf[start:end]), cap)
            else:
                data = _decompress(codec, bytes(buf[start:end]), cap)
        except _TooBig:
            self.add(loc, 0, None, None, None, "medium", "decompression-cap",
                     f"{codec} stream inflates past the {cap >> 20} MiB cap (possible decompression bomb)")
            self.fail(loc, "decompressed size exceeds the cap")
            return
        except (ValueError, OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
            self.fail(loc, f"corrupt {codec} stream: {exc}")
            return
        self._inflated += len(data)
        mloc = Loc(loc.file, f"{loc.member + '!' if loc.member else ''}({codec}-decompressed)", 0, loc.allow_prefixes)
        self.bytes_total += len(data)
        if data[:6] == b"\x93NUMPY":  # old joblib (<0.10) keeps arrays as zlib-compressed .npy files
            return self.scan_npy(data, 0, len(data), mloc)
        if data[:4] == b"PK\x03\x04":
            return self.scan_zip(bytes(data), 0, len(data), mloc, formats.ZIP, nested=True)
        if archives.is_tar(data[:512]):
            return archives.scan_tar(self, mloc, data, 0, len(data))
        sims, pos, err = self.scan_pickle_stream(data, 0, len(data), mloc)
        if not sims:
            if looks_like_pickle(data, 0, len(data)) or not data:
                self.fail(mloc, f"decompressed stream is not a complete pickle: {err}")
            elif codec == "joblib-zf":
                # joblib < 0.10 keeps raw array bytes in ZF files (ZNDArrayWrapper); joblib never unpickles them
                if self._rec is not None:
                    self._rec.format = "joblib-zf-array"
                self.hunt(data, 0, len(data), mloc, "old joblib raw array data")
            else:
                self.fail(mloc, f"decompressed {codec} stream is not a pickle, .npy or zip: {err}")
        elif pos < len(data):
            self._trailing(data, pos, len(data), mloc, "after the pickle in the decompressed stream")


# ---------------------------------------------------------------- helpers
_SMALL_FILE = 1 << 20  # files up to this size are read whole instead of memory-mapped


def _quick_format(head: bytes, size: int) -> str | None:
    """The format of the commonest files from their first bytes (as probes.formats decides), else None (ask it)."""
    if size == 0:
        return formats.EMPTY
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return formats.ZIP  # classified from the central directory scan_zip reads anyway (one parse, not two)
    if head[:1] == b"\x80" and len(head) > 8 and head[1] <= 5 and head[2] != 0x8A and head[8:9] != b"{":
        # (a safetensors file whose header is 128 bytes long also starts with 0x80 0x00; its JSON follows at 8)
        return formats.PICKLE  # not a legacy torch file (that starts with a LONG1 magic number)
    return None


def _classify_names(names: list[str]) -> str:
    """The zip flavour from member names (same rules as probes.formats)."""
    if names and all(n.endswith(".npy") for n in names):
        return formats.NPZ
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return formats.TORCHSCRIPT
    if any(n.endswith("data.pkl") for n in names):
        return formats.TORCH_ZIP
    if "config.json" in names and {"metadata.json", "model.weights.h5", "model.weights.npz"} & set(names):
        return formats.KERAS
    return formats.ZIP


def _sub(member: str | None, part: str) -> str:
    return f"{member}!{part}" if member else part


def sim_allow(sim: PickleSim, prefix: str) -> None:
    """Let one simulator treat names under ``prefix`` as allowed (TorchScript's own types)."""
    orig = sim._global

    def _global(module, name, pos, opcode, via=""):
        g = orig(module, name, pos, opcode, via)
        if f"{module}.{name}".startswith(prefix) and not via:
            g.tier = policy.ALLOW
        return g

    sim._global = _global


def _member_span(buf, start: int, end: int, info: zipfile.ZipInfo) -> tuple[int, int, bytes]:
    off = start + info.header_offset
    if off + 30 > end or bytes(buf[off:off + 4]) != b"PK\x03\x04":
        raise ValueError("central directory points at a missing local header")
    nlen, xlen = struct.unpack_from("<HH", buf, off + 26)
    local_name = bytes(buf[off + 30:off + 30 + nlen])
    a = off + 30 + nlen + xlen
    b = a + info.compress_size
    if b > end:
        raise ValueError("member data runs past the end of the archive")
    return a, b, local_name


def _crc_mmap(mm, a: int, b: int) -> int:
    crc = 0
    step = 16 << 20
    while a < b:
        crc = zlib.crc32(mm[a:min(b, a + step)], crc)
        a += step
    return crc


def _torch_member_kind(rel: str) -> str:
    if rel in ("data.pkl", "constants.pkl", "traced_inputs.pkl") or (
            rel.startswith("code/") and rel.endswith(".debug_pkl")):
        return "pickle"  # what torch.load / torch.jit.load unpickle (traced_inputs: what jit.trace was given)
    for storages in ("data/", "traced_inputs/"):
        if rel.startswith(storages) and rel[len(storages):].isdigit():
            return "data"
    if rel in ("byteorder", "version", ".data/version", ".data/serialization_id", ".format_version",
               ".storage_alignment", "serialization_id"):
        return "meta"
    if rel.startswith("code/") or rel.startswith("extra/") or rel.startswith("constants/") or rel.startswith(".data/"):
        return "code"
    return "extra"


def _traversal(name: str) -> bool:
    n = name.replace("\\", "/")
    return n.startswith("/") or bool(re.match(r"^[A-Za-z]:", n)) or ".." in n.split("/")


def _is_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multi-byte char cut at the end is fine
            return False
    return not _TEXT_EXT_HINT.search(head)


def _inert_format(name: str, head: bytes) -> str | None:
    """Side files of model folders that hold no pickle and run no code when parsed."""
    if head.startswith(b"GGUF"):
        return "gguf"
    if name.endswith(".model") and head[:1] == b"\x0a":
        return "sentencepiece"
    if name.endswith(".msgpack") and head[:1] in (b"\x80", b"\x81", b"\x82", b"\x83", b"\xde", b"\xdf"):
        return "msgpack"
    if head[:4] == b"\x89PNG" or head[:3] == b"\xff\xd8\xff":
        return "image"
    return None


def _compression(head: bytes) -> str | None:
    if head.startswith(b"ZF") and len(head) >= 21:
        return "joblib-zf"
    if head[:1] == b"\x78" and len(head) >= 2 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    return None


class _TooBig(Exception):
    pass


def _inflate_zlib(data: bytes, cap: int, wbits: int = 15) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, cap + 1)
    if len(out) > cap:
        raise _TooBig()
    return out


def _npy_keep(head: bytes, budget: int) -> int:
    """Bytes of an inflated .npy member to keep: the header alone for a plain array (its data is never read),
    everything for an object array (its data is a pickle) or a header that cannot be read here."""
    try:
        major = head[6]
        hlen, hstart = (struct.unpack_from("<H", head, 8)[0], 10) if major == 1 else (
            struct.unpack_from("<I", head, 8)[0], 12)
    except (IndexError, struct.error):
        return budget
    header = head[hstart:hstart + hlen]
    if hstart + hlen > len(head) or b"O" in header.split(b"'shape'")[0] or not header.endswith((b"\n", b" ", b"}")):
        return budget
    return hstart + hlen


_HUNT_KEEP = 8 << 20  # bytes of an opaque deflated member kept for the hidden-pickle search
_DECLARED_MIN = 1 << 30  # declared sizes from here on, at this ratio to the stored bytes, are reported
_DECLARED_RATIO = 1000


def _inflate_iter(buf, a: int, b: int, limit: int, wbits: int = -15):
    """Decompressed chunks (at most 4 MiB each) of ``buf[a:b]``; raises _TooBig past ``limit`` bytes in all."""
    d = zlib.decompressobj(wbits)
    pos, total = a, 0
    pending = b""
    while True:
        if not pending:
            if d.eof:
                return
            if pos >= b:  # input used up: what zlib still holds comes out in steps, then the rest
                out = d.decompress(b"", 4 << 20) or d.flush()
                if not out:
                    return
                total += len(out)
                if total > limit:
                    raise _TooBig()
                yield out
                continue
            pending = bytes(buf[pos:min(b, pos + (1 << 20))])
            pos += len(pending)
        out = d.decompress(pending, 4 << 20)
        pending = d.unconsumed_tail
        if out:
            total += len(out)
            if total > limit:
                raise _TooBig()
            yield out
        if d.eof:
            return


def _inflate(data: bytes, hint: int, cap: int) -> bytes:
    try:
        return _inflate_zlib(data, cap, -15)
    except _TooBig:
        raise ValueError(f"deflated member inflates past the {cap >> 20} MiB cap (possible zip bomb)") from None
    except zlib.error as exc:
        raise ValueError(f"corrupt deflate data: {exc}") from None


def _decompress(codec: str, data: bytes, cap: int) -> bytes | bytearray:
    """Every concatenated stream of ``data`` (bz2/gzip/xz readers - bz2.BZ2File, gzip.GzipFile, lzma.LZMAFile -
    read them all), decompressed, at most ``cap`` bytes in all. Bytes after the last stream are ignored, as
    those readers ignore trailing zeros. Decompressed in 16 MiB steps into one buffer: peak memory is the
    output, not twice it."""
    out = bytearray()
    step = 16 << 20
    while data:
        if codec in ("zlib", "gzip"):
            d: Any = zlib.decompressobj(15 if codec == "zlib" else 31)
            tail = data
            while True:
                piece = d.decompress(tail, step)
                out += piece
                if len(out) > cap:
                    raise _TooBig()
                tail = d.unconsumed_tail
                if d.eof or (not tail and len(piece) < step):
                    break
        elif codec in ("bz2", "xz", "lzma"):
            d = bz2.BZ2Decompressor() if codec == "bz2" else lzma.LZMADecompressor(lzma.FORMAT_AUTO)
            out += d.decompress(data, step)
            while not d.eof and not d.needs_input and len(out) <= cap:
                out += d.decompress(b"", step)
            if len(out) > cap:
                raise _TooBig()
        else:
            raise ValueError(f"unknown codec {codec}")
        rest = d.unused_data if d.eof else b""
        if codec == "zlib" or not d.eof or not rest.strip(b"\x00"):
            break  # zlib files hold one stream; a truncated stream ends here
        data = rest
    return out


def _lz4_frame(data: bytes, cap: int) -> bytes:
    """LZ4 frames decoded by :mod:`probes.lz4_frames` (shared with the dynamic probe's child), size-capped."""
    from probes import lz4_frames

    try:
        return lz4_frames.decompress(data, cap)
    except lz4_frames.TooLarge:
        raise _TooBig() from None
    except IndexError:
        raise ValueError("truncated lz4 block") from None

