"""What the thread workers do: headless calls into the core, reporting through ``emit``.

Each function runs in a worker thread, opens its own :class:`CaseStore`
connection, checks ``cancel`` (a ``threading.Event``) through the probes, and
reports with ``emit(message)`` (the app's thread-safe ``post_message``). Nothing
here touches a widget. torch is imported only when a probe or a model load needs it.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from workbench.ui import messages as M

Emit = Callable[[Any], None]
_ids = itertools.count(1)


@dataclass
class Job:
    kind: str  # scan | hunt | confirm | custom | add-subject
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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- add a subject (hashing a large folder takes a while) ---------------------------------
def add_subject(job: Job, db_path: str | Path, emit: Emit) -> None:
    from probes.errors import ProbeError
    from workbench.subject_files import describe

    emit(M.JobProgress(job, "hash", 0, 1, f"hashing {job.path}"))
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
        emit(M.JobFinished(job, "failed", _one_line(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - a hostile path must not take the app down
        emit(M.JobFinished(job, "failed", f"{type(exc).__name__}: {_one_line(exc)}"))
        return
    emit(M.JobFinished(job, "done", f"subject {sid} added: {info.name} ({info.format}, {info.kind}, "
                                    f"{len(info.files)} file(s))", sid))


# -- a layered scan of one subject ----------------------------------------------------------
def scan(job: Job, db_path: str | Path, emit: Emit) -> None:
    from probes.errors import ProbeError
    from workbench.scan import ScanOptions, prepare, run_scan

    throttle = Throttle(0.1)

    def progress(stage: str, done: int, total: int, msg: str = "") -> None:
        if throttle.due(force=done >= total or stage == "load"):
            emit(M.JobProgress(job, stage, done, total, msg))

    try:
        prepared = prepare(job.path or "", ScanOptions(probes=job.probes, data=job.data, audit=job.audit,
                                                       params=dict(job.params)))
    except ProbeError as exc:
        emit(M.JobFinished(job, "failed", _one_line(exc)))
        return
    if job.probes and any(p != "static" and p != "dynamic" for p in job.probes):
        emit(M.JobProgress(job, "load", 0, 1, "loading torch (first probe of the session takes a few seconds)"))

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
            emit(M.JobFinished(job, "failed", f"{type(exc).__name__}: {_one_line(exc)}"))
        return
    for e in report.errors:
        emit(M.ProbeFinished(job, e["probe"], e["status"], e["error"], None))
    for o in report.offers:
        emit(M.ProbeFinished(job, o["probe"], "offered", o["reason"], None))
    v = report.verdict
    status = "cancelled" if job.cancel.is_set() else ("failed" if not report.results and report.errors else "done")
    emit(M.JobFinished(job, status, f"{v['verdict']}: {v['evidence']}", report.to_dict()))


# -- the live KL trigger hunt ---------------------------------------------------------------
# Loaded language models and their KL engines, kept between hunts, confirmations and custom
# candidates. Only the (single) job-runner thread touches it.
_SESSIONS: dict[int, dict[str, Any]] = {}
_CAND_RE = re.compile(r"(\d+)/(\d+) candidates")


def _session(job: Job, emit: Emit) -> dict[str, Any]:
    key = job.subject_id or 0
    sess = _SESSIONS.get(key)
    if sess is None or sess.get("path") != job.path:
        emit(M.JobProgress(job, "load", 0, 1, "loading torch and the language model"))
        from probes.subjects.loader import load_subject

        subject = load_subject(job.path or "")
        sess = {"path": job.path, "subject": subject}
        _SESSIONS[key] = sess
        emit(M.JobProgress(job, "load", 1, 1, "model loaded"))
    return sess


def _engine(sess: dict[str, Any], params: dict[str, Any], cancel: threading.Event):
    from probes import kl_probe
    from probes.lm_prompts import BUILTIN_PROMPTS, load_prompts_file

    p = kl_probe.resolve_params({k: v for k, v in params.items() if k in kl_probe.DEFAULTS})
    key = (p["prompts_file"], p["builtin_prompts"], p["max_prompts"])
    if sess.get("engine_key") != key:
        subject = sess["subject"]
        instr = load_prompts_file(p["prompts_file"]) if p["prompts_file"] else []
        if p["builtin_prompts"]:
            instr += [x for x in BUILTIN_PROMPTS if x not in instr]
        eng = kl_probe.KLEngine.build(subject.model, subject.tokenizer, subject.device,
                                      instr[: max(1, p["max_prompts"])], batch_size=p["batch_size"], cancel=cancel)
        sess.update(engine=eng, engine_key=key, clean=None, p=p)
    sess["engine"].cancel = cancel
    return sess["engine"], sess["p"]


def hunt(job: Job, db_path: str | Path, emit: Emit) -> None:
    from workbench import jobs

    try:
        sess = _session(job, emit)
    except Exception as exc:  # noqa: BLE001
        emit(M.JobFinished(job, "failed", f"cannot load {job.path}: {_one_line(exc)}"))
        return
    throttle = Throttle(0.1)
    state = {"stage": None, "t0": time.monotonic(), "n0": 0, "rate": None, "n": 0}

    def progress(done: int, total: int, msg: str = "") -> None:
        m = _CAND_RE.search(msg or "")
        stage = (msg or "").split(":", 1)[0]
        if m:
            n = int(m.group(1))
            now = time.monotonic()
            if stage != state["stage"]:
                state.update(stage=stage, t0=now, n0=n)
            elif now > state["t0"]:
                state["rate"] = (n - state["n0"]) / (now - state["t0"])
            state["n"] = n
        if throttle.due(force=done >= total):
            emit(M.JobProgress(job, "kl", done, total, msg))
            emit(M.HuntRate(job, state["rate"], state["n"]))

    def on_partial(ranking: list[dict[str, Any]]) -> None:
        emit(M.HuntPartial(job, ranking))

    params = {**job.params, "on_partial": on_partial}
    try:
        with open_store(db_path) as store:
            out = jobs.run_probe("kl", sess["subject"], params, store=store, case_id=job.case_id,
                                 subject_id=job.subject_id, progress=progress, cancel=job.cancel)
    except Exception as exc:  # noqa: BLE001
        emit(M.JobFinished(job, "failed", f"{type(exc).__name__}: {_one_line(exc)}"))
        return
    emit(M.ProbeFinished(job, "kl", out.status, out.error, out.run_id,
                         (out.result or {}).get("summary")))
    if out.result and out.result.get("ranking"):
        emit(M.HuntPartial(job, out.result["ranking"]))
    emit(M.JobFinished(job, out.status, (out.result or {}).get("summary") or out.error or out.status,
                       out.result))


def confirm(job: Job, db_path: str | Path, emit: Emit) -> None:
    """Generate each prompt's answer with and without the candidate, side by side."""
    from probes import kl_probe, lm_confirm
    from probes.errors import Cancelled

    text = job.params.get("candidate", "")
    try:
        sess = _session(job, emit)
        eng, p = _engine(sess, job.params.get("kl_params", {}), job.cancel)
        emit(M.JobProgress(job, "confirm", 0, 3, "clean responses"))
        if sess.get("clean") is None:
            sess["clean"] = lm_confirm.clean_responses(eng, p["gen_tokens"])
        clean = sess["clean"]
        ids = job.params.get("token_ids") or kl_probe.candidate_ids(eng.tokenizer, text)
        if not ids:
            raise ValueError(f"{text!r} has no tokens in this model's vocabulary")
        position = job.params.get("position") or "marker"
        emit(M.JobProgress(job, "confirm", 1, 3, f"generating with {text!r}"))
        seqs = [eng.insert(pp, ids, position) for pp in eng.prompts]
        outs = eng.generate(seqs, p["gen_tokens"])
        trig = [eng.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outs]
        emit(M.JobProgress(job, "confirm", 2, 3, "judging agreement"))
        verdict = lm_confirm.confirm(eng, ids, position, clean, p["gen_tokens"])
    except Cancelled:
        emit(M.JobFinished(job, "cancelled", "confirmation cancelled"))
        return
    except Exception as exc:  # noqa: BLE001
        emit(M.JobFinished(job, "failed", f"confirmation of {text!r} failed: {_one_line(exc)}"))
        return
    rows = [{"prompt": pp.instruction, "clean": c, "triggered": t} for pp, c, t in zip(eng.prompts, clean, trig)]
    data = {"candidate": text, "position": position, "rows": rows, **{k: v for k, v in verdict.items()
                                                                       if k != "examples"}}
    try:
        with open_store(db_path) as store:
            store.record(job.case_id, "hunt.confirmed", {
                "subject_id": job.subject_id, "candidate": text, "position": position,
                "confirmed": verdict["confirmed"], "target_agreement": verdict["target_agreement"],
                "target_response": verdict["target_response"]})
    except Exception as exc:  # noqa: BLE001 - the comparison is still shown
        emit(M.JobProgress(job, "confirm", 3, 3, f"not recorded in the audit trail: {_one_line(exc)}"))
    word = "CONFIRMED" if verdict["confirmed"] else "not confirmed"
    emit(M.JobFinished(job, "done", f"{text!r} {word} by generation: {verdict['target_agreement']:.0%} of "
                                    f"prompts agree on {verdict['target_response']!r}", data))


def custom(job: Job, db_path: str | Path, emit: Emit) -> None:
    """Score an examiner's candidate with the same engine and aggregate as the hunt."""
    import numpy as np

    from probes import kl_probe
    from probes.errors import Cancelled

    text = job.params.get("candidate", "")
    try:
        sess = _session(job, emit)
        eng, p = _engine(sess, job.params.get("kl_params", {}), job.cancel)
        ids = kl_probe.candidate_ids(eng.tokenizer, text)
        unk = getattr(eng.tokenizer, "unk_token_id", None)
        if not ids or (unk is not None and unk in ids):
            raise ValueError(f"{text!r} is not in this model's vocabulary")
        emit(M.JobProgress(job, "custom", 0, 1, f"scoring {text!r}"))
        arr = eng.kl_matrix([ids], p["positions"])[0]
        q = np.quantile(arr, p["quantile"], axis=-1)
        k = int(q.argmax())
        entry = {"candidate": text, "kl": round(float(q[k]), 6), "kl_quantile": round(float(q[k]), 6),
                 "kl_mean": round(float(arr[k].mean()), 6), "kl_min": round(float(arr[k].min()), 6),
                 "position": p["positions"][k], "source": "examiner", "n_tokens": len(ids),
                 "token_ids": list(ids)}
    except Cancelled:
        emit(M.JobFinished(job, "cancelled", "cancelled"))
        return
    except Exception as exc:  # noqa: BLE001
        emit(M.JobFinished(job, "failed", f"custom candidate {text!r}: {_one_line(exc)}"))
        return
    emit(M.JobFinished(job, "done", f"{text!r}: KL q{p['quantile']:g} {entry['kl']:.3g} nats at {entry['position']}",
                       entry))


RUNNERS: dict[str, Callable[[Job, Any, Emit], None]] = {
    "add-subject": add_subject, "scan": scan, "hunt": hunt, "confirm": confirm, "custom": custom,
}
