"""HDF5 files (legacy Keras ``.h5`` / h5-based ``.keras``, Keras v3 ``model.weights.h5``), read with h5py.

Reported: the Keras ``model_config`` / ``training_config`` attributes (checked by
:mod:`probes.static_scan.keras_config`), external links, virtual datasets whose
sources live in other files, and datasets whose raw data is stored in external
files - each makes a loader read a file outside the one being examined. Links are
walked without being followed (``getlink=True``); no dataset data is read.
"""

from __future__ import annotations

import io
from typing import Any

from probes.static_scan import finding, keras_config

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MAX_OBJECTS = 100_000
_CONFIG_ATTRS = ("model_config", "training_config")


def is_hdf5(head: bytes) -> bool:
    """HDF5 signature at offset 0 or at a user-block offset (512, 1024, 2048...) within the head."""
    if head.startswith(HDF5_MAGIC):
        return True
    off = 512
    while off + 8 <= len(head):
        if head[off:off + 8] == HDF5_MAGIC:
            return True
        off *= 2
    return False


def _text(v: Any) -> str | None:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, str):
        return v
    try:  # numpy 0-d string arrays
        import numpy as np

        if isinstance(v, np.ndarray) and v.dtype.kind in "SUO" and v.size == 1:
            return _text(v.reshape(()).item())
    except ImportError:
        pass
    return None


def scan(sc: Any, loc: Any, source: Any, size: int) -> None:
    """Scan an HDF5 file given as a path, as bytes, or as ``(buffer, start, end)`` (an archive member in place)."""
    import h5py

    finding.set_format(sc, loc, "hdf5")
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            f = h5py.File(io.BytesIO(bytes(source)), "r")
        elif isinstance(source, tuple):  # (buffer, start, end): an archive member read in place, not copied
            from probes.static_scan.archives import SliceFile

            f = h5py.File(SliceFile(*source), "r")
        else:
            f = h5py.File(str(source), "r", locking=False)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        sc.fail(loc, f"unreadable HDF5 file: {finding.excerpt(str(exc), 160)}")
        return
    try:
        with f:
            _scan_open(sc, loc, f, h5py)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, RecursionError) as exc:
        sc.fail(loc, f"HDF5 structure could not be walked: {finding.excerpt(str(exc), 160)}")


def _scan_open(sc: Any, loc: Any, f: Any, h5py: Any) -> None:
    for key in _CONFIG_ATTRS:
        if key in f.attrs:
            txt = _text(f.attrs[key])
            if txt is None:
                sc.fail(loc, f"HDF5 attribute {key!r} is not text")
                continue
            finding.set_format(sc, loc, "keras-h5")
            keras_config.scan_json_bytes(sc, loc, txt.encode("utf-8"), f"HDF5 attribute {key}")
    seen: set = set()
    count = [0]

    def walk(grp: Any, path: str, depth: int) -> None:
        if depth > 64:
            sc.fail(loc, f"HDF5 groups nested deeper than 64 at {path}")
            return
        for name in grp:
            count[0] += 1
            if count[0] > _MAX_OBJECTS:
                if count[0] == _MAX_OBJECTS + 1:
                    sc.fail(loc, f"HDF5 file has more than {_MAX_OBJECTS} objects; rest not checked")
                return
            full = f"{path.rstrip('/')}/{name}"
            link = grp.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                finding.add(sc, loc, "high", "hdf5-external-link",
                            f"external link {full} points to {link.path!r} in another file {link.filename!r}; "
                            "opening it makes HDF5 read that file", where=full,
                            node={"link": full, "file": link.filename, "path": link.path})
                continue
            if isinstance(link, h5py.SoftLink):
                continue
            obj = grp[name]
            token = h5py.h5o.get_info(obj.id).addr if hasattr(h5py.h5o.get_info(obj.id), "addr") else id(obj)
            if token in seen:
                continue
            seen.add(token)
            if isinstance(obj, h5py.Group):
                walk(obj, full, depth + 1)
            elif isinstance(obj, h5py.Dataset):
                _dataset(sc, loc, obj, full)

    walk(f, "/", 0)


def _dataset(sc: Any, loc: Any, ds: Any, full: str) -> None:
    if ds.is_virtual:
        for src in ds.virtual_sources():
            if src.file_name not in (".", ""):
                finding.add(sc, loc, "high", "hdf5-virtual-dataset",
                            f"virtual dataset {full} reads {src.dset_name!r} from the file {src.file_name!r}",
                            where=full, node={"dataset": full, "source_file": src.file_name, "source": src.dset_name})
    plist = ds.id.get_create_plist()
    for i in range(min(plist.get_external_count(), 64)):
        name, offset, size = plist.get_external(i)
        fname = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        finding.add(sc, loc, "high", "hdf5-external-storage",
                    f"dataset {full} keeps its data in the external file {fname!r} (offset {offset}, {size} bytes)",
                    where=full, node={"dataset": full, "external_file": fname, "offset": offset, "size": size})

