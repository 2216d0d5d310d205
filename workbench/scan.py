"""The layered scan, headless: static scan → safe load → the probes that apply → verdict.

``prepare`` validates everything an examiner typed *before* anything is written
(bad input is exit 2 with nothing in the case file); ``run_scan`` does the work,
recording each probe as a run when a case store is given.
"""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from probes import registry
from probes.data import LabelledData, load_npz
from probes.errors import Cancelled, ProbeError
from probes.verdict import layered_verdict
from workbench import jobs
from workbench.subject_files import SubjectInfo, describe

# (stage, done, total, message); stage is a probe name or "load"
ScanProgress = Callable[[str, int, int, str], None]


@dataclass
class ScanOptions:
    probes: list[str] | None = None  # None: the default layered set for the subject's kind
    data: str | None = None
    audit: str | None = None
    arch: str | None = None
    input_shape: tuple[int, ...] | None = None
    seed: int = 0
    device: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # extra probe parameters (--param k=v, --reference ...)


@dataclass
class PreparedScan:
    path: Path
    subject: SubjectInfo
    options: ScanOptions
    data: LabelledData | None
    audit: LabelledData | None


@dataclass
class ScanReport:
    subject: dict[str, Any]
    results: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    verdict: dict[str, Any]
    subject_id: int | None = None
    run_ids: list[int] = field(default_factory=list)
    offers: list[dict[str, Any]] = field(default_factory=list)  # opt-in probes worth running next

    def to_dict(self) -> dict[str, Any]:
        """The DESIGN.md ``scan --json`` object (plus ``offers``: opt-in probes the evidence calls for)."""
        v = self.verdict
        return {"subject": self.subject, "results": self.results,
                "trust": {"score": v["score"], "band": v["band"]},
                "verdict": v["verdict"], "evidence": v["evidence"], "errors": self.errors,
                "offers": self.offers}


def dynamic_offer(path: str | Path, static: dict[str, Any] | None, already: set[str]) -> list[dict[str, Any]]:
    """Offer the opt-in ``dynamic`` probe when the static scan is inconclusive or only found review-tier imports."""
    if "dynamic" in already:
        return []
    from probes.dynamic_load import offer_after_static

    if not offer_after_static(static):
        return []
    why = ("the static scan could not read everything" if static["verdict"] == "inconclusive"
           else "the static scan found imports to review")
    return [{"probe": "dynamic", "reason": f"{why}; watch the file load in a sealed child process",
             "command": f"workbench scan {shlex.quote(str(path))} --probes dynamic"}]


def parse_probe_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        registry.get(n)  # raises ProbeError for unknown names
    return names


def prepare(path: str | Path, options: ScanOptions) -> PreparedScan:
    """Validate inputs and hash the subject; raises ProbeError with a one-line message."""
    subject = describe(path)
    if options.probes:
        for n in options.probes:
            registry.get(n)
    data = load_npz(options.data) if options.data else None
    audit = load_npz(options.audit) if options.audit else None
    if options.arch and ":" not in options.arch:
        raise ProbeError(f"--arch must be FILE.py:ClassName, got {options.arch!r}")
    if options.arch and not Path(options.arch.rsplit(":", 1)[0]).is_file():
        raise ProbeError(f"architecture file not found: {options.arch.rsplit(':', 1)[0]}")
    for spec in registry.PROBES.values():  # bad --param values fail here, before anything is written
        if options.probes is None and spec.default or options.probes and spec.name in options.probes:
            spec.check_params(options.params)
    for key, spec_data in (("data", data), ("audit", audit)):
        wanted = [n for n in (options.probes or []) if registry.get(n).data == key]
        if wanted and spec_data is None and key == "audit":
            raise ProbeError(f"probe {wanted[0]} needs --audit NPZ (the suspect training set)")
    return PreparedScan(Path(subject.path), subject, options, data, audit)


def _load(prepared: PreparedScan):
    from probes.subjects.loader import load_subject

    shape = prepared.options.input_shape
    if shape is None and prepared.data is not None:
        shape = tuple(prepared.data.x.shape[1:])
    elif shape is None and prepared.audit is not None:
        shape = tuple(prepared.audit.x.shape[1:])
    return load_subject(str(prepared.path), arch=prepared.options.arch, input_shape=shape,
                        device=prepared.options.device)


def _params_for(name: str, prepared: PreparedScan, earlier: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec = registry.get(name)
    params: dict[str, Any] = {"seed": prepared.options.seed}
    if spec.data == "data" or name == "fingerprint":
        params["data"] = prepared.data
    if spec.data == "audit":
        params["audit"] = prepared.audit
    nc = earlier.get("neural-cleanse")
    if name == "strip" and nc and nc.get("mask") is not None:
        # suspected_target tells STRIP whether Neural Cleanse flagged this trigger (None: it is the clean
        # model's smallest trigger, which is no evidence of a backdoor even when it survives superimposition)
        params["trigger"] = {"mask": nc["mask"], "pattern": nc.get("pattern"), "source": "neural-cleanse",
                             "suspected_target": nc.get("suspected_target"),
                             "candidate_class": nc.get("candidate_class")}
    if name == "fingerprint":
        params["_prior_results"] = dict(earlier)
    params.update(prepared.options.params)
    return params


def run_scan(prepared: PreparedScan, *, store=None, case_id: int | None = None,
             progress: ScanProgress | None = None, cancel: threading.Event | None = None,
             on_result: Callable[[dict[str, Any]], None] | None = None) -> ScanReport:
    """Run the layered scan; each probe's outcome is recorded as a run when ``store`` is given."""
    progress = progress or (lambda *a: None)
    opts = prepared.options
    subject_id = None
    if store is not None:
        existing = store.find_subject(case_id, prepared.subject.sha256)
        s = prepared.subject
        subject_id = existing["id"] if existing else store.add_subject(
            case_id, path=s.path, sha256=s.sha256, size=s.size, format=s.format, kind=s.kind, files=s.files,
            name=s.name)
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    earlier: dict[str, dict[str, Any]] = {}
    run_ids: list[int] = []
    subject_dict = {**prepared.subject.to_dict()}

    def run(name: str, target: Any) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        out = jobs.run_probe(name, target, _params_for(name, prepared, earlier), store=store, case_id=case_id,
                             subject_id=subject_id, progress=lambda d, t, m="": progress(name, d, t, m),
                             cancel=cancel)
        if out.run_id is not None:
            run_ids.append(out.run_id)
        if out.result is not None:
            results.append(out.result)
            earlier[name] = out.result
            if on_result:
                on_result(out.result)
        else:
            errors.append({"probe": name, "status": out.status, "error": out.error})
            if out.status == "cancelled":
                raise Cancelled("cancelled")

    requested = opts.probes
    path_probes = [n for n in (requested or ["static"]) if registry.get(n).needs == "path"]
    for name in path_probes:
        run(name, str(prepared.path))
    static = earlier.get("static")
    offers = dynamic_offer(prepared.path, static, set(earlier))
    model_requested = [n for n in requested if registry.get(n).needs == "model"] if requested else None
    if model_requested == []:
        return _report(subject_dict, results, errors, subject_id, run_ids, offers)
    if static and static.get("verdict") == "malicious":
        worst = (static.get("findings") or [{}])[0]
        call = ".".join(x for x in (worst.get("module"), worst.get("name")) if x)
        errors.append({"probe": "load", "status": "refused",
                       "error": f"refused to load: the static scan found a code-execution payload ({call})"})
        return _report(subject_dict, results, errors, subject_id, run_ids, offers)
    progress("load", 0, 1, "loading torch and the model")
    t0 = time.perf_counter()
    try:
        subject = _load(prepared)
    except ProbeError as exc:
        errors.append({"probe": "load", "status": "failed", "error": jobs.one_line(exc)})
        return _report(subject_dict, results, errors, subject_id, run_ids, offers)
    except Exception as exc:  # hostile input: a one-line error for this subject, never a crash
        errors.append({"probe": "load", "status": "failed", "error": f"{type(exc).__name__}: {jobs.one_line(exc)}"})
        return _report(subject_dict, results, errors, subject_id, run_ids, offers)
    progress("load", 1, 1, f"loaded in {time.perf_counter() - t0:.1f}s")
    subject_dict["kind"] = subject.kind
    if store is not None and subject_id is not None:
        store.set_subject_kind(subject_id, subject.kind)
    names = model_requested or registry.applicable(subject.kind, have_data=prepared.data is not None,
                                                   have_audit=prepared.audit is not None)
    names = [n for n in names if registry.get(n).needs == "model"]
    for name in names:
        spec = registry.get(name)
        if spec.kinds and subject.kind not in spec.kinds:
            errors.append({"probe": name, "status": "skipped",
                           "error": f"{name} does not apply to a {subject.kind} subject"})
            continue
        run(name, subject)
    return _report(subject_dict, results, errors, subject_id, run_ids, offers)


def _report(subject, results, errors, subject_id, run_ids, offers) -> ScanReport:
    return ScanReport(subject, results, errors, layered_verdict(results), subject_id, run_ids, offers)
