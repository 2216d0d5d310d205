"""Probe ``fingerprint``: behavioural fingerprint, six-detector ensemble and calibrated trust score.

``run(subject, ctx) -> ProbeResult``

Parameters are declared in :mod:`probes.registry` (``prompts_file``, ``baseline``
folder, ``baseline_name``, ``arch`` for bare state_dicts in the baseline folder,
``detectors``, ``representations``, ``feature_groups``, ``loo_max``). From the
run context: ``ctx.data`` (reference images, ``--data``), ``ctx.earlier``
(Neural Cleanse / STRIP results of the same scan, used as meta-features),
``ctx.inputs["baseline_fingerprints"]`` (a stored baseline: list of
``{sha256, vector, feature_names}``) and ``ctx.cache_dir`` (fingerprint and
calibration cache; default the workbench cache, :func:`probes.cache.cache_dir`).

Details: ``detectors`` {name: calibrated percentile 0-1}, ``trust_score`` (0-100 or None),
``band``, ``n_above_95``, ``excluded`` {detector: reason}, ``features_used``, ``feature_groups``,
``baseline_size``, ``baseline_source``, ``calibration``, ``top_features`` (largest |z| vs the
baseline), ``within_model`` signals, ``meta_features``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from probes.context import RunContext
from probes.errors import ProbeError
from probes.fingerprint.features import FEATURE_VERSION, Fingerprint, compute_fingerprint
from probes.progress import check_cancel, null_progress
from probes.result import ProbeResult
from vocabulary import Band

__all__ = ["run", "compute_fingerprint", "fingerprints_for_folder", "score_fingerprint", "Fingerprint",
           "default_cache_dir"]

MODEL_SUFFIX_SKIP = {".json", ".py", ".txt", ".md", ".npz", ".npy", ".csv", ".yaml", ".yml", ".log", ".tmp"}
# what the ensemble compares by default: behaviour on the reference inputs, trigger sensitivity,
# the head's weight outliers, earlier probes' meta-features and (LMs) hidden-state statistics.
# Per-layer activation and per-tensor weight statistics (``act.*``, ``w.<tensor>.*``) are recorded
# but only used with ``feature_groups="all"`` (they need a baseline of the same architecture).
DEFAULT_FEATURE_GROUPS = ("out.", "trig.", "pen.trig.", "w.head.", "meta.", "lm.")
DEFAULT_REPRESENTATIONS = ("raw",)


def default_cache_dir() -> Path:
    """Where fingerprints of baseline models and calibrations are cached by default."""
    from probes.cache import cache_dir

    return cache_dir()


# -- baseline folders ------------------------------------------------------------------------

def _model_paths(folder: Path) -> list[Path]:
    from probes import formats

    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if formats.is_hf_folder(p):
                out.append(p)
            continue
        if p.suffix.lower() in MODEL_SUFFIX_SKIP or p.name.endswith("_arch.py"):
            continue
        try:
            fmt = formats.detect_file(p)
        except OSError:
            continue
        if fmt in formats.WEIGHT_FORMATS:
            out.append(p)
    return out


def _load_like(path: Path, subject, arch: str | None):
    """Load a baseline model safely; bare weights fall back to a copy of the subject's own module."""
    import torch

    from probes.subjects.base import IMAGE_CLASSIFIER, ImageClassifier
    from probes.subjects.loader import load_subject

    shape = getattr(subject, "input_shape", None) if subject.kind == IMAGE_CLASSIFIER else None
    if subject.kind != IMAGE_CLASSIFIER and path.is_dir():
        from probes.subjects.hf_lm import load_causal_lm

        return load_causal_lm(path, device=getattr(subject, "device", None))
    try:
        return load_subject(str(path), arch=arch, input_shape=shape, device=getattr(subject, "device", None))
    except ProbeError as first:
        module = getattr(subject, "module", None)
        if arch or subject.kind != IMAGE_CLASSIFIER or not isinstance(module, torch.nn.Module) \
                or subject.feature_fn is not None:
            raise
        from probes import formats
        from probes.subjects.arch import apply_state_dict, check_finite, extract_state_dict
        from probes.subjects.loader import check_zip

        fmt = formats.detect(path)
        if fmt == formats.SAFETENSORS:
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif fmt in (formats.TORCH_ZIP, formats.TORCH_LEGACY):
            if fmt == formats.TORCH_ZIP:
                check_zip(path)
            try:
                state = extract_state_dict(torch.load(str(path), map_location="cpu", weights_only=True), str(path))
            except ProbeError:
                raise
            except Exception:
                raise first from None
        else:
            raise
        check_finite(state.items(), str(path))
        clone = copy.deepcopy(module).cpu()
        apply_state_dict(clone, state, str(path), f"the subject's {type(module).__name__}")
        return ImageClassifier.from_module(clone, subject.input_shape, subject.num_classes, path=str(path),
                                           format=fmt, device=subject.device)


def _array_digest(data) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in (data.x, data.y):
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _fp_cache_path(cache_dir: str | Path, sha: str, data, seed: int, prompts_sha: str = "") -> Path:
    dsha = "none"
    if data is not None:
        dsha = getattr(data, "sha256", "") or _array_digest(data)
    return Path(cache_dir) / "fingerprints" / f"{sha}-v{FEATURE_VERSION}-s{seed}-d{dsha[:16]}{prompts_sha[:8]}.json"


def fingerprints_for_folder(folder, *, cache_dir=None, data=None, seed: int = 0, like=None, arch: str | None = None,
                            prompts: list[str] | None = None, exclude_sha256: set[str] | None = None,
                            skipped: list | None = None, progress=None, cancel=None) -> list[Fingerprint]:
    """Fingerprints of every model in ``folder`` (cached by sha256 under ``cache_dir``).

    ``like`` is the subject under test: baseline models are loaded with its input
    shape (and, for bare state_dicts without ``arch``, into a copy of its module).
    Models whose sha256 is in ``exclude_sha256`` (the subject itself) are left out.
    Models that cannot be loaded are skipped; ``skipped`` receives ``{path, reason}``.
    """
    from probes.fingerprint.features import subject_sha256 as _sha

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ProbeError(f"baseline folder not found: {folder}")
    cache_dir = cache_dir or default_cache_dir()
    paths = _model_paths(folder)
    if not paths:
        raise ProbeError(f"baseline folder {folder} holds no model files")
    progress = progress or null_progress
    pr_sha = ""
    if prompts:
        import hashlib

        pr_sha = hashlib.sha256("\n".join(prompts).encode()).hexdigest()
    out = []
    for i, p in enumerate(paths):
        check_cancel(cancel)
        sha = _sha(type("S", (), {"path": str(p)})())
        if exclude_sha256 and sha in exclude_sha256:
            if skipped is not None:
                skipped.append({"path": str(p), "reason": "the subject itself"})
            continue
        cpath = _fp_cache_path(cache_dir, sha, data, seed, pr_sha)
        fp = None
        if cpath.exists():
            try:
                fp = Fingerprint.from_record(json.loads(cpath.read_text()))
            except (ValueError, OSError, ProbeError):
                fp = None
        if fp is None:
            try:
                subj = _load_like(p, like, arch) if like is not None else _load_plain(p, arch)
                fp = compute_fingerprint(subj, data=data, seed=seed, prompts=prompts, cancel=cancel, sha256=sha)
            except ProbeError as exc:
                if skipped is not None:
                    skipped.append({"path": str(p), "reason": str(exc)})
                continue
            try:
                cpath.parent.mkdir(parents=True, exist_ok=True)
                tmp = cpath.with_suffix(".tmp")
                tmp.write_text(json.dumps(fp.to_record()))
                tmp.replace(cpath)
            except OSError:
                pass
        out.append(fp)
        progress(i + 1, len(paths), f"baseline {p.name}")
    return out


def _load_plain(path: Path, arch):
    from probes.subjects.loader import load_subject

    return load_subject(str(path), arch=arch)


# -- scoring ----------------------------------------------------------------------------------

def feature_matrix(fps: list[Fingerprint], names: list[str]) -> np.ndarray:
    """Rows of ``fps`` restricted to ``names`` (every fingerprint must have them)."""
    rows = []
    for f in fps:
        idx = {n: i for i, n in enumerate(f.feature_names)}
        rows.append([f.vector[idx[n]] for n in names])
    M = np.array(rows, np.float64).reshape(len(fps), len(names))
    M[~np.isfinite(M)] = 0.0
    return M


def common_features(fps: list[Fingerprint], groups=None) -> list[str]:
    """Feature names every fingerprint has (optionally only those starting with one of ``groups``)."""
    common = set(fps[0].feature_names) if fps else set()
    for f in fps[1:]:
        common &= set(f.feature_names)
    if groups:
        common = {n for n in common if any(n.startswith(g) for g in groups)}
    return sorted(common)


def _align(fp: Fingerprint, baseline: list[Fingerprint], groups=None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Feature names shared by the subject and every baseline member (optionally by prefix)."""
    common = set(fp.feature_names)
    for b in baseline:
        common &= set(b.feature_names)
    if groups:
        common = {n for n in common if any(n.startswith(g) for g in groups)}
    names = sorted(common)
    idx = {n: i for i, n in enumerate(fp.feature_names)}
    t = np.array([fp.vector[idx[n]] for n in names], np.float64)
    rows = []
    for b in baseline:
        bi = {n: i for i, n in enumerate(b.feature_names)}
        rows.append([b.vector[bi[n]] for n in names])
    B = np.array(rows, np.float64).reshape(len(baseline), len(names))
    B[~np.isfinite(B)] = 0.0
    return names, B, t


def score_fingerprint(fp: Fingerprint, baseline: list[Fingerprint], *, seed: int = 0, detectors=None,
                      representations=DEFAULT_REPRESENTATIONS, feature_groups=DEFAULT_FEATURE_GROUPS, loo_max: int = 30, cache_dir=None,
                      cancel=None, progress=None) -> dict[str, Any]:
    """Calibrated ensemble scores of one fingerprint against a clean baseline (no ProbeResult wrapping)."""
    from probes.fingerprint import calibration as C
    from probes.fingerprint.ensemble import DETECTORS, Standardiser

    detectors = list(detectors or DETECTORS)
    names, B, t = _align(fp, baseline, feature_groups)
    if not names:
        raise ProbeError("the subject and the baseline share no fingerprint features (different model kinds?)")
    cal, cached = C.cached_calibration(B, names, cache_dir=cache_dir, detectors=detectors,
                                       representations=tuple(representations), seed=seed, loo_max=loo_max,
                                       cancel=cancel, progress=progress)
    res = C.score_against(cal, B, t[None], cancel=cancel)
    std = Standardiser().fit(B)
    z = (t - std.center) / std.scale
    z[~std.keep] = 0.0
    order = np.argsort(-np.abs(z))[:8]
    return {
        "names": names, "calibration": cal, "calibration_cached": cached, "result": res,
        "trust_score": None if not cal.detectors else float(res["trust_score"][0]),
        "detectors": {d: float(res["detector_percentile"][d][0]) for d in cal.detectors},
        "per_representation": {k: round(float(v[0]), 4) for k, v in res["percentile"].items()},
        "exceedance": {k: round(float(v[0]), 3) for k, v in res["exceedance"].items()},
        "n_above_95": int(res["n_above_95"][0]),
        "top_features": [{"feature": names[i], "z": round(float(z[i]), 2)} for i in order if abs(z[i]) > 0],
    }


def _groups_of(names: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in names:
        parts = n.split(".")
        g = parts[0] if parts[0] in ("w", "meta", "pen") else ".".join(parts[:2])
        out[g] = out.get(g, 0) + 1
    return out


def _within_model(fp: Fingerprint, prior: dict | None) -> dict[str, Any]:
    """Signals readable from the model alone (reported, not turned into a score without a baseline)."""
    f = fp.as_dict()
    keys = ("meta.nc.anomaly_index", "meta.nc.min_over_median", "w.head.row_norm_maxz", "w.head.bias_maxz",
            "trig.patch.conc_max", "trig.blend.conc_max", "out.syn.top_class_share", "lm.trig.tv_word_maxz")
    return {k: round(f[k], 4) for k in keys if k in f}




def run(subject, ctx: RunContext) -> ProbeResult:
    """Probe entry point (``fingerprint``); see the module docstring for params and details."""
    t0 = time.perf_counter()
    params = ctx.params
    progress = ctx.progress_callback()
    cancel = ctx.cancel
    seed = ctx.seed
    data = ctx.data
    prior = dict(ctx.earlier)
    cache_dir = ctx.cache_dir or default_cache_dir()
    from probes.data import LabelledData
    from probes.lm_prompts import load_prompts_file
    from probes.subjects.base import IMAGE_CLASSIFIER

    if data is not None and not isinstance(data, LabelledData):
        raise ProbeError("the reference data must be LabelledData (a loaded --data file) or None")
    if subject.kind != IMAGE_CLASSIFIER:
        data = None
    prompts = None
    if subject.kind != IMAGE_CLASSIFIER and params["prompts_file"]:
        prompts = load_prompts_file(params["prompts_file"])
    total = 4
    progress(0, total, "fingerprinting the subject")
    check_cancel(cancel)
    fp = compute_fingerprint(subject, data=data, seed=seed, prior_results=prior, prompts=prompts, cancel=cancel)
    progress(1, total, f"fingerprint: {len(fp.feature_names)} features")

    # -- the baseline
    baseline: list[Fingerprint] = []
    skipped: list[dict] = []
    source = None
    stored = ctx.inputs.get("baseline_fingerprints")
    if stored:
        source = f"stored baseline {params['baseline_name'] or ''}".strip()
        for r in stored:
            if r.get("kind") and r["kind"] != subject.kind:
                skipped.append({"path": r.get("path", r.get("sha256", "?")), "reason": f"a {r['kind']} model"})
                continue
            if fp.sha256 and r.get("sha256") == fp.sha256:
                skipped.append({"path": r.get("path", r["sha256"]), "reason": "the subject itself"})
                continue
            baseline.append(Fingerprint.from_record(r))
    elif params["baseline"]:
        folder = params["baseline"]
        source = f"folder {folder}"
        baseline = fingerprints_for_folder(
            folder, cache_dir=cache_dir, data=data, seed=seed, like=subject, arch=params["arch"],
            prompts=prompts, exclude_sha256={fp.sha256} if fp.sha256 else None, skipped=skipped,
            cancel=cancel, progress=lambda d, t, m="": progress(1, total, m))
    progress(2, total, f"baseline: {len(baseline)} models")
    check_cancel(cancel)

    meta = {n: round(float(v), 4) for n, v in fp.as_dict().items() if n.startswith("meta.")}
    details: dict[str, Any] = {
        "features_total": len(fp.feature_names), "feature_groups": _groups_of(fp.feature_names),
        "baseline_size": len(baseline), "baseline_source": source, "baseline_skipped": skipped,
        "within_model": _within_model(fp, prior), "meta_features": meta, "sha256": fp.sha256,
        "prior_results": sorted(prior),
        "reference_inputs": ("synthetic" + (f" + data {data.source} ({len(data)})" if data is not None else ""))
        if subject.kind == IMAGE_CLASSIFIER else f"{len(prompts) if prompts else 'built-in'} prompts",
    }
    from probes.fingerprint.ensemble import DETECTORS, excluded_detectors

    detectors = list(params["detectors"] or DETECTORS)
    excluded = excluded_detectors(len(baseline), detectors)
    if len(excluded) == len(detectors):
        # no usable baseline: report what the model shows on its own, no ensemble score
        extra, summary = _no_baseline(prior, len(baseline), excluded, source)
        details.update(extra)
        progress(total, total, "done")
        return ProbeResult("fingerprint", "inconclusive", 0.0, summary, params=dict(params),
                           duration_s=time.perf_counter() - t0, details=details)

    reps = params["representations"]
    groups = params["feature_groups"]
    if groups is None:
        groups = DEFAULT_FEATURE_GROUPS
    elif isinstance(groups, str):
        groups = None if groups == "all" else tuple(g.strip() for g in groups.split(",") if g.strip())
    elif isinstance(groups, list) and all(isinstance(g, str) for g in groups):
        groups = tuple(groups)
    else:
        raise ProbeError(f"fingerprint: param feature_groups must be \"all\", a list or comma-separated prefixes, "
                         f"got {groups!r}")
    out = score_fingerprint(fp, baseline, seed=seed, detectors=detectors, representations=tuple(reps),
                            feature_groups=groups, loo_max=int(params["loo_max"]),
                            cache_dir=cache_dir, cancel=cancel,
                            progress=lambda d, t, m="": progress(2, total, m))
    progress(3, total, "scored")
    trust = out["trust_score"]
    trust_int = int(round(trust))
    band = Band.of(trust_int)
    cal = out["calibration"]
    n_used = len(cal.detectors)
    details.update({
        "detectors": {d: round(v, 4) for d, v in out["detectors"].items()},
        "trust_score": trust_int, "band": band.value if band else None, "n_above_95": out["n_above_95"],
        "n_detectors": n_used, "excluded": excluded,
        "features_used": len(out["names"]), "feature_groups_used": _groups_of(out["names"]),
        "representations": list(reps), "per_representation": out["per_representation"],
        "exceedance": out["exceedance"], "top_features": out["top_features"],
        "calibration": {"method": cal.method, "baseline_size": cal.n, "cached": out["calibration_cached"]},
    })
    if not [n for n in out["names"] if n.startswith("meta.")] and meta:
        details["meta_note"] = "meta-features not used by the ensemble: the baseline has none (fingerprinted without earlier probes)"
    verdict = {Band.LOW: "clean", Band.MEDIUM: "inconclusive"}.get(band, "suspicious") if band else "inconclusive"
    summary = (f"trust score {trust_int} ({band} risk): {out['n_above_95']} of {n_used} detectors above the "
               f"95th percentile of a {len(baseline)}-model baseline")
    progress(total, total, "done")
    return ProbeResult("fingerprint", verdict, trust / 100.0, summary, params=dict(params),
                       duration_s=time.perf_counter() - t0, details=details)


def _no_baseline(prior, n, excluded, source) -> tuple[dict[str, Any], str]:
    """Without a usable baseline: no ensemble score and no verdict of its own (details, summary).

    Earlier probes' evidence (e.g. Neural Cleanse) already counts in the layered verdict within its own
    band; turning it into a second "trust score" here counted it twice and gave a clean model's ordinary
    anomaly index a medium risk.
    """
    nc = (prior or {}).get("neural-cleanse")
    why = ("no baseline given (--baseline DIR or a stored baseline)" if not source
           else f"baseline too small ({n} usable model(s)) for any detector")
    details: dict[str, Any] = {"detectors": {}, "excluded": excluded, "features_used": 0, "n_above_95": 0,
                               "n_detectors": 0, "baseline_note": why, "trust_score": None, "band": None}
    summary = f"{why}; fingerprint recorded, no trust score without a clean baseline"
    if nc and nc.get("anomaly_index") is not None:
        summary += f" (Neural Cleanse's anomaly index {float(nc['anomaly_index']):.2f} counts on its own)"
    return details, summary
