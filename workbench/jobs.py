"""Run one probe as a job: the run row's lifecycle in the case file around the probe call.

Headless (no Textual): the CLI calls it directly, the TUI from a thread worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from probes import registry
from probes.context import RunContext
from probes.errors import Cancelled, ProbeError, explain
from probes.result import ProbeResult, jsonable
from vocabulary import VERDICT_SEVERITY, Verdict, one_line

_MAX_FINDINGS = 200


def recorded_params(ctx: RunContext) -> dict[str, Any]:
    """The JSON-able record of a run's settings: the resolved parameters and the data files by source and hash."""
    out = {k: jsonable(v) for k, v in ctx.params.items()}
    spec = registry.get(ctx.probe)
    if spec.data == "data" or ctx.data is not None:
        out["data"] = ctx.data.describe() if ctx.data is not None else None
    if spec.data == "audit" or ctx.audit is not None:
        out["audit"] = ctx.audit.describe() if ctx.audit is not None else None
    if ctx.earlier:
        out["uses"] = sorted(ctx.earlier)
    return out


def findings_from(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Case-file findings for a flagged result: one summary finding plus the probe's own findings."""
    from casefiles import atlas

    verdict = Verdict.parse(result.get("verdict"))
    techniques = atlas.techniques_for(result.get("probe", ""), verdict.value if verdict else "")
    out = []
    if verdict in VERDICT_SEVERITY:
        out.append({"severity": VERDICT_SEVERITY[verdict].value, "title": result.get("summary") or verdict.value,
                    "detail": None, "atlas": techniques[0] if techniques else None})
    for f in (result.get("findings") or [])[:_MAX_FINDINGS]:
        if isinstance(f, dict):
            call = ".".join(x for x in (f.get("module"), f.get("name")) if x)
            where = f"{f.get('file')}" + (f"!{f['member']}" if f.get("member") else "") + f"@{f.get('offset')}"
            out.append({"severity": f.get("severity"), "title": f"{f.get('opcode')} {call}".strip(),
                        "detail": f"{where}: {f.get('explanation') or ''}".strip(),
                        "atlas": "AML.T0010"})
    return out


@dataclass
class JobOutcome:
    probe: str
    status: str  # done | failed | cancelled
    result: dict[str, Any] | None
    error: str | None
    run_id: int | None
    duration_s: float
    store_error: str | None = None  # the case file could not record this run (e.g. disk full): result kept here

    def to_dict(self) -> dict[str, Any]:
        return {"probe": self.probe, "status": self.status, "error": self.error, "run_id": self.run_id,
                "duration_s": round(self.duration_s, 4), "store_error": self.store_error}


def _finish_or_fail(store, run_id: int, *, status: str, result, error, duration: float, artifacts) -> str | None:
    """Record the run; when the case file cannot take its result (full disk), record it failed with a small
    row instead, so it is never left ``running``. Returns why the result is not in the case file, or None."""
    from casefiles.errors import CaseFileBusy, CaseFileError

    try:
        store.finish_run(run_id, status=status, result=result, error=error, duration_s=duration,
                         findings=findings_from(result) if result else None, artifacts=artifacts)
        return None
    except CaseFileBusy:
        raise
    except CaseFileError as exc:
        why = one_line(exc)
    verdict = (result or {}).get("verdict")
    try:
        store.finish_run(run_id, status="failed", duration_s=duration,
                         error=f"the result ({verdict or status}) could not be stored: {why}"[:500])
        return f"run {run_id} recorded as failed: its result could not be stored ({why})"
    except CaseFileError as exc2:
        return (f"run {run_id} could not be recorded at all ({one_line(exc2)}); it will show as interrupted; "
                "the result shown here is the only copy")


def run_probe(target: Any, ctx: RunContext, *, store=None, case_id: int | None = None,
              subject_id: int | None = None) -> JobOutcome:
    """Run probe ``ctx.probe`` on ``target`` (a path or a loaded subject); record it when a store is given.

    Never raises for a probe's own failure: a bad input, a crash inside the
    probe or a cancel become a ``failed``/``cancelled`` outcome with a one-line error.
    """
    name = ctx.probe
    spec = registry.get(name)
    record = recorded_params(ctx)
    if store is not None and subject_id is not None:
        refused = _custody_refusal(store, case_id, subject_id, name, record)
        if refused is not None:
            return refused
    store_error = None
    run_id = None
    if store is not None:
        from casefiles.errors import CaseFileFull

        try:
            run_id = store.start_run(case_id, subject_id, name, record)
        except CaseFileFull as exc:  # the probe still runs; its result is shown, not stored
            store_error = f"not recorded in the case file: {one_line(exc)}"
    t0 = time.perf_counter()
    status, result, error, artifacts = "done", None, None, {}
    try:
        fn = spec.load()
        res: ProbeResult = fn(target, ctx)
        result, artifacts = res.to_dict(), dict(res.artifacts)
        result["params"] = record  # one record of what the run used: settings and data files, as in the run row
    except Cancelled:
        status, error = "cancelled", "cancelled by the examiner"
    except ProbeError as exc:
        status, error = "failed", explain(exc)
    except MemoryError:
        status, error = "failed", "out of memory"
    except Exception as exc:  # a probe bug or hostile input must not take the app down
        status, error = "failed", explain(exc)
    duration = time.perf_counter() - t0
    if store is not None and run_id is not None:
        store_error = _finish_or_fail(store, run_id, status=status, result=result, error=error, duration=duration,
                                      artifacts=artifacts)
    return JobOutcome(name, status, result, error, run_id, duration, store_error)


def _custody_refusal(store, case_id: int | None, subject_id: int, name: str,
                     record: dict[str, Any]) -> JobOutcome | None:
    """Re-hash the subject's files first: a file changed since it was added is refused, recorded as a failed run."""
    from workbench.custody import check_subject

    check = check_subject(store.get_subject(subject_id))
    if check.ok:
        return None
    cid = case_id if case_id is not None else store.get_subject(subject_id)["case_id"]
    store.record(cid, "custody.changed", check.to_dict())
    run_id = store.start_run(cid, subject_id, name, record)
    store.finish_run(run_id, status="failed", error=check.message, duration_s=0.0)
    return JobOutcome(name, "failed", None, check.message, run_id, 0.0)
