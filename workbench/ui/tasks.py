"""What the thread workers do: headless calls into the core, reporting through ``emit``.

Each function runs in a worker thread, opens its own :class:`CaseStore`
connection, checks ``cancel`` (a ``threading.Event``) through the probes, and
reports with ``emit(message)`` (the app's thread-safe ``post_message``). Nothing
here touches a widget. torch is imported only when a probe or a model load needs it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes.errors import explain, one_line
from workbench.ui import messages as M

Emit = Callable[[Any], None]
_ids = itertools.count(1)


@dataclass
class Job:
    kind: str  # scan | hunt | confirm | custom | add-subject | remediate
    case_id: int
    subject_id: int | None = None
    path: str | None = None
    probes: list[str] | None = None
    data: str | None = None
    audit: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    id: int = field(default_factory=lambda: next(_ids))
    status: str = "queued"
    started: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def title(self) -> str:
        return self.label or f"{self.kind} #{self.id}"


class Throttle:
    """Pass at most one call per ``interval`` seconds (the last/forced ones always pass)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.last = interval, 0.0

    def due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            return True
        return False


def open_store(db_path: str | Path, retries: int = 5):
    """A worker's own connection; retried while another writer holds the file."""
    from casefiles import CaseFileBusy, CaseStore

    for attempt in range(retries):
        try:
            return CaseStore(db_path)
        except CaseFileBusy:
            if attempt == retries - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _event(stage: str, done: int, total: int, message: str, probe: str = "job"):
    from probes.context import ProgressEvent

    return ProgressEvent(probe, stage, done, total, "steps", None, message)


# -- add a subject (hashing a large folder takes a while) ---------------------------------
def add_subject(job: Job, db_path: str | Path, emit: Emit) -> None:
    from probes.errors import ProbeError
    from workbench.subject_files import describe

    emit(M.JobProgress(job, _event("hash", 0, 1, f"hashing {job.path}")))
    try:
        info = describe(job.path or "")
        with open_store(db_path) as store:
            existing = store.find_subject(job.case_id, info.sha256)
            if existing:
                emit(M.JobFinished(job, "done", f"{info.name} is already subject {existing['id']} of this case",
                                   existing["id"]))
                return
            sid = store.add_subject(job.case_id, path=info.path, sha256=info.sha256, size=info.size,
                                    format=info.format, kind=info.kind, files=info.files, name=info.name)
    except ProbeError as exc:
        emit(M.JobFinished(job, "failed", one_line(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - a hostile path must not take the app down
        emit(M.JobFinished(job, "failed", explain(exc)))
        return
    emit(M.JobFinished(job, "done", f"subject {sid} added: {info.name} ({info.format}, {info.kind}, "
                                    f"{len(info.files)} file(s))", sid))


# -- a layered scan of one subject ----------------------------------------------------------
def scan(job: Job, db_path: str | Path, emit: Emit) -> None:
    from probes.errors import ProbeError
    from workbench.scan import ScanOptions, prepare, run_scan

    throttle = Throttle(0.1)

    def progress(ev: Any) -> None:
        if throttle.due(force=ev.done >= ev.total or ev.probe == "load"):
            emit(M.JobProgress(job, ev))

    try:
        prepared = prepare(job.path or "", ScanOptions(probes=job.probes, data=job.data, audit=job.audit,
                                                       params=dict(job.params)))
    except ProbeError as exc:
        emit(M.JobFinished(job, "failed", one_line(exc)))
        return
    if job.probes and any(p != "static" and p != "dynamic" for p in job.probes):
        emit(M.JobProgress(job, _event("load", 0, 1, "loading torch (first probe of the session takes a few seconds)",
                                       "load")))

    def on_result(result: dict[str, Any]) -> None:
        emit(M.ProbeFinished(job, result.get("probe", "?"), "done", None, None, result.get("summary")))

    try:
        with open_store(db_path) as store:
            report = run_scan(prepared, store=store, case_id=job.case_id, progress=progress, cancel=job.cancel,
                              on_result=on_result)
    except Exception as exc:  # noqa: BLE001 - Cancelled, CaseFileBusy, anything: a message, never a crash
        from probes.errors import Cancelled

        if isinstance(exc, Cancelled) or job.cancel.is_set():
            emit(M.JobFinished(job, "cancelled", "cancelled by the examiner"))
        else:
            emit(M.JobFinished(job, "failed", explain(exc)))
        return
    for e in report.errors:
        emit(M.ProbeFinished(job, e["probe"], e["status"], e["error"], None))
    for o in report.offers:
        emit(M.ProbeFinished(job, o["probe"], "offered", o["reason"], None))
    v = report.verdict
    status = "cancelled" if job.cancel.is_set() else ("failed" if not report.results and report.errors else "done")
    emit(M.JobFinished(job, status, f"{v['verdict']}: {v['evidence']}", report.to_dict()))


# -- the live KL trigger hunt ---------------------------------------------------------------
class _SessionCache:
    """The one language model kept loaded between a hunt and its follow-ups (confirm, score a candidate).

    Hunting another subject replaces it, so at most one LM is held in memory. Only the (single)
    job-runner thread touches it.
    """

    def __init__(self) -> None:
        self.key: tuple[int, str] | None = None
        self.session: Any = None

    def get(self, job: Job, emit: Emit):
        from probes import registry
        from probes.lm_hunt import HuntSession

        params = registry.get("kl").resolve_params(job.params.get("kl_params", job.params))
        key = (job.subject_id or 0, job.path or "")
        if self.session is None or self.key != key:
            self.session = self.key = None  # drop the previous model before loading the next
            emit(M.JobProgress(job, _event("load", 0, 1, "loading torch and the language model", "load")))
            from probes.subjects.loader import load_subject
            from workbench.threads import apply_threads

            apply_threads()
            subject = load_subject(job.path or "")
            self.session, self.key = HuntSession(subject, params, job.cancel), key
            emit(M.JobProgress(job, _event("load", 1, 1, "model loaded", "load")))
        self.session.use_cancel(job.cancel)
        self.session.engine(params)
        return self.session


SESSIONS = _SessionCache()


def _kl_params(job: Job) -> dict[str, Any]:
    return {k: v for k, v in job.params.items() if k not in ("kl_params", "candidate", "token_ids", "position")}


def hunt(job: Job, db_path: str | Path, emit: Emit) -> None:
    from probes import registry
    from probes.context import RunContext
    from workbench import jobs

    try:
        params = registry.get("kl").resolve_params(_kl_params(job))
        job.params = {**job.params, "kl_params": params}
        session = SESSIONS.get(job, emit)
    except Exception as exc:  # noqa: BLE001
        emit(M.JobFinished(job, "failed", f"cannot hunt on {job.path}: {explain(exc)}"))
        return
    throttle = Throttle(0.1)

    def progress(ev: Any) -> None:
        if throttle.due(force=ev.done >= ev.total):
            emit(M.JobProgress(job, ev))

    def on_partial(ranking: list[dict[str, Any]]) -> None:
        emit(M.HuntPartial(job, ranking))

    from workbench.paths import cache_dir

    ctx = RunContext("kl", params, cache_dir=cache_dir(), cancel=job.cancel, on_progress=progress,
                     on_partial=on_partial)
    try:
        with open_store(db_path) as store:
            out = jobs.run_probe(session, ctx, store=store, case_id=job.case_id, subject_id=job.subject_id)
    except Exception as exc:  # noqa: BLE001
        emit(M.JobFinished(job, "failed", explain(exc)))
        return
    emit(M.ProbeFinished(job, "kl", out.status, out.error, out.run_id,
                         (out.result or {}).get("summary")))
    if out.result and out.result.get("ranking"):
        emit(M.HuntPartial(job, out.result["ranking"]))
    emit(M.JobFinished(job, out.status, (out.result or {}).get("summary") or out.error or out.status,
                       out.result))


def confirm(job: Job, db_path: str | Path, emit: Emit) -> None:
    """Generate each prompt's answer with and without the candidate, side by side (each generated once)."""
    from probes.errors import Cancelled

    text = job.params.get("candidate", "")
    try:
        session = SESSIONS.get(job, emit)
        emit(M.JobProgress(job, _event("confirm", 0, 2, f"generating with and without {text!r}", "kl")))
        data = session.confirm(text, ids=job.params.get("token_ids"), position=job.params.get("position"))
    except Cancelled:
        emit(M.JobFinished(job, "cancelled", "confirmation cancelled"))
        return
    except Exception as exc:  # noqa: BLE001
        emit(M.JobFinished(job, "failed", f"confirmation of {text!r} failed: {explain(exc)}"))
        return
    try:
        with open_store(db_path) as store:
            store.record(job.case_id, "hunt.confirmed", {
                "subject_id": job.subject_id, "candidate": text, "position": data["position"],
                "confirmed": data["confirmed"], "target_agreement": data["target_agreement"],
                "target_response": data["target_response"]})
    except Exception as exc:  # noqa: BLE001 - the comparison is still shown
        emit(M.JobProgress(job, _event("confirm", 2, 2, f"not recorded in the audit trail: {one_line(exc)}", "kl")))
    word = "CONFIRMED" if data["confirmed"] else "not confirmed"
    emit(M.JobFinished(job, "done", f"{text!r} {word} by generation: {data['target_agreement']:.0%} of "
                                    f"prompts agree on {data['target_response']!r}", data))


def custom(job: Job, db_path: str | Path, emit: Emit) -> None:
    """Score an examiner's candidate with the same engine and aggregate as the hunt."""
    from probes.errors import Cancelled

    text = job.params.get("candidate", "")
    try:
        session = SESSIONS.get(job, emit)
        emit(M.JobProgress(job, _event("custom", 0, 1, f"scoring {text!r}", "kl")))
        entry = session.score(text)
    except Cancelled:
        emit(M.JobFinished(job, "cancelled", "cancelled"))
        return
    except Exception as exc:  # noqa: BLE001
        emit(M.JobFinished(job, "failed", f"custom candidate {text!r}: {explain(exc)}"))
        return
    q = session.params["quantile"]
    emit(M.JobFinished(job, "done", f"{text!r}: KL q{q:g} {entry['kl']:.3g} nats at {entry['position']}", entry))


def remediate(job: Job, db_path: str | Path, emit: Emit) -> None:
    """``workbench remediate`` on the job's subject: repair a copy, write it, record the runs (cancel leaves nothing)."""
    from probes.errors import Cancelled
    from workbench.remediate import RemediateOptions, prepare, run_remediation

    throttle = Throttle(0.1)

    def progress(ev: Any) -> None:
        if throttle.due(force=ev.done >= ev.total):
            emit(M.JobProgress(job, ev))

    p = job.params
    try:
        prepared = prepare(job.path or "", RemediateOptions(out=p["out"], data=job.data, method=p.get("method") or "unlearn",
                                                            trigger=p.get("trigger"), params=dict(p.get("settings") or {})))
        emit(M.JobProgress(job, _event("load", 0, 1, "loading torch and the model", "remediation")))
        with open_store(db_path) as store:
            doc = run_remediation(prepared, store=store, case_id=job.case_id, progress=progress, cancel=job.cancel)
    except Exception as exc:  # noqa: BLE001 - Cancelled, bad input, anything: a message, never a crash
        if isinstance(exc, Cancelled) or job.cancel.is_set():
            emit(M.JobFinished(job, "cancelled", "remediation cancelled; nothing was written"))
        else:
            emit(M.JobFinished(job, "failed", explain(exc)))
        return
    emit(M.JobFinished(job, "done", f"repaired model in {doc['outputs']['model']}. {doc['residual_risk']}", doc))


RUNNERS: dict[str, Callable[[Job, Any, Emit], None]] = {
    "add-subject": add_subject, "scan": scan, "hunt": hunt, "confirm": confirm, "custom": custom,
    "remediate": remediate,
}
