"""The baseline of benign loads: build ordinary model files locally, load each in the sandbox, learn.

The One-Class SVM is refitted in-process from cached *feature vectors* (JSON,
milliseconds); the traces themselves are produced once per environment (torch,
numpy, scikit-learn, joblib and Python versions are part of the cache key,
because the import behaviour of a load depends on them). Nothing in the cache is
ever unpickled: a security tool must not trust a pickle in its own cache dir.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.dynamic_load import features as F

MODEL_VERSION = "dynload-ocsvm-2"
NU = 0.02
GAMMA = 0.1  # RBF width on log1p-count features: one unit of log-count ~ a factor e in a count


def cache_dir() -> Path:
    """The benign-load baseline's cache folder."""
    from probes.cache import cache_dir as root

    return root("dynamic-load")


def environment_key(preload: tuple[str, ...]) -> str:
    import importlib.metadata as md

    parts = [MODEL_VERSION, sys.version.split()[0], ",".join(preload)]
    for dist in ("torch", "numpy", "scikit-learn", "joblib"):
        try:
            parts.append(f"{dist}={md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist}=none")
    src = Path(__file__).with_name("_child.py").read_bytes() + Path(F.__file__).read_bytes() + Path(__file__).read_bytes()
    parts.append(hashlib.sha256(src).hexdigest()[:12])
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- benign corpus

def build_benign_corpus(dest: str | os.PathLike, seed: int = 0) -> list[tuple[Path, str, str]]:
    """Ordinary model files of the kinds the probe meets: (path, loader, family). Deterministic."""
    import argparse
    import collections
    import datetime

    import joblib
    import numpy as np
    import torch
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out: list[tuple[Path, str, str]] = []

    def tsave(name, obj, legacy=False):
        p = dest / name
        torch.save(obj, p, _use_new_zipfile_serialization=not legacy)
        out.append((p, "torch", "torch-legacy" if legacy else "torch-zip"))

    def jdump(name, obj, **kw):
        p = dest / name
        joblib.dump(obj, p, **kw)
        out.append((p, "joblib", "joblib"))

    def pdump(name, obj, protocol):
        p = dest / name
        with open(p, "wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)
        out.append((p, "pickle", f"pickle-p{protocol}"))

    nn = torch.nn
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 4))
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 3 * 3, 10))
    lstm = nn.LSTM(6, 8, batch_first=True)
    emb = nn.Sequential(nn.Embedding(50, 8), nn.LayerNorm(8))
    enc = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    gru = nn.GRU(4, 4)
    wide = nn.ModuleList([nn.Linear(4, 4) for _ in range(60)])
    tsave("mlp_sd.pt", mlp.state_dict())
    tsave("cnn_sd.pt", cnn.state_dict())
    tsave("lstm_sd.pt", lstm.state_dict())
    tsave("emb_sd.pt", emb.state_dict())
    tsave("enc_sd.pt", enc.state_dict())
    tsave("wide_sd.pt", wide.state_dict())
    tsave("mlp_full.pt", mlp)
    tsave("cnn_full.pt", cnn)
    tsave("lstm_full.pt", lstm)
    tsave("enc_full.pt", enc)
    tsave("gru_full.pt", gru)
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)
    mlp(torch.randn(2, 8)).sum().backward()
    opt.step()
    sgd = torch.optim.SGD(cnn.parameters(), lr=0.1, momentum=0.9)
    tsave("ckpt_adam.pt", {"epoch": 3, "model": mlp.state_dict(), "optimizer": opt.state_dict(), "loss": 0.25,
                           "args": argparse.Namespace(lr=1e-3, epochs=3), "date": datetime.date(2025, 1, 1)})
    tsave("ckpt_sgd.pt", {"state_dict": cnn.state_dict(), "optim": sgd.state_dict(), "best_acc": 0.9,
                          "classes": ["a", "b"], "config": {"depth": 2, "dims": (4, 8)}})
    tsave("tensors.pt", [torch.randn(3), torch.arange(4), torch.zeros(2, dtype=torch.float16),
                         torch.ones(2, dtype=torch.bool), torch.randn(2, 2, dtype=torch.float64)])
    tsave("param.pt", {"w": nn.Parameter(torch.randn(3)), "b": torch.randn(3).requires_grad_()})
    tsave("mlp_legacy.pt", mlp.state_dict(), legacy=True)
    tsave("cnn_legacy.pt", cnn, legacy=True)
    tsave("ckpt_legacy.pt", {"epoch": 1, "model": lstm.state_dict()}, legacy=True)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.save is deprecated, but TorchScript files are still everywhere
        for name, mod in (("mlp_script.pt", mlp), ("cnn_script.pt", cnn)):
            p = dest / name
            torch.jit.save(torch.jit.script(mod.eval()), str(p))
            out.append((p, "torch", "torchscript"))

    x = rng.normal(size=(60, 4))
    y = (x[:, 0] > 0).astype(int)
    jdump("lr.joblib", LogisticRegression().fit(x, y))
    jdump("scaler.joblib", StandardScaler().fit(x))
    jdump("pca.joblib", PCA(2).fit(x), compress=3)
    jdump("rf.joblib", RandomForestClassifier(n_estimators=3, max_depth=3, random_state=seed).fit(x, y), compress=3)
    jdump("pipe.joblib", make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y))
    jdump("kmeans.joblib", KMeans(2, n_init=1, random_state=seed).fit(x))
    jdump("tree.joblib", DecisionTreeClassifier(max_depth=2, random_state=seed).fit(x, y), compress=("gzip", 3))
    jdump("svc.joblib", SVC().fit(x, y), compress=("bz2", 3))
    jdump("arrays.joblib", {"w": rng.normal(size=(30, 30)), "b": np.zeros(3, dtype=np.int32)})
    jdump("arrays_xz.joblib", [rng.normal(size=10), {"k": np.float32(1.5)}], compress=("xz", 3))

    data = {"weights": rng.normal(size=(4, 4)), "bias": np.zeros(4), "scale": np.float64(0.5),
            "labels": ["cat", "dog"], "meta": collections.OrderedDict(version=2, name="m")}
    for proto in (0, 2, 4, 5):
        pdump(f"arrays_p{proto}.pkl", data, proto)
    pdump("python_values.pkl", {"s": {1, 2}, "f": frozenset({"a"}), "b": b"\x00\x01", "c": complex(1, 2),
                                "t": (1, 2.0, None), "ba": bytearray(b"xy"), "d": datetime.datetime(2025, 1, 2),
                                "dq": collections.deque([1, 2]), "cnt": collections.Counter("aab")}, 2)
    pdump("vocab.pkl", {"tokens": [f"w{i}" for i in range(200)], "ids": list(range(200))}, 4)
    pdump("numpy_mixed.pkl", [np.arange(5, dtype=np.int64), np.array(["a", "b"]),
                              np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])], 4)

    for proto in (0, 1, 3, 5):
        pdump(f"python_values_p{proto}.pkl", {"a": [1, 2.5, "x", b"y", None, True], "s": {1, 2}, "t": (1,),
                                             "f": frozenset({3}), "c": 1 + 2j}, proto)
    pdump("randomstate.pkl", np.random.RandomState(seed + 1), 4)
    pdump("generator.pkl", np.random.default_rng(seed), 4)
    pdump("scalars.pkl", [np.float64(1.5), np.int32(3), np.dtype("f4"), np.bool_(True)], 4)
    pdump("tree.sav", DecisionTreeClassifier(max_depth=3, random_state=seed).fit(x, y), 4)
    pdump("lr.pkl", LogisticRegression().fit(x, y), 5)
    pdump("pipe.pkl", make_pipeline(StandardScaler(), PCA(2)).fit(x), 2)
    import decimal
    import fractions
    import pathlib
    import types
    import uuid

    pdump("run_config.pkl", {"out": pathlib.Path("/data/run1"), "ckpt": pathlib.PurePosixPath("a/b.pt"),
                             "args": argparse.Namespace(lr=0.1, out=pathlib.Path("x")), "step": decimal.Decimal("1.5"),
                             "ratio": fractions.Fraction(1, 3), "id": uuid.UUID(int=seed + 1),
                             "ns": types.SimpleNamespace(a=1), "when": datetime.timedelta(hours=1),
                             "dd": collections.defaultdict(list, {"a": [1]})}, 4)
    tsave("tensors_paths.pt", {"t": torch.ones(3), "p": pathlib.Path("/data/run1"),
                               "args": argparse.Namespace(lr=0.1)})
    try:  # what Hugging Face training_args.bin / config pickles look like (if transformers is installed)
        from transformers import PretrainedConfig, TrainingArguments
        from transformers.trainer_utils import IntervalStrategy
        from transformers.training_args import OptimizerNames

        targs = TrainingArguments.__new__(TrainingArguments)  # no __init__: it wants accelerate
        targs.__dict__.update(output_dir="out", eval_strategy=IntervalStrategy("steps"),
                              optim=OptimizerNames("adamw_torch"), learning_rate=5e-5, seed=seed)
        pdump("training_args.bin", targs, 4)
        pdump("hf_config.pkl", PretrainedConfig(num_labels=3), 4)
    except Exception:  # noqa: BLE001  (transformers absent or changed: the baseline simply lacks these)
        pass
    p = dest / "weights.npz"
    np.savez_compressed(p, w=rng.normal(size=(3, 3)), b=np.arange(3))
    out.append((p, "numpy", "npz"))
    p = dest / "plain.npy"
    np.save(p, rng.normal(size=(4, 4)))
    out.append((p, "numpy", "npy"))
    p = dest / "objects.npy"
    np.save(p, np.array([{"a": 1}, [1, 2], "x"], dtype=object), allow_pickle=True)
    out.append((p, "numpy", "npy-object"))
    return out


# ----------------------------------------------------------------------------- the detector

@dataclass
class Baseline:
    key: str
    vocab: dict[str, list[str]]
    X: list[list[float]]
    names: list[str]
    _model: Any = None
    _scaler: Any = None
    threshold: float = 0.0
    spread: float = 1.0
    skipped: list = None

    def fit(self) -> Baseline:
        import numpy as np
        from sklearn.svm import OneClassSVM

        X = np.asarray(self.X, dtype=float)
        # Features are already log1p counts on a common scale; standardising would blow up the ones that are
        # almost always zero in benign loads (one rare benign value would then look like an attack).
        self._scaler = None
        Z = X
        self._model = OneClassSVM(kernel="rbf", nu=NU, gamma=GAMMA).fit(Z)
        d = self._model.decision_function(Z)
        self.spread = float(max(np.std(d), 1e-3))
        # Every benign load of the baseline is an inlier by construction; leave a margin below the worst.
        self.threshold = float(min(0.0, d.min()) - 0.5 * self.spread)
        return self

    def decision(self, feats: dict[str, float]) -> float:
        import numpy as np

        z = np.asarray([[feats[n] for n in F.FEATURES]], dtype=float)
        return float(self._model.decision_function(z)[0])

    def score(self, decision: float) -> float:
        """0..1, 0.5 at the threshold, higher = more anomalous."""
        x = (self.threshold - decision) / self.spread
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "vocab": self.vocab, "X": self.X, "names": self.names, "features": list(F.FEATURES),
                "skipped": self.skipped or []}


_MEMO: dict[str, Baseline] = {}


def _trace_dict(trace) -> dict[str, Any]:
    done = trace.done or {}
    return {"events": trace.events, "counts": done.get("counts") or {}, "load_ok": bool(done.get("ok")),
            "abnormal": bool(trace.timed_out or trace.zygote_died or (trace.exit or {}).get("signal"))}


def get_baseline(zygote, *, preload: tuple[str, ...], progress: Callable[[int, int, str], None] | None = None,
                 cancel=None, retrain: bool = False) -> Baseline:
    """Load the cached baseline for this environment, or build it (a few dozen benign loads)."""
    key = environment_key(tuple(preload))
    if not retrain and key in _MEMO:
        return _MEMO[key]
    path = cache_dir() / f"baseline-{key}.json"
    if not retrain:
        try:
            data = json.loads(path.read_text("utf-8"))
            if data.get("key") == key and data.get("features") == list(F.FEATURES):
                b = Baseline(key, data["vocab"], data["X"], data["names"]).fit()
                b.skipped = data.get("skipped") or []
                _MEMO[key] = b
                return b
        except (OSError, ValueError, KeyError):
            pass
    from probes.progress import check_cancel

    summaries, traces, names, skipped = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="wb-benign-") as tmp:
        files = build_benign_corpus(tmp)
        for i, (p, loader, family) in enumerate(files):
            check_cancel(cancel)
            if progress:
                progress(i, len(files), f"baseline: benign load {i + 1}/{len(files)} ({family})")
            with zygote.lock:
                tr = zygote.run_job(str(p), loader, timeout_s=60, cpu_s=60, memory_mb=2048, cancel=cancel)
            td = _trace_dict(tr)
            if not td["load_ok"] or any(e.get("r") for e in tr.events):
                # A benign file this environment cannot load cleanly is left out (and named), not fatal.
                skipped.append(f"{p.name}: {(tr.done or {}).get('error')} "
                               f"{[(e.get('e'), e.get('a', [''])[:1], e.get('r')) for e in tr.events if e.get('r')][:2]}"[:300])
                continue
            summaries.append(F.summarize(tr.events))
            traces.append(td)
            names.append(f"{family}:{p.name}")
    vocab = F.build_vocab(summaries)
    X = []
    for i, td in enumerate(traces):
        # Each benign load twice: against the full vocabulary (as a file of a known kind will look) and
        # against a leave-one-out vocabulary (its own rare names novel, as a benign file of a new kind looks).
        loo = F.build_vocab(summaries[:i] + summaries[i + 1:])
        for voc in (vocab, loo):
            feats = F.vector(td, voc, summaries[i])
            row = [feats[n] for n in F.FEATURES]
            if row not in X:
                X.append(row)
    if len(traces) < 10:
        raise RuntimeError(f"too few benign loads for a baseline ({len(traces)}); skipped: {skipped[:3]}")
    b = Baseline(key, vocab, X, names).fit()
    b.skipped = skipped
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_suffix(".tmp")
        tmp_path.write_text(json.dumps(b.to_json()), "utf-8")
        os.replace(tmp_path, path)
    except OSError:
        pass
    _MEMO[key] = b
    return b
