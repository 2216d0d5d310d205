"""Static payload scan (probe ``static``): what would loading these files import and call?

Entry points:

* :func:`run` - the probe contract ``run(path, ctx) -> ProbeResult``;
* :func:`scan_path` - the same scan for the loader, ``scan_path(path) -> ProbeResult`` (declared defaults).

Nothing is unpickled, imported or extracted. Each finding is a dict
``{file, member, offset, opcode, module, name, severity, rule, explanation}``;
``offset`` is a byte offset in the file, or in the archive member / decompressed
stream named by ``member``. Severities: ``critical`` and ``high`` make the verdict
``malicious``; ``medium``/``low`` (review tier: class imports, archive oddities)
make it ``suspicious``; anything unparseable makes it ``inconclusive`` - never ``clean``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from probes.context import RunContext
from probes.errors import ProbeError
from probes.result import ProbeResult
from probes.static_scan.sarif import to_sarif
from probes.static_scan.scanner import SEVERITY_RANK, Loc, Scanner

__all__ = ["run", "scan_path", "to_sarif", "verdict_for"]

def verdict_for(findings: list[dict], inconclusive: list[dict]) -> tuple[str, float]:
    worst = max((SEVERITY_RANK.get(f["severity"], 0) for f in findings), default=0)
    if worst >= SEVERITY_RANK["high"]:
        return "malicious", 1.0 if worst == SEVERITY_RANK["critical"] else 0.9
    if inconclusive:
        return "inconclusive", 0.5
    if worst == SEVERITY_RANK["medium"]:
        return "suspicious", 0.4
    if worst == SEVERITY_RANK["low"]:
        return "suspicious", 0.25
    return "clean", 0.0


def _summary(verdict: str, findings: list[dict], inconclusive: list[dict], n_files: int) -> str:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    cnt = ", ".join(f"{counts[s]} {s}" for s in ("critical", "high", "medium", "low") if s in counts)
    files = f"{n_files} file{'s' if n_files != 1 else ''}"
    if findings:
        top = findings[0]
        what = ".".join(x for x in (top.get("module"), top.get("name")) if x) or top.get("rule")
        where = Path(top["file"]).name + (f"!{top['member']}" if top.get("member") else "")
        off = f" @{top['offset']}" if top.get("offset") is not None else ""
        head = f"{verdict}: {what} in {where}{off}; {cnt} finding(s) in {files}"
    else:
        head = f"{verdict}: no findings in {files}"
    if inconclusive:
        head += f"; {len(inconclusive)} part(s) unparseable ({inconclusive[0]['reason']})"
    return head


def scan_path(path: str | Path, *, progress=None, cancel=None, params: dict | None = None) -> ProbeResult:
    """Scan a file or folder; returns the ``static`` ProbeResult (see module docstring).

    ``params`` are the probe's declared parameters (checked here; defaults filled in).
    """
    from probes.registry import get

    used = get("static").resolve_params(params)
    t0 = time.perf_counter()
    p = Path(path)
    sc = Scanner(max_decompressed=int(used["max_decompressed_mb"] * (1 << 20)),
                 crc_limit=int(used["crc_limit_mb"] * (1 << 20)), progress=progress, cancel=cancel,
                 max_total_decompressed=int(used["max_total_decompressed_mb"] * (1 << 20)),
                 max_seconds=float(used["max_seconds"]), max_files=int(used["max_files"]))
    try:
        sc.scan_path(p)
    except RecursionError:
        sc.fail(Loc(sc.records[-1].file if sc.records else str(p)), "structure nested too deeply")
    except MemoryError:
        sc.fail(Loc(sc.records[-1].file if sc.records else str(p)), "out of memory while reading (not fully read)")
    findings = sorted(sc.findings, key=lambda f: (-SEVERITY_RANK.get(f["severity"], 0), f["file"],
                                                   f.get("member") or "", f["offset"] if f["offset"] is not None else -1))
    verdict, score = verdict_for(findings, sc.inconclusive)
    dur = time.perf_counter() - t0
    details: dict[str, Any] = {
        "findings": findings,
        "files_scanned": len(sc.records),
        "formats": {r.file: r.format for r in sc.records},
        "files": [{"file": r.file, "format": r.format, "size": r.size, "pickles": r.pickles,
                   "pickle_bytes": r.pickle_bytes, "status": r.status} for r in sc.records],
        "inconclusive_parts": sc.inconclusive,
        "severity_counts": {s: sum(1 for f in findings if f["severity"] == s) for s in ("critical", "high", "medium", "low")},
        "pickles_scanned": sc.pickles,
        "pickle_bytes": sc.pickle_bytes,
        "opcodes": sc.opcodes,
        "bytes_total": sc.bytes_total,
        "not_read": sc.not_read,
    }
    return ProbeResult(probe="static", verdict=verdict, score=score,
                       summary=_summary(verdict, findings, sc.inconclusive, len(sc.records)),
                       params=used, duration_s=dur, details=details)


def run(path: str, ctx: RunContext) -> ProbeResult:
    """Probe contract: static scan of ``path`` (a file or a model folder)."""
    if not isinstance(path, (str, Path)):
        raise ProbeError("the static scan needs a file or folder path")
    return scan_path(path, progress=ctx.progress_callback(unit="files"), cancel=ctx.cancel, params=ctx.params)
