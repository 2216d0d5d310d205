"""One unit of registry work and the function a worker runs on it (local pool or Ray: the same code).

A :class:`Task` carries paths, never loaded models: the subject's files, the layered
plan and the limits. :func:`run_task` runs in the worker process, under a wall-clock
limit (``SIGALRM``) and a data-memory limit (``RLIMIT_DATA``: heap and anonymous
mappings, not the read-only file mappings the static scan reads models through), and
always returns a plain-dict outcome, never raises for the subject's own faults.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.registry.discover import FileEntry, unchanged

# small non-weight files of a hub-cache snapshot scanned together, by their names, as a folder (config.json's
# auto_map, *.py custom code, hidden pickles in text); everything else is scanned file by file
_CONTEXT_MAX_BYTES = 1 << 20


@dataclass
class Task:
    """What a worker needs to scan one subject (picklable; no loaded objects)."""

    key: str  # the subject's sha256
    path: str
    layout: str  # file | folder | hf-cache
    files: list[FileEntry]
    plan: dict[str, Any]  # {"static": params, "dynamic": params | None, "model_probes": [...], "scan_options": {...}}
    time_limit_s: float = 300.0
    memory_mb: int | None = 4096
    attempt: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class TaskTimeout(Exception):
    """The task ran past its wall-clock limit."""


_limits_set: dict[str, Any] = {}


def apply_memory_limit(memory_mb: int | None) -> None:
    """Cap this worker process's data segment (once per process; later calls with the same value do nothing)."""
    if not memory_mb or _limits_set.get("memory_mb") == memory_mb:
        return
    import resource

    limit = int(memory_mb) << 20
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    _limits_set["memory_mb"] = memory_mb


def worker_init(memory_mb: int | None, threads: int | None = 1) -> None:
    """Initializer of a local pool worker: one compute thread, the memory cap, Ctrl+C left to the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads or 1))
    apply_memory_limit(memory_mb)


class _Alarm:
    """Raise :class:`TaskTimeout` in the main thread after ``seconds`` (no-op off the main thread)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = threading.current_thread() is threading.main_thread() and seconds > 0

    def _fire(self, *_: Any) -> None:
        raise TaskTimeout(f"time limit of {self.seconds:g}s reached")

    def __enter__(self) -> _Alarm:
        if self.armed:
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)


def run_tasks(tasks: list[Task]) -> list[dict[str, Any]]:
    """Run a chunk of tasks in this worker, one after another (each under its own limits): one round trip for many
    small subjects, so the job's per-subject overhead stays small next to a millisecond scan."""
    return [run_task(t) for t in tasks]


def run_task(task: Task) -> dict[str, Any]:
    """Scan one subject; returns ``{key, status, results, errors, duration_s, pid, attempt}`` (status done|failed)."""
    from probes.errors import explain

    apply_memory_limit(task.memory_mb)
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict[str, Any] = {"key": task.key, "status": "done", "results": [], "errors": [], "pid": os.getpid(),
                           "attempt": task.attempt}
    try:
        with _Alarm(task.time_limit_s):
            _layers(task, out)
        changed = unchanged(task.files)
        if changed:
            out.update(status="failed", results=[], error=changed)
    except TaskTimeout as exc:
        out.update(status="failed", results=[], error=str(exc))
    except MemoryError:
        out.update(status="failed", results=[], error=f"out of memory (limit {task.memory_mb} MB)")
    except Exception as exc:  # hostile input must not take the worker down: one line for this subject
        out.update(status="failed", results=[], error=explain(exc))
    out["duration_s"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - c0
    return out


def _layers(task: Task, out: dict[str, Any]) -> None:
    """Static scan on everything; dynamic where the static scan leaves doubt; the model probes only when asked."""
    static = static_scan(task)
    out["results"].append(static)
    plan = task.plan
    if plan.get("dynamic") is not None and task.layout == "file":
        from probes.dynamic_load import offer_after_static

        if offer_after_static(static):
            out["results"].append(_run_path_probe("dynamic", task.path, plan["dynamic"], out))
    if plan.get("model_probes") and static.get("verdict") not in ("malicious", "inconclusive"):
        _model_probes(task, out)


def _run_path_probe(name: str, path: str, params: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    from probes import registry
    from probes.context import RunContext
    from workbench.paths import cache_dir

    res = registry.get(name).load()(path, RunContext(name, dict(params), cache_dir=cache_dir()))
    return res.to_dict()


def _model_probes(task: Task, out: dict[str, Any]) -> None:
    """The behavioural probes the examiner asked for, through the headless layered scan (no case store here)."""
    from workbench.scan import ScanOptions, prepare, run_scan

    o = task.plan.get("scan_options") or {}
    options = ScanOptions(probes=list(task.plan["model_probes"]), data=o.get("data"), audit=o.get("audit"),
                          seed=int(o.get("seed", 0)), params=dict(o.get("params") or {}), threads=1)
    report = run_scan(prepare(task.path, options))
    out["results"].extend(report.results)
    out["errors"].extend(report.errors)


def static_scan(task: Task) -> dict[str, Any]:
    """The ``static`` result of the subject, with every finding naming the subject's own path."""
    from probes.static_scan import scan_path

    params = task.plan["static"]
    if task.layout != "hf-cache":
        return scan_path(task.path, params=params).to_dict()
    return _hub_snapshot_scan(task, params)


def _hub_snapshot_scan(task: Task, params: dict[str, Any]) -> dict[str, Any]:
    """A hub-cache revision: its entries are symlinks into ``blobs/`` (the scanner would not follow them).

    Weight files are scanned one by one through their blobs; the small other files are
    copied, under their own names, into a scratch folder scanned as a model folder, so the
    folder rules (custom code, ``auto_map``, hidden pickles in text) apply as to any folder.
    """
    from probes import formats
    from probes.static_scan import scan_path, verdict_for

    repo = Path(task.path).parent.parent
    parts: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    inconclusive: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="wb-snap-")
    try:
        context = []
        for f in task.files:
            shown = str(Path(task.path) / f.rel)
            if not Path(f.real).is_relative_to(repo):
                findings.append({"file": shown, "member": None, "offset": None, "opcode": None, "module": None,
                                 "name": None, "severity": "medium", "rule": "symlink-outside",
                                 "explanation": f"snapshot entry points outside its repository to {f.real}; "
                                                "not followed"})
                continue
            fmt = formats.detect_file(f.real)
            if fmt in (formats.UNKNOWN, formats.EMPTY) and f.size <= _CONTEXT_MAX_BYTES:
                dest = Path(scratch) / f.rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f.real, dest)
                context.append(f)
                continue
            parts.append(_renamed(scan_path(f.real, params=params).to_dict(), {f.real: shown}))
        if context:
            names = {str(Path(scratch) / f.rel): str(Path(task.path) / f.rel) for f in context}
            parts.append(_renamed(scan_path(scratch, params=params).to_dict(), names))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for p in parts:
        findings.extend(p.get("findings") or [])
        inconclusive.extend(p.get("inconclusive_parts") or [])
        files.extend(p.get("files") or [])
    rank = {"critical": 4, "high": 3, "medium": 2, "low": 1}
    findings.sort(key=lambda f: -rank.get(str(f.get("severity")), 0))
    verdict, score = verdict_for(findings, inconclusive)
    top = findings[0] if findings else None
    what = ".".join(x for x in ((top or {}).get("module"), (top or {}).get("name")) if x) or (top or {}).get("rule")
    summary = (f"{verdict}: {what} in {Path(top['file']).name}; {len(findings)} finding(s) in {len(files)} files"
               if top else f"{verdict}: no findings in {len(files)} files")
    if inconclusive:
        summary += f"; {len(inconclusive)} part(s) unparseable ({inconclusive[0].get('reason')})"
    return {"probe": "static", "verdict": verdict, "score": score, "summary": summary,
            "params": params, "duration_s": round(time.perf_counter() - t0, 4), "findings": findings,
            "files_scanned": len(files), "files": files, "inconclusive_parts": inconclusive,
            "severity_counts": {s: sum(1 for f in findings if f.get("severity") == s) for s in rank},
            "layout": "hf-cache"}


def _renamed(result: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """Point a result's file names at the snapshot entries instead of blobs or the scratch copy."""
    def fix(path: Any) -> Any:
        if not isinstance(path, str):
            return path
        for a, b in names.items():
            if path == a or path.startswith(a + os.sep):
                return b + path[len(a):]
        return path

    for key in ("findings", "inconclusive_parts", "files"):
        for item in result.get(key) or []:
            if "file" in item:
                item["file"] = fix(item["file"])
    return result
