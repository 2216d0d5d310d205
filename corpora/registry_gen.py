"""A synthetic model registry for tests and benchmarks, built locally and quickly.

``generate(dest, n_files)`` writes about ``n_files`` small model files of every format the
static scan reads (pickles, torch zips, safetensors, numpy, npz, joblib-style compressed
pickles), benign and with harmless payloads (they would call ``os.getpid`` if anyone
unpickled them; nothing here unpickles), byte-identical duplicates under other names,
``ORG/NAME/`` Hugging Face folder mirrors, a Hugging Face hub cache
(``models--ORG--NAME/snapshots/REV/`` entries symlinked into ``blobs/``, revisions sharing
blobs), and, with ``hostile_layout``, a symlink loop, a dangling link and a symlinked
folder. It returns a :class:`Registry` manifest of what a scanner should find.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corpora.payload_corpus import P2, STOP, _call, _g, _inject_after_proto, _Reduce, _rezip, _torch_zip_bytes


@dataclass
class Registry:
    """What :func:`generate` wrote: expected subjects by path and verdict class, duplicates, hub revisions."""

    root: Path
    subjects: dict[str, str] = field(default_factory=dict)  # path -> "malicious" | "benign" (expected static class)
    duplicates: int = 0  # subjects whose bytes equal an earlier subject's
    hub_revisions: int = 0
    problems: int = 0  # layout problems planted (loop, dangling link, symlinked folder)

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def malicious(self) -> set[str]:
        return {p for p, label in self.subjects.items() if label == "malicious"}


def _safetensors(rng: np.random.Generator, n: int) -> bytes:
    data = rng.standard_normal(n).astype("<f4").tobytes()
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, len(data)]},
                         "__metadata__": {"format": "pt", "id": str(rng.integers(1 << 62))}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def _npy(rng: np.random.Generator, n: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, rng.standard_normal(n).astype(np.float32))
    return buf.getvalue()


def _npz(rng: np.random.Generator, n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("w.npy", date_time=(2024, 1, 1, 0, 0, 0)), _npy(rng, n))
    return buf.getvalue()


def _pickle(rng: np.random.Generator, n: int) -> bytes:
    return pickle.dumps({"weights": [float(v) for v in rng.standard_normal(n)], "step": int(rng.integers(1 << 30))},
                        protocol=int(rng.integers(2, 5)))


def _joblib_z(rng: np.random.Generator, n: int) -> bytes:
    return zlib.compress(_pickle(rng, n))


def _payload_pickle(rng: np.random.Generator, n: int) -> bytes:
    return pickle.dumps({"weights": [float(v) for v in rng.standard_normal(n)], "hook": _Reduce(os.getpid)},
                        protocol=4)


def _payload_ops_pickle(rng: np.random.Generator, n: int) -> bytes:
    return P2 + _call(_g("posix", "getpid")) + b"0" + pickle.dumps(int(rng.integers(1 << 30)), protocol=2)[2:-1] + STOP


def _payload_joblib(rng: np.random.Generator, n: int) -> bytes:
    return zlib.compress(_payload_pickle(rng, n))


class _TorchZips:
    """Small torch checkpoints from one ``torch.save`` template (a fresh tensor payload per file)."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        self.template = _torch_zip_bytes({"w": torch.zeros(8)})
        with zipfile.ZipFile(io.BytesIO(self.template)) as zf:
            self.data_member = next(n for n in zf.namelist() if n.endswith("data/0"))
            self.pkl = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))

    def benign(self, rng: np.random.Generator, n: int) -> bytes:
        return _rezip(self.template, replace={self.data_member: rng.standard_normal(8).astype("<f4").tobytes()})

    def payload(self, rng: np.random.Generator, n: int) -> bytes:
        bad = _inject_after_proto(self.pkl, _call(_g("os", "getpid")))
        name = self.data_member.rsplit("/data/", 1)[0] + "/data.pkl"
        return _rezip(self.template, replace={name: bad,
                                              self.data_member: rng.standard_normal(8).astype("<f4").tobytes()})


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def generate(dest: str | Path, n_files: int = 1000, *, seed: int = 0, payload_every: int = 25, dup_every: int = 20,
             hf_folders: int | None = None, hub_repos: int | None = None, hostile_layout: bool = True,
             torch_zips: bool = True) -> Registry:
    """Write a registry of about ``n_files`` model files under ``dest`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    reg = Registry(root.resolve())
    tz = _TorchZips() if torch_zips else None
    benign = [(".pkl", _pickle), (".npy", _npy), (".safetensors", _safetensors), (".npz", _npz),
              (".joblib", _joblib_z)]
    bad = [(".pkl", _payload_pickle), (".bin", _payload_ops_pickle), (".joblib", _payload_joblib)]
    if tz is not None:
        benign.append((".pt", tz.benign))
        bad.append((".pt", tz.payload))
    hf_folders = max(1, n_files // 100) if hf_folders is None else hf_folders
    hub_repos = max(1, n_files // 200) if hub_repos is None else hub_repos
    n_single = max(0, n_files - 2 * hf_folders - 3 * hub_repos)
    written: list[Path] = []
    for i in range(n_single):
        vendor = root / "drop" / f"vendor-{i % 7}" / f"batch-{i // 500:03d}"
        if i and i % dup_every == 0 and written:
            bad_written = [w for w in written[-payload_every:] if reg.subjects[str(w.resolve())] == "malicious"]
            # every third copy is of a booby-trapped file, so duplicates of both kinds always exist
            src = bad_written[-1] if bad_written and reg.duplicates % 3 == 0 else written[int(rng.integers(len(written)))]
            p = root / "drop" / "copies" / f"copy-{i:06d}{src.suffix}"
            _write(p, src.read_bytes())
            reg.subjects[str(p.resolve())] = reg.subjects[str(src.resolve())]
            reg.duplicates += 1
            continue
        if i % payload_every == payload_every - 1:
            ext, fn = bad[(i // payload_every) % len(bad)]
            label = "malicious"
        else:
            ext, fn = benign[i % len(benign)]
            label = "benign"
        p = vendor / f"model-{i:06d}{ext}"
        _write(p, fn(rng, int(rng.integers(4, 24))))
        written.append(p)
        reg.subjects[str(p.resolve())] = label
    (root / "drop" / "README.md").write_text("# vendor drop\nNot a model.\n")
    (root / "drop" / "LICENSE").write_text("MIT License\n")
    for k in range(hf_folders):
        folder = root / "mirror" / f"org-{k % 5}" / f"model-{k:04d}"
        malicious = k % 4 == 3
        _write(folder / "config.json", json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                   "n_embd": int(rng.integers(8, 64))}).encode())
        if malicious:
            _write(folder / "pytorch_model.bin", _payload_pickle(rng, 8))
        else:
            _write(folder / "model.safetensors", _safetensors(rng, int(rng.integers(4, 32))))
        reg.subjects[str(folder.resolve())] = "malicious" if malicious else "benign"
    for k in range(hub_repos):
        _hub_repo(root / "hub", f"org{k % 3}", f"net-{k:04d}", rng, malicious=k % 5 == 4, reg=reg)
    if hostile_layout:
        weird = root / "weird"
        weird.mkdir(exist_ok=True)
        for name, target in (("loop-a", "loop-b"), ("loop-b", "loop-a"), ("dangling.pt", "does-not-exist.pt")):
            if not (weird / name).is_symlink():
                os.symlink(target, weird / name)
        if not (weird / "linked-folder").is_symlink():
            os.symlink("../mirror", weird / "linked-folder")
        reg.problems = 4
    return reg


def _blob(repo: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    p = repo / "blobs" / digest
    if not p.exists():
        _write(p, data)
    return digest


def _hub_repo(hub: Path, org: str, name: str, rng: np.random.Generator, *, malicious: bool, reg: Registry) -> None:
    """``models--ORG--NAME`` with two revisions: same config blob, different weights (the second may be booby-trapped)."""
    repo = hub / f"models--{org}--{name}"
    config = json.dumps({"model_type": "vit", "architectures": ["ViTForImageClassification"]}).encode()
    revs = []
    for r in range(2):
        rev = hashlib.sha1(f"{org}/{name}/{r}".encode()).hexdigest()
        snap = repo / "snapshots" / rev
        snap.mkdir(parents=True, exist_ok=True)
        entries = {"config.json": _blob(repo, config)}
        bad = malicious and r == 1
        weights = _payload_pickle(rng, 8) if bad else _safetensors(rng, int(rng.integers(4, 32)))
        entries["pytorch_model.bin" if bad else "model.safetensors"] = _blob(repo, weights)
        for fname, digest in entries.items():
            link = snap / fname
            if not link.is_symlink():
                os.symlink(f"../../blobs/{digest}", link)
        reg.subjects[str(snap.resolve())] = "malicious" if bad else "benign"
        reg.hub_revisions += 1
        revs.append(rev)
    _write(repo / "refs" / "main", revs[-1].encode())
