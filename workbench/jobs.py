"""Run one probe as a job: the run row's lifecycle in the case file around the probe call.

Headless (no Textual): the CLI calls it directly, the TUI from a thread worker.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from probes import registry
from probes.data import LabelledData
from probes.errors import Cancelled, ProbeError
from probes.result import ProbeResult, jsonable

_SEVERITY = {"malicious": "critical", "backdoored": "high", "suspicious": "medium"}
_MAX_FINDINGS = 200


def recorded_params(params: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able record of a probe's parameters (data files by source and hash)."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, LabelledData):
            out[k] = v.describe()
        elif callable(v) or k.startswith("_"):
            continue
        else:
            out[k] = jsonable(v)
    return out


def findings_from(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Case-file findings for a flagged result: one summary finding plus the probe's own findings."""
    from casefiles import atlas

    verdict = result.get("verdict")
    techniques = atlas.techniques_for(result.get("probe", ""), verdict)
    out = []
    if verdict in _SEVERITY:
        out.append({"severity": _SEVERITY[verdict], "title": result.get("summary") or verdict,
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

    def to_dict(self) -> dict[str, Any]:
        return {"probe": self.probe, "status": self.status, "error": self.error, "run_id": self.run_id,
                "duration_s": round(self.duration_s, 4)}


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def run_probe(name: str, target: Any, params: dict[str, Any], *, store=None, case_id: int | None = None,
              subject_id: int | None = None, progress: Callable[[int, int, str], None] | None = None,
              cancel: threading.Event | None = None) -> JobOutcome:
    """Run probe ``name`` on ``target`` (a path or a loaded subject); record it when a store is given.

    Never raises for a probe's own failure: a bad input, a crash inside the
    probe or a cancel become a ``failed``/``cancelled`` outcome with a one-line error.
    """
    spec = registry.get(name)
    run_id = store.start_run(case_id, subject_id, name, recorded_params(params)) if store is not None else None
    t0 = time.perf_counter()
    status, result, error, artifacts = "done", None, None, {}
    try:
        fn = spec.load()
        res: ProbeResult = fn(target, params, progress=progress, cancel=cancel)
        result, artifacts = res.to_dict(), dict(res.artifacts)
    except Cancelled:
        status, error = "cancelled", "cancelled by the examiner"
    except ProbeError as exc:
        status, error = "failed", one_line(exc)
    except MemoryError:
        status, error = "failed", "out of memory"
    except Exception as exc:  # a probe bug or hostile input must not take the app down
        status, error = "failed", f"{type(exc).__name__}: {one_line(exc)}"
    duration = time.perf_counter() - t0
    if store is not None:
        store.finish_run(run_id, status=status, result=result, error=error, duration_s=duration,
                         findings=findings_from(result) if result else None, artifacts=artifacts)
    return JobOutcome(name, status, result, error, run_id, duration)
