"""The one writer of a registry job: batched case-file transactions, JSON lines, one SARIF log, the summary.

Only the driver writes. Finished subjects are buffered and written together in one
transaction (every ``batch_size`` subjects or ``batch_seconds``), so a ``kill -9`` loses
at most the unwritten batch and never leaves half of one. A subject's JSON line is
written only after its batch is committed, so the JSON lines never claim more than
the case file holds.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vocabulary import Verdict
from vocabulary.layered import layered_verdict
from workbench.registry.discover import Subject

TOP_WORST = 20


def subject_row(s: Subject) -> dict[str, Any]:
    return {"path": s.path, "name": s.name, "sha256": s.sha256, "size": s.size, "format": s.format, "kind": s.kind,
            "files": s.files_record(), "metadata": {"layout": s.layout, "registry": True}}


def renamed(results: list[dict[str, Any]], old: str, new: str) -> list[dict[str, Any]]:
    """The results of content scanned at ``old`` as they read for the same bytes at ``new`` (file names moved)."""
    if old == new:
        return results

    def fix(v: Any) -> Any:
        if isinstance(v, str) and (v == old or v.startswith(old + os.sep)):
            return new + v[len(old):]
        return v

    out = []
    for r in results:
        r = dict(r)
        for key in ("findings", "inconclusive_parts", "files"):
            if isinstance(r.get(key), list):
                r[key] = [{**x, "file": fix(x.get("file"))} if isinstance(x, dict) else x for x in r[key]]
        if isinstance(r.get("summary"), str):
            r["summary"] = r["summary"].replace(Path(old).name, Path(new).name)
        if isinstance(r.get("formats"), dict):
            r["formats"] = {fix(k): v for k, v in r["formats"].items()}
        out.append(r)
    return out


@dataclass
class Summary:
    """Counts by verdict and status, the worst subjects, problems, and timings of a job (bounded in size)."""

    verdicts: dict[str, int] = field(default_factory=dict)
    subjects: int = 0
    scanned: int = 0  # tasks that ran (distinct contents scanned in this run)
    duplicates: int = 0  # subjects whose bytes were already scanned (this run or earlier) under another name
    resumed: int = 0  # subjects already finished in the case under the same plan
    failed: int = 0
    problems: int = 0
    task_seconds: float = 0.0  # wall time inside the workers' tasks
    task_cpu_seconds: float = 0.0  # CPU time inside the workers' tasks
    wall_seconds: float = 0.0
    cancelled: bool = False
    engine: dict[str, Any] = field(default_factory=dict)
    _worst: list[tuple[int, float, int, dict[str, Any]]] = field(default_factory=list, repr=False)
    _n: int = 0

    def add(self, line: dict[str, Any]) -> None:
        self.subjects += 1
        key = line["verdict"] if line["status"] == "done" else "failed"
        self.verdicts[key] = self.verdicts.get(key, 0) + 1
        v = Verdict.parse(line["verdict"]) if line["status"] == "done" else Verdict.INCONCLUSIVE  # failed: unknown
        rank = v.rank if v else 0
        entry = (rank, float(line.get("risk") or 0.0), -self._n,
                 {k: line.get(k) for k in ("path", "verdict", "risk", "status", "summary", "error")})
        self._n += 1
        if rank == 0 and line["status"] == "done":
            return  # clean subjects are never among the worst
        if len(self._worst) < TOP_WORST:
            heapq.heappush(self._worst, entry)
        else:
            heapq.heappushpop(self._worst, entry)

    @property
    def worst(self) -> list[dict[str, Any]]:
        return [e[3] for e in sorted(self._worst, reverse=True)]

    @property
    def rate(self) -> float:
        return self.subjects / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"subjects": self.subjects, "verdicts": dict(sorted(self.verdicts.items())), "scanned": self.scanned,
                "duplicates": self.duplicates, "resumed": self.resumed, "failed": self.failed,
                "problems": self.problems, "wall_s": round(self.wall_seconds, 3),
                "task_s": round(self.task_seconds, 3),
                "task_cpu_s": round(self.task_cpu_seconds, 3), "subjects_per_s": round(self.rate, 2),
                "cancelled": self.cancelled, "engine": self.engine, "worst": self.worst}


class JobWriter:
    """Buffers finished subjects and commits them in batches; streams JSON lines; collects the SARIF findings."""

    def __init__(self, store: Any, case_id: int, plan: str, *, batch_size: int = 200, batch_seconds: float = 1.0,
                 json_lines: Path | None = None, sarif: Path | None = None) -> None:
        self.store, self.case_id, self.plan = store, case_id, plan
        self.batch_size, self.batch_seconds = batch_size, batch_seconds
        self.summary = Summary()
        self._items: list[dict[str, Any]] = []
        self._lines: list[dict[str, Any]] = []
        self._content: dict[str, tuple[str, dict[str, Any]]] = {}  # unflushed: sha256 -> (scanned path, report)
        self._t_flush = time.monotonic()
        self._jsonl: IO[str] | None = open(json_lines, "w", encoding="utf-8") if json_lines else None  # noqa: SIM115
        self.sarif_path = sarif
        self._sarif_results: list[dict[str, Any]] = []  # static results WITH findings or unreadable parts only

    # ------------------------------------------------------------------ intake
    def pending_report(self, sha256: str) -> tuple[str, dict[str, Any]] | None:
        """A report of these bytes finished in this run but not yet committed (dedup before the flush)."""
        return self._content.get(sha256)

    def add(self, s: Subject, report: dict[str, Any], *, scanned_at: str | None = None, how: str = "scanned") -> None:
        """Queue one finished subject. ``report`` is a worker outcome; ``scanned_at`` the path its content was
        scanned at when that differs (a duplicate); ``how``: scanned | duplicate."""
        from workbench.jobs import findings_from

        results = renamed(report.get("results") or [], scanned_at or s.path, s.path)
        status = report.get("status", "failed")
        static = next((r for r in results if r.get("probe") == "static"), None)
        if static and s.layout == "file" and static.get("files"):
            s.format = static["files"][0].get("format") or s.format  # the scanner's reading of the content
        runs: list[dict[str, Any]] = []
        failed: list[tuple[str, str]] = []
        if status != "done":
            runs.append({"probe": "static", "status": "failed", "error": report.get("error"), "params": {}, "result": None,
                         "duration_s": report.get("duration_s")})
            failed.append(("static", report.get("error") or "failed"))
        for r in results:
            runs.append({"probe": r["probe"], "status": "done", "params": r.get("params") or {}, "result": r,
                         "duration_s": r.get("duration_s"), "findings": findings_from(r)})
        for e in report.get("errors") or []:
            if e.get("status") == "failed":
                failed.append((e["probe"], e.get("error") or "failed"))
        verdict = layered_verdict(results, failed) if results else {"verdict": "inconclusive", "score": None,
                                                                    "band": None, "evidence": ""}
        item = {"subject": subject_row(s), "plan": self.plan, "runs": runs, "verdict": verdict["verdict"],
                "risk": verdict["score"], "status": status, "error": report.get("error"),
                "content": status == "done" and how == "scanned"}
        if status == "done" and how == "scanned":
            self._content[s.sha256] = (s.path, report)
        self._items.append(item)
        self._lines.append(self._line(s, results, verdict, status, report.get("error"), how))
        if how == "duplicate":
            self.summary.duplicates += 1
        if status != "done":
            self.summary.failed += 1

    def stored_report(self, memo: dict[str, Any]) -> dict[str, Any]:
        """A worker-style outcome rebuilt from the runs of the subject the memo points at."""
        runs = self.store.list_runs(subject_id=memo["subject_id"])
        return {"status": "done", "results": [r["result"] for r in runs if r["status"] == "done" and r.get("result")],
                "errors": []}

    def add_resumed(self, s: Subject, item: dict[str, Any]) -> None:
        """A subject the case already holds under this plan: its stored runs go to the outputs, nothing is written."""
        results = []
        if self._jsonl is not None or self.sarif_path is not None:  # the stored runs only when an output needs them
            runs = self.store.list_runs(subject_id=item["subject_id"])
            results = [r["result"] for r in runs if r["status"] == "done" and r.get("result")]
        verdict = {"verdict": item["verdict"], "score": item["risk"], "band": None, "evidence": ""}
        line = self._line(s, results, verdict, item["status"], item.get("error"), "resumed")
        line["subject_id"] = item["subject_id"]
        self.summary.resumed += 1
        self._emit(line)

    def problem(self, path: str, reason: str) -> None:
        self.summary.problems += 1
        if self._jsonl:
            self._jsonl.write(json.dumps({"path": path, "status": "problem", "problem": reason}) + "\n")

    def _line(self, s: Subject, results: list[dict[str, Any]], verdict: dict[str, Any], status: str,
              error: str | None, how: str) -> dict[str, Any]:
        static = next((r for r in results if r.get("probe") == "static"), None)
        if static and (static.get("findings") or static.get("inconclusive_parts")):
            self._sarif_results.append(static)
        top = (static or {}).get("findings") or []
        return {"path": s.path, "name": s.name, "sha256": s.sha256, "layout": s.layout, "format": s.format,
                "size": s.size, "files": len(s.files), "status": status, "verdict": verdict["verdict"],
                "risk": verdict.get("score"), "how": how, "error": error,
                "probes": {r["probe"]: r.get("verdict") for r in results},
                "summary": (static or {}).get("summary"), "findings": len(top),
                "top_finding": ({k: top[0].get(k) for k in ("severity", "rule", "module", "name", "file")}
                                if top else None)}

    # ------------------------------------------------------------------ output
    def due(self) -> bool:
        return bool(self._items) and (len(self._items) >= self.batch_size
                                      or time.monotonic() - self._t_flush >= self.batch_seconds)

    def flush(self) -> None:
        """Commit the buffered subjects in one transaction, then write their JSON lines."""
        if self._items:
            ids = self.store.record_registry_batch(self.case_id, self._items)
            for line, sid in zip(self._lines, ids):
                line["subject_id"] = sid
                self._emit(line)
        self._items, self._lines, self._content = [], [], {}
        self._t_flush = time.monotonic()

    def _emit(self, line: dict[str, Any]) -> None:
        self.summary.add(line)
        if self._jsonl:
            self._jsonl.write(json.dumps(line, default=str) + "\n")

    def close(self) -> None:
        """Write the job's SARIF log and close the JSON lines (call after the last flush)."""
        if self._jsonl:
            self._jsonl.close()
            self._jsonl = None
        if self.sarif_path is not None:
            from probes.static_scan.sarif import to_sarif

            log = to_sarif(self._sarif_results)
            log["runs"][0].setdefault("properties", {})["registry"] = {
                "subjects": self.summary.subjects, "verdicts": self.summary.verdicts}
            tmp = Path(str(self.sarif_path) + ".tmp")
            tmp.write_text(json.dumps(log, indent=1), encoding="utf-8")
            os.replace(tmp, self.sarif_path)
