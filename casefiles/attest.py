"""Row attestations: the audit trail carries a digest of every evidence row it records, so an edit to a
run's verdict, a note's body, a finding or a subject's hash made outside the tool fails ``case verify``.

Each write puts ``{"rows": {"runs/3": {"sha256": ..., "fields": {"verdict": "1a2b3c4d", ...}}}}`` into the
detail of the audit row it appends (in the same transaction); the full digest decides, the short
per-field digests only name what changed. Case files written before attestations existed are checked
for what their audit rows did record (a run's status, verdict and score; a note's body hash; a
subject's path, hash, format and kind) and the rest of those older rows is stated as not covered.
Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The fields each attested table's digest covers (named, not "every column": a later migration that
# adds a column the tool updates without an audit row must not make old digests fail).
FIELDS: dict[str, tuple[str, ...]] = {
    "cases": ("id", "title", "description", "created"),
    "subjects": ("id", "case_id", "name", "path", "sha256", "size", "format", "kind", "files", "metadata", "added"),
    "runs": ("id", "case_id", "subject_id", "probe", "params", "status", "started", "finished", "duration_s",
             "verdict", "score", "summary", "result", "error"),
    "findings": ("id", "case_id", "subject_id", "run_id", "probe", "severity", "title", "detail", "atlas", "created"),
    "notes": ("id", "case_id", "subject_id", "body", "created", "updated"),
    "artifacts": ("id", "case_id", "subject_id", "run_id", "name", "media_type", "sha256", "size", "created"),
}
_SINGULAR = {"cases": "case", "subjects": "subject", "runs": "run", "findings": "finding", "notes": "note",
             "artifacts": "artifact"}
# Audit actions that wrote evidence rows before attestations existed (their detail names the row).
_LEGACY_KEYS = {"subject.added": "subject_id", "subject.kind": "subject_id", "run.started": "run_id",
                "run.done": "run_id", "run.failed": "run_id", "run.cancelled": "run_id",
                "run.interrupted": "run_id", "note.added": "note_id", "note.edited": "note_id",
                "case.created": None}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The attestation of one row: a digest of its covered fields, plus a short digest per field."""
    fields = {k: row.get(k) for k in FIELDS[table]}
    return {"sha256": hashlib.sha256(_canonical(fields).encode("utf-8")).hexdigest(),
            "fields": {k: hashlib.sha256(_canonical(v).encode("utf-8")).hexdigest()[:8] for k, v in fields.items()}}


@dataclass
class RowReport:
    """What the row check found: problems (each naming a row) and what older rows it could not cover."""

    problems: list[str] = field(default_factory=list)
    checked: int = 0
    not_covered: int = 0
    coverage: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"problems": self.problems, "rows_checked": self.checked, "rows_not_covered": self.not_covered,
                "coverage": self.coverage}


def _name(table: str, row: Mapping[str, Any]) -> str:
    extra = ""
    if table == "runs":
        extra = f" ({row.get('probe')}, verdict {row.get('verdict')!s})"
    elif table == "subjects":
        extra = f" ({row.get('name')})"
    elif table == "findings":
        extra = f" ({row.get('severity')}: {str(row.get('title') or '')[:40]})"
    return f"{_SINGULAR[table]} {row.get('id')}{extra}"


def _legacy_expectations(audit_rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """From audit rows without attestations: per row key, the field values the audit row recorded."""
    expect: dict[str, dict[str, Any]] = {}
    attested: dict[str, int] = {}
    for a in audit_rows:
        try:
            detail = json.loads(a["detail"] or "{}")
        except ValueError:
            continue
        if not isinstance(detail, dict):
            continue
        if isinstance(detail.get("rows"), dict):
            for key in detail["rows"]:
                attested[key] = a["seq"]
            continue
        action = a["action"]
        if action not in _LEGACY_KEYS or _LEGACY_KEYS[action] is None:
            continue
        rid = detail.get(_LEGACY_KEYS[action])
        if rid is None:
            continue
        if action.startswith("subject."):
            e = expect.setdefault(f"subjects/{rid}", {})
            e.update({k: detail[k] for k in ("path", "sha256", "format", "kind") if k in detail})
        elif action.startswith("run."):
            e = expect.setdefault(f"runs/{rid}", {})
            e["status"] = {"run.started": "running"}.get(action, action.split(".", 1)[1])
            if action in ("run.done", "run.failed", "run.cancelled"):
                e.update({k: detail.get(k) for k in ("verdict", "score")})
        elif action.startswith("note."):
            expect.setdefault(f"notes/{rid}", {})["body_sha256"] = detail.get("sha256")
    return expect, attested


def check_rows(audit_rows: list[Mapping[str, Any]], current: Mapping[str, list[Mapping[str, Any]]]) -> RowReport:  # noqa: C901 - one pass per kind of row problem, each a few lines
    """Compare the case's current evidence rows (``current[table]``) with what its audit trail attests."""
    report = RowReport()
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for a in audit_rows:
        try:
            detail = json.loads(a["detail"] or "{}")
        except ValueError:
            continue
        rows = detail.get("rows") if isinstance(detail, dict) else None
        if isinstance(rows, dict):
            for key, att in rows.items():
                if isinstance(att, dict):
                    latest[key] = (a["seq"], att)
    legacy, _ = _legacy_expectations(audit_rows)
    legacy_runs = {k.split("/", 1)[1] for k in legacy if k.startswith("runs/")}
    seen: set[str] = set()
    for table, rows in current.items():
        for row in rows:
            key = f"{table}/{row['id']}"
            seen.add(key)
            if key in latest:
                report.checked += 1
                seq, att = latest[key]
                now = digest(table, row)
                if now["sha256"] != att.get("sha256"):
                    old = att.get("fields") or {}
                    changed = [k for k, v in now["fields"].items() if old.get(k) != v]
                    what = ", ".join(f"{k}={str(row.get(k))[:40]!r}" if k in ("verdict", "status", "score", "severity",
                                                                            "kind", "sha256", "path") else k
                                     for k in changed) or "its content"
                    report.problems.append(f"{_name(table, row)} was edited outside the tool after audit row seq {seq} "
                                           f"attested it: {what} no longer match")
                continue
            if key in legacy:
                report.checked += 1
                report.not_covered += 1
                exp = legacy[key]
                bad = []
                for k, v in exp.items():
                    if k == "body_sha256":
                        if v and hashlib.sha256(str(row.get("body") or "").encode()).hexdigest() != v:
                            bad.append("body")
                    elif row.get(k) != v:
                        bad.append(f"{k}={str(row.get(k))[:40]!r} (audit: {str(v)[:40]!r})")
                if bad:
                    report.problems.append(f"{_name(table, row)} does not match its audit rows: {', '.join(bad)}")
                continue
            if table in ("findings", "artifacts") and str(row.get("run_id")) in legacy_runs:
                report.not_covered += 1
                continue
            if table == "cases":  # its title is attested from creation on; an older file's is not
                report.not_covered += 1
                continue
            report.problems.append(f"{_name(table, row)} has no audit record: it was added outside the tool")
    for key, (seq, _att) in latest.items():
        table, rid = key.split("/", 1)
        if table in current and key not in seen:
            report.problems.append(f"{_SINGULAR.get(table, table)} {rid}, attested by audit row seq {seq}, is missing: "
                                   "deleted outside the tool")
    for a in current.get("artifacts", []):
        data = a.get("data")
        if isinstance(data, (bytes, bytearray)) and hashlib.sha256(data).hexdigest() != a.get("sha256"):
            report.problems.append(f"artifact {a['id']} ({a.get('name')}): its stored bytes no longer match its sha256")
    if report.not_covered:
        report.coverage = (f"{report.not_covered} row(s) were written by an older workbench before row attestations: "
                           "only what their audit rows recorded is checked (run status/verdict/score, note body hash, "
                           "subject path/sha256/format/kind); their result JSON, summaries and findings are not covered")
    else:
        report.coverage = f"all {report.checked} evidence row(s) are attested by the audit trail"
    return report
