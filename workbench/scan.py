"""The layered scan, headless: static scan → safe load → the probes that apply → verdict.

``prepare`` validates everything an examiner typed *before* anything is written
(bad input is exit 2 with nothing in the case file); ``run_scan`` does the work,
recording each probe as a run when a case store is given.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes import registry
from probes.context import ProgressEvent, RunContext
from probes.data import LabelledData, load_npz
from probes.errors import Cancelled, ProbeError, explain
from probes.params import split_for_probes
from vocabulary.layered import layered_verdict
from workbench import jobs
from workbench.subject_files import SubjectInfo, describe

ScanProgress = Callable[[ProgressEvent], None]


@dataclass
class ScanOptions:
    probes: list[str] | None = None  # None: the default layered set for the subject's kind
    data: str | None = None
    audit: str | None = None
    arch: str | None = None
    input_shape: tuple[int, ...] | None = None
    seed: int = 0
    device: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the examiner's --param values (name or probe.name)
    inputs: dict[str, Any] = field(default_factory=dict)  # loaded auxiliary inputs (e.g. a stored baseline)
    threads: int | None = None  # torch threads (None: the workbench default)


@dataclass
class PreparedScan:
    path: Path
    subject: SubjectInfo
    options: ScanOptions
    data: LabelledData | None
    audit: LabelledData | None
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # resolved parameters of every probe it may run


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
        """The ``scan --json`` object (README "Commands") (plus ``offers``: opt-in probes the evidence calls for)."""
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


def candidate_probes(options: ScanOptions, kind: str | None, *, have_data: bool, have_audit: bool) -> list[str]:
    """The probes a scan may run: the examiner's list, or the defaults for the kind as far as it is known."""
    if options.probes:
        return list(options.probes)
    known = kind if kind in ("image-classifier", "causal-lm") else None
    if known is None:  # the kind is only certain after the load: keep every default probe the data allow
        return [n for n in registry.PROBES if registry.get(n).default and (
            not registry.get(n).data_required or (have_audit if registry.get(n).data == "audit" else have_data))]
    return registry.applicable(known, have_data=have_data, have_audit=have_audit)


def prepare(path: str | Path, options: ScanOptions) -> PreparedScan:
    """Validate inputs, parameters and data and hash the subject; raises ProbeError with a one-line message.

    Nothing is written and nothing is loaded: every parameter the examiner gave is checked against the
    declarations of the probes this scan may run (exit 2 before the case file is touched).
    """
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
    names = candidate_probes(options, subject.kind, have_data=data is not None, have_audit=audit is not None)
    for n in options.probes or []:
        spec = registry.get(n)
        if spec.data_required and (audit if spec.data == "audit" else data) is None:
            flag = "--audit NPZ (the suspect training set)" if spec.data == "audit" else "--data NPZ (clean labelled inputs)"
            raise ProbeError(f"probe {n} needs {flag}")
    shared = split_for_probes(options.params, [(n, registry.get(n).all_params) for n in names])
    params = {n: registry.get(n).resolve_params({"seed": options.seed, **shared[n]}) for n in names}
    return PreparedScan(Path(subject.path), subject, options, data, audit, params)


def _load(prepared: PreparedScan):
    from probes.subjects.loader import load_subject

    shape = prepared.options.input_shape
    if shape is None and prepared.data is not None:
        shape = tuple(prepared.data.x.shape[1:])
    elif shape is None and prepared.audit is not None:
        shape = tuple(prepared.audit.x.shape[1:])
    return load_subject(str(prepared.path), arch=prepared.options.arch, input_shape=shape,
                        device=prepared.options.device)


def context_for(name: str, prepared: PreparedScan, earlier: dict[str, dict[str, Any]], *,
                progress: ScanProgress | None = None, cancel: threading.Event | None = None,
                on_partial: Callable[[Any], None] | None = None) -> RunContext:
    """The run context of probe ``name`` in this scan: its resolved parameters, data, and earlier results it uses."""
    from workbench.paths import cache_dir

    spec = registry.get(name)
    params = prepared.params.get(name)
    if params is None:  # a probe the preparation did not foresee (the kind turned out different)
        params = spec.resolve_params({"seed": prepared.options.seed})
    return RunContext(name, dict(params),
                      data=prepared.data if spec.data == "data" else None,
                      audit=prepared.audit if spec.data == "audit" else None,
                      earlier={u: earlier[u] for u in spec.uses if u in earlier},
                      inputs=prepared.options.inputs, cache_dir=cache_dir(), cancel=cancel or threading.Event(),
                      on_progress=progress, on_partial=on_partial)


def _record_subject(store, case_id: int | None, s: SubjectInfo) -> int:
    """The subject's id in the case, adding it (by content hash) when it is new."""
    existing = store.find_subject(case_id, s.sha256)
    if existing:
        return int(existing["id"])
    sid = int(store.add_subject(case_id, path=s.path, sha256=s.sha256, size=s.size, format=s.format, kind=s.kind,
                                files=s.files, name=s.name))
    from workbench.custody import path_changed

    path_changed(store, case_id, sid)
    return sid


def _load_refusal(static_ran: bool, static: dict[str, Any] | None) -> str | None:
    """Why the subject must not be loaded after the file probes (None: it may be)."""
    if static_ran and static is None:
        return "refused to load: the static scan did not complete, so the files are unchecked"
    if static and static.get("verdict") == "malicious":
        worst = (static.get("findings") or [{}])[0]
        call = ".".join(x for x in (worst.get("module"), worst.get("name")) if x)
        return f"refused to load: the static scan found a code-execution payload ({call})"
    return None


# complexity: the layered pipeline, stage after stage, with its early exits
def run_scan(prepared: PreparedScan, *, store=None, case_id: int | None = None,  # noqa: C901 (see above)
             progress: ScanProgress | None = None, cancel: threading.Event | None = None,
             on_result: Callable[[dict[str, Any]], None] | None = None) -> ScanReport:
    """Run the layered scan; each probe's outcome is recorded as a run when ``store`` is given."""
    opts = prepared.options
    cancel = cancel or threading.Event()
    subject_id = _record_subject(store, case_id, prepared.subject) if store is not None else None
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    earlier: dict[str, dict[str, Any]] = {}
    run_ids: list[int] = []
    subject_dict = {**prepared.subject.to_dict()}

    def note(stage: str, done: int, total: int, message: str) -> None:
        if progress is not None:
            progress(ProgressEvent("load", stage, done, total, "steps", None, message))

    def run(name: str, target: Any) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled")
        ctx = context_for(name, prepared, earlier, progress=progress, cancel=cancel)
        out = jobs.run_probe(target, ctx, store=store, case_id=case_id, subject_id=subject_id)
        if out.run_id is not None:
            run_ids.append(out.run_id)
        if out.store_error:  # the case file is full: the result below is kept in memory and reported
            errors.append({"probe": name, "status": "not-stored", "error": out.store_error})
        if out.result is not None:
            results.append(out.result)
            earlier[name] = out.result
            if on_result:
                on_result(out.result)
        else:
            errors.append({"probe": name, "status": out.status, "error": out.error})
            if out.status == "cancelled":
                raise Cancelled("cancelled")

    def report() -> ScanReport:
        failed = [(e["probe"], e["error"]) for e in errors if e["status"] == "failed"]
        return ScanReport(subject_dict, results, errors, layered_verdict(results, failed), subject_id, run_ids,
                          offers)

    requested = opts.probes
    path_probes = [n for n in (requested or ["static"]) if registry.get(n).needs == "path"]
    for name in path_probes:
        run(name, str(prepared.path))
    static = earlier.get("static")
    offers = dynamic_offer(prepared.path, static, set(earlier))
    model_requested = [n for n in requested if registry.get(n).needs == "model"] if requested else None
    if model_requested == []:
        return report()
    refusal = _load_refusal("static" in path_probes, static)
    if refusal:
        errors.append({"probe": "load", "status": "refused", "error": refusal})
        return report()
    note("load", 0, 1, "loading torch and the model")
    t0 = time.perf_counter()
    try:
        from workbench.threads import apply_threads

        apply_threads(opts.threads)
        subject = _load(prepared)
    except Exception as exc:  # hostile input (or a ProbeError): a one-line error for this subject, never a crash
        errors.append({"probe": "load", "status": "failed", "error": explain(exc)})
        return report()
    note("load", 1, 1, f"loaded in {time.perf_counter() - t0:.1f}s")
    subject_dict["kind"] = subject.kind
    if store is not None and subject_id is not None:
        store.set_subject_kind(subject_id, subject.kind)
    if store is not None and subject_id is not None and prepared.data is not None:
        from workbench.triage import record_triage

        try:
            record_triage(store, subject_id, subject, prepared.data)
        except Exception as exc:  # noqa: BLE001 - the screen is an extra; a failure is noted, never fatal
            errors.append({"probe": "triage", "status": "skipped", "error": explain(exc)})
    names = model_requested or registry.applicable(subject.kind, have_data=prepared.data is not None,
                                                   have_audit=prepared.audit is not None)
    for name in (n for n in names if registry.get(n).needs == "model"):
        if registry.get(name).kinds and subject.kind not in registry.get(name).kinds:
            errors.append({"probe": name, "status": "skipped",
                           "error": f"{name} does not apply to a {subject.kind} subject"})
        else:
            run(name, subject)
    return report()
