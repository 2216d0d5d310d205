"""Find the subjects under a registry root by content, as a stream, without loading anything.

A subject is one of: a single model file; a model folder (a Hugging Face folder with
``config.json``, e.g. an ``ORG/NAME/`` mirror); or one revision of a Hugging Face hub
cache repository (``models--ORG--NAME/snapshots/REV/``, whose entries are symlinks into
the repository's ``blobs/``). Files are recognised by content (:func:`probes.formats.detect_file`);
a file whose content is not recognisable is a subject only when its name says it is a
model file. Symlink loops, dangling links and unreadable entries are yielded as
:class:`Problem` records, never raised. Nothing is collected: memory stays flat in the
number of subjects.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes import formats

# names that say "model file" even when the content is not recognisable (scanned: the scan says inconclusive)
MODEL_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy",
                            ".npz", ".h5", ".hdf5", ".keras", ".onnx", ".msgpack", ".gguf", ".sav", ".model", ".pb",
                            ".tflite", ".mar", ".dill"})
_WEAK = frozenset({formats.UNKNOWN, formats.EMPTY})
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".cache", ".locks"})
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    """One file of a subject: its name inside the subject and the real file that holds its bytes."""

    rel: str
    real: str
    size: int
    mtime_ns: int
    inode: tuple[int, int]
    link: str | None = None  # the symlink's target as written (hub-cache snapshot entries)


@dataclass
class Subject:
    """A discovered subject; ``sha256`` is filled in by :func:`hash_subject`."""

    path: str
    name: str
    layout: str  # file | folder | hf-cache
    files: list[FileEntry]
    format: str = formats.UNKNOWN
    kind: str = "unknown"
    sha256: str = ""
    file_hashes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def files_record(self) -> list[dict[str, Any]]:
        """The ``files`` column of the case's subject row (as ``subject add`` records it)."""
        out = []
        hashes: list[str | None] = list(self.file_hashes) or [None] * len(self.files)
        for f, digest in zip(self.files, hashes):
            row: dict[str, Any] = {"path": f.rel, "sha256": digest, "size": f.size}
            if f.link is not None:
                row["target"] = f.link
            out.append(row)
        return out


@dataclass(frozen=True)
class Problem:
    """Something under the root that could not be made a subject (reported, never fatal)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "problem": self.reason}


def _entry(path: Path, rel: str, *, link: str | None = None, st: os.stat_result | None = None) -> FileEntry:
    st = st or path.stat()  # follows a symlink: the bytes are the target's
    real = str(path.resolve()) if link is not None or path.is_symlink() else str(path)
    return FileEntry(rel, real, st.st_size, st.st_mtime_ns, (st.st_dev, st.st_ino), link)


_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x04\x22\x4d\x18",
           b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"ZF", b"GGUF", b"\x89HDF\r\n\x1a\n")


def _is_model_file(path: Path, name: str) -> tuple[bool, str]:
    """Is this file a subject? By content (a model format's magic), else by a model file name.

    A cheap look at the first bytes only; the static scan decides the exact format. Protocol 0/1
    pickles have no magic (text often looks like them): they count when the name says model.
    """
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return Path(name).suffix.lower() in MODEL_SUFFIXES, formats.EMPTY
    if head.startswith(_MAGICS) or (head[0] == 0x80 and len(head) > 1 and head[1] <= 5) or (
            len(head) >= 262 and head[257:262] == b"ustar"):
        return True, formats.UNKNOWN
    if len(head) >= 10 and head[8:9] == b"{" and 8 < int.from_bytes(head[:8], "little") < (100 << 20):
        return True, formats.SAFETENSORS
    return Path(name).suffix.lower() in MODEL_SUFFIXES or formats.detect_file(path) not in _WEAK | {formats.PICKLE}, \
        formats.UNKNOWN


def _folder_files(root: Path) -> Iterator[FileEntry | Problem]:
    """Every file of a model folder (symlinks recorded, targets inside the folder hashed, others reported)."""
    for dirpath, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for n in sorted(names):
            p = Path(dirpath) / n
            rel = p.relative_to(root).as_posix()
            try:
                if p.is_symlink():
                    target = os.readlink(p)
                    if not p.exists():
                        yield Problem(str(p), f"dangling or looping symlink to {target}")
                        continue
                    yield _entry(p, rel, link=target)
                elif p.is_file():
                    yield _entry(p, rel)
            except OSError as exc:
                yield Problem(str(p), f"unreadable: {exc.strerror or exc}")


def _folder_subject(path: Path, name: str, layout: str) -> Iterator[Subject | Problem]:
    files: list[FileEntry] = []
    for item in _folder_files(path):
        if isinstance(item, Problem):
            yield item
        else:
            files.append(item)
    if not files:
        yield Problem(str(path), "model folder without readable files")
        return
    fmt = formats.HF_FOLDER if formats.is_hf_folder(path) else formats.FOLDER
    yield Subject(str(path), name, layout, files, fmt, formats.guess_kind(path))


def _hub_repo(repo: Path, root: Path) -> Iterator[Subject | Problem]:
    """``models--ORG--NAME``: one subject per snapshot revision (entries resolve into ``blobs/``)."""
    parts = repo.name.split("--")
    repo_name = "/".join(parts[1:]) if len(parts) > 1 else repo.name
    snaps = repo / "snapshots"
    try:
        revs = sorted(d for d in snaps.iterdir() if d.is_dir() and not d.is_symlink())
    except OSError as exc:
        yield Problem(str(snaps), f"unreadable: {exc.strerror or exc}")
        return
    for rev in revs:
        for item in _folder_subject(rev, f"{repo_name}@{rev.name}", "hf-cache"):
            if isinstance(item, Subject):
                item.format = formats.HF_FOLDER if formats.is_hf_folder(rev) else formats.FOLDER
            yield item


def discover(root: str | Path) -> Iterator[Subject | Problem]:
    """Yield every subject (and every problem) under ``root``, depth first, in name order."""
    top = Path(root).expanduser()
    if not top.exists() and not top.is_symlink():
        yield Problem(str(top), "no such file or folder")
        return
    if top.is_file():
        try:
            ok, fmt = _is_model_file(top, top.name)
            yield Subject(str(top.resolve()), top.name, "file", [_entry(top, top.name)], fmt)
        except OSError as exc:
            yield Problem(str(top), f"unreadable: {exc.strerror or exc}")
        return
    top = top.resolve()
    yield from _walk(top, top, set())


def _walk(d: Path, root: Path, seen: set[tuple[int, int]]) -> Iterator[Subject | Problem]:  # noqa: C901 (one dispatch per entry type)
    try:
        st = d.stat()
    except OSError as exc:
        yield Problem(str(d), f"unreadable: {exc.strerror or exc}")
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        yield Problem(str(d), "folder already visited (bind mount or loop); skipped")
        return
    seen.add(key)
    rel = d.relative_to(root).as_posix() if d != root else d.name
    if d.name.startswith("models--") and (d / "snapshots").is_dir():
        yield from _hub_repo(d, root)
        return
    if d == root and d.parent.name == "snapshots" and d.parent.parent.name.startswith("models--"):
        parts = d.parent.parent.name.split("--")
        yield from _folder_subject(d, f"{'/'.join(parts[1:])}@{d.name}", "hf-cache")  # ROOT is one revision
        return
    if d != root and formats.is_hf_folder(d):
        yield from _folder_subject(d, rel, "folder")
        return
    if d == root and formats.is_hf_folder(d):
        yield from _folder_subject(d, d.name, "folder")
        return
    try:
        entries = sorted(os.scandir(d), key=lambda e: e.name)
    except OSError as exc:
        yield Problem(str(d), f"unreadable: {exc.strerror or exc}")
        return
    subdirs = []
    for e in entries:
        p = Path(e.path)
        try:
            if e.is_symlink():
                if not p.exists():
                    yield Problem(str(p), f"dangling or looping symlink to {os.readlink(p)}")
                    continue
                if p.is_dir():
                    yield Problem(str(p), "symlink to a folder; not followed")
                    continue
            if e.is_dir(follow_symlinks=False):
                if e.name not in _SKIP_DIRS:
                    subdirs.append(p)
                continue
            st = p.stat()
            if not stat.S_ISREG(st.st_mode):
                continue
            ok, fmt = _is_model_file(p, e.name)
            if ok:
                name = p.relative_to(root).as_posix()
                yield Subject(str(p), name, "file", [_entry(p, e.name, st=st)], fmt)  # a link keeps its own name
        except OSError as exc:
            yield Problem(str(p), f"unreadable: {exc.strerror or exc}")
    for sd in subdirs:
        yield from _walk(sd, root, seen)


class Hasher:
    """sha256 of files, each real file hashed once per job (hub-cache blobs shared by revisions included).

    The memo is bounded (``max_entries``) so memory stays flat; a file whose size or mtime
    changes while it is hashed raises :class:`FileChanged`.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._memo: dict[tuple[int, int, int, int], str] = {}
        self.bytes_hashed = 0
        self.files_hashed = 0

    def file(self, f: FileEntry) -> str:
        key = (*f.inode, f.size, f.mtime_ns)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        h = hashlib.sha256()
        with open(f.real, "rb") as fh:
            while block := fh.read(_HASH_CHUNK):
                h.update(block)
        st = os.stat(f.real)
        if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
            raise FileChanged(f"{f.real} changed while it was being hashed")
        digest = h.hexdigest()
        self.bytes_hashed += f.size
        self.files_hashed += 1
        if len(self._memo) >= self.max_entries:
            self._memo.pop(next(iter(self._memo)))
        self._memo[key] = digest
        return digest


class FileChanged(OSError):
    """A file's size or modification time changed between discovery and the end of its scan."""


def hash_subject(s: Subject, hasher: Hasher) -> Subject:
    """Fill in the file hashes and the subject's sha256 (a file's own; a folder's manifest hash, as ``subject add``)."""
    s.file_hashes = [hasher.file(f) for f in s.files]
    if s.layout == "file":
        s.sha256 = s.file_hashes[0]
    else:
        manifest = "\n".join(f"{f.rel} {d}" for f, d in zip(s.files, s.file_hashes))
        s.sha256 = hashlib.sha256(manifest.encode()).hexdigest()
    return s


def unchanged(files: list[FileEntry]) -> str | None:
    """None when every file still has the size and mtime discovery saw; else why not."""
    for f in files:
        try:
            st = os.stat(f.real)
        except OSError as exc:
            return f"{f.real} vanished during the scan ({exc.strerror or exc})"
        if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
            return f"{f.real} changed during the scan (size or modification time)"
    return None
