"""Tar wrappers (NeMo ``.nemo``, ``.tar``, ``.tar.gz`` after decompression) and 7z, opened bounded.

Tar members are located through their headers and read in place (never
extracted); each regular member is scanned by content like any file, to an
archive depth of :data:`MAX_DEPTH`. Links, devices and names that escape the
extraction folder are findings. NeMo/Hydra YAML configs are checked for
``_target_`` classes (Hydra instantiates whatever they name). 7z archives cannot
be read without a 7z library, so they are reported as not read (inconclusive).
"""

from __future__ import annotations

import re
import tarfile
from typing import Any

from probes.progress import check_cancel
from probes.static_scan import finding

MAX_MEMBERS = 10_000
MAX_DEPTH = 3
_TARGET_RE = re.compile(rb"""^\s*-?\s*_target_\s*:\s*['"]?([A-Za-z_][\w.]*)['"]?\s*$""", re.M)
TRUSTED_TARGET_PREFIXES = ("nemo.", "torch.", "omegaconf.", "pytorch_lightning.", "lightning.", "transformers.",
                           "megatron.", "apex.", "sentencepiece.", "hydra.", "numpy.", "torchaudio.", "torchvision.")


class SliceFile:
    """A read-only seekable file over ``buf[start:end]`` (mmap or bytes), for tarfile, zipfile and h5py to parse in place."""

    def __init__(self, buf, start: int, end: int):
        self.buf, self.start, self.end, self.pos = buf, start, end, start

    def seekable(self) -> bool:
        return True

    def seek(self, off: int, whence: int = 0) -> int:
        base = {0: self.start, 1: self.pos, 2: self.end}[whence]
        self.pos = min(max(self.start, base + off), self.end)
        return self.pos - self.start

    def tell(self) -> int:
        return self.pos - self.start

    def read(self, n: int = -1) -> bytes:
        stop = self.end if n is None or n < 0 else min(self.end, self.pos + n)
        data = bytes(self.buf[self.pos:stop])
        self.pos = stop
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False


def depth_of(loc: Any) -> int:
    """How many archive levels deep ``loc`` is (0: a file on disk)."""
    return 0 if not loc.member else loc.member.count("!") + 1


def is_tar(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


def scan_tar(sc: Any, loc: Any, buf, start: int, end: int) -> None:
    """Walk a tar's headers and scan every regular member in place."""
    from probes.static_scan.scanner import Loc, _traversal

    if loc.member is None:
        name = loc.file.lower()
        finding.set_format(sc, loc, "nemo" if name.endswith(".nemo") else "tar")
    if depth_of(loc) >= MAX_DEPTH:
        finding.add(sc, loc, "medium", "archive-depth", f"archive nested more than {MAX_DEPTH} levels deep; "
                    "inner members not read", offset=0)
        sc.fail(loc, f"archive nesting deeper than {MAX_DEPTH}")
        return
    try:
        tf = tarfile.open(fileobj=SliceFile(buf, start, end), mode="r:")  # type: ignore[call-overload]
        members = []
        for m in tf:
            members.append(m)
            if len(members) > MAX_MEMBERS:
                finding.add(sc, loc, "medium", "archive-members", f"tar has more than {MAX_MEMBERS} members; "
                            "the rest are not read")
                sc.fail(loc, f"more than {MAX_MEMBERS} tar members")
                break
    except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
        sc.fail(loc, f"malformed tar: {exc}")
        return
    for m in members[:MAX_MEMBERS]:
        check_cancel(sc.cancel)
        mname = f"{loc.member}!{m.name}" if loc.member else m.name
        mloc = Loc(loc.file, mname, start + m.offset_data)
        if _traversal(m.name) or m.issym() or m.islnk():
            what = f"a link to {m.linkname!r}" if (m.issym() or m.islnk()) else "a name that escapes the folder"
            finding.add(sc, mloc, "high", "archive-path-traversal",
                        f"tar member {m.name!r} is {what}; extracting it writes or points outside the model folder",
                        offset=m.offset, where=m.name)
            continue
        if m.ischr() or m.isblk() or m.isfifo():
            finding.add(sc, mloc, "medium", "archive-extra-member", f"tar member {m.name!r} is a device or FIFO",
                        offset=m.offset, where=m.name)
            continue
        if not m.isfile() or m.size == 0:
            continue
        a = start + m.offset_data
        b = a + m.size
        if b > end:
            finding.add(sc, mloc, "medium", "archive-malformed", f"tar member {m.name!r} runs past the end",
                        offset=m.offset)
            sc.fail(mloc, "tar member runs past the end of the archive")
            continue
        mloc.base = a
        sc._scan_member(buf, a, b, mloc, None, m.name, "tar")


def scan_7z(sc: Any, loc: Any) -> None:
    finding.set_format(sc, loc, "7z")
    try:
        import py7zr  # noqa: F401
    except ImportError:
        sc.fail(loc, "7z archive: members not read (no 7z reader is installed: py7zr is missing)")
        return
    sc.fail(loc, "7z archive: members not read (7z reading is not implemented)")


def check_yaml_targets(sc: Any, loc: Any, buf, a: int, b: int, what: str) -> None:
    """Hydra/NeMo ``_target_:`` entries: the class or function ``instantiate`` imports and calls."""
    from probes.static_scan import policy

    data = bytes(buf[a:min(b, a + (8 << 20))])
    targets: list[str] = [m.group(1).decode() for m in _TARGET_RE.finditer(data)]
    try:
        import yaml

        def walk(o: Any, depth: int = 0) -> None:
            if depth > 64:
                return
            if isinstance(o, dict):
                for k, v in o.items():
                    if k in ("_target_", "target_") and isinstance(v, str) and v not in targets:
                        targets.append(v)
                    walk(v, depth + 1)
            elif isinstance(o, list):
                for v in o:
                    walk(v, depth + 1)

        for doc in yaml.safe_load_all(data.decode("utf-8", "replace")):
            walk(doc)
    except Exception:  # noqa: BLE001 - unparseable YAML: the line scan above still counts
        pass
    for target in targets:
        module, _, name = target.rpartition(".")
        if not module:
            continue
        reason = policy.is_critical(module, name) or policy.is_critical(module, "")
        pos = data.find(target.encode())
        off = a + max(pos, 0) - loc.base
        if reason:
            finding.add(sc, loc, "critical", "hydra-target",
                        f"{what}: _target_ {target} ({reason}); Hydra/NeMo instantiate calls it while restoring",
                        offset=off, module=module, name=name, where=f"_target_ {target}", node=f"_target_: {target}")
        elif not target.startswith(TRUSTED_TARGET_PREFIXES):
            finding.add(sc, loc, "medium", "hydra-target",
                        f"{what}: _target_ {target} is outside NeMo/torch; instantiating it imports third-party code",
                        offset=off, module=module, name=name, where=f"_target_ {target}", node=f"_target_: {target}")
