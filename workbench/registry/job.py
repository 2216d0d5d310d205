"""The driver of a registry job: discover → hash → skip what the case holds → fan out → write, streamed.

Layered by cost: the static scan runs on every subject; the opt-in ``dynamic`` probe
only on subjects the static scan leaves inconclusive or review-tier; the behavioural
(model) probes only when asked for with ``probes``. Content addressing: a subject is
keyed by its sha256 (a file's, or a folder's manifest hash); the same bytes under
another name are scanned once and reported under both names, and a re-run skips every
subject the case already finished under the same plan (probe versions and parameters).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes import registry
from probes.errors import ProbeError
from probes.params import split_for_probes
from workbench.registry.discover import FileChanged, Hasher, Problem, Subject, discover, hash_subject
from workbench.registry.engines import Engine, LazyEngine, make_engine
from workbench.registry.task import Task
from workbench.registry.writer import JobWriter, Summary

LAYERING = "registry-1"  # bump when the layering rule changes what a subject's runs mean


@dataclass
class JobOptions:
    """Everything a registry job is asked to do (the CLI fills it from its options)."""

    probes: list[str] | None = None  # beyond static: "dynamic" and/or model probes
    params: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    audit: str | None = None
    seed: int = 0
    engine: str = "local"
    address: str | None = None
    workers: int = 2
    resume: bool = True
    time_limit_s: float = 300.0
    memory_mb: int | None = 4096
    batch_size: int = 200
    batch_seconds: float = 1.0
    chunk_size: int = 32  # subjects per task round trip (a chunk also closes at chunk_mb of files)
    chunk_mb: float = 64.0
    json_lines: Path | None = None
    sarif: Path | None = None
    count_first: bool = True  # count the subjects in a background walk so progress has a total and an ETA


@dataclass(frozen=True)
class JobProgress:
    """Where a job stands (for a progress line or a UI): counts, rate in subjects/s and ETA in seconds."""

    done: int
    total: int | None
    scanned: int
    duplicates: int
    resumed: int
    failed: int
    problems: int
    in_flight: int
    rate: float
    eta_s: float | None

    def text(self) -> str:
        total = f"/{self.total}" if self.total else ""
        eta = f" ETA {_clock(self.eta_s)}" if self.eta_s is not None else ""
        return (f"registry: {self.done}{total} subjects ({self.scanned} scanned, {self.duplicates} duplicate, "
                f"{self.resumed} already in case, {self.failed} failed, {self.problems} problems) "
                f"{self.rate:.1f}/s{eta}")


def _clock(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def build_plan(options: JobOptions) -> tuple[dict[str, Any], str]:
    """The layered plan (resolved, checked parameters per probe) and its key; ProbeError before anything runs."""
    extra = [n for n in (options.probes or []) if n != "static"]
    for n in extra:
        registry.get(n)
    dynamic = "dynamic" in extra
    model = [n for n in extra if registry.get(n).needs == "model"]
    other_path = [n for n in extra if registry.get(n).needs == "path" and n != "dynamic"]
    if other_path:
        raise ProbeError(f"registry scan runs static (always) and dynamic; not {', '.join(other_path)}")
    for n in model:
        spec = registry.get(n)
        if spec.data_required and (options.audit if spec.data == "audit" else options.data) is None:
            flag = "--audit NPZ" if spec.data == "audit" else "--data NPZ"
            raise ProbeError(f"probe {n} needs {flag}")
    names = ["static", *(["dynamic"] if dynamic else []), *model]
    shared = split_for_probes(options.params, [(n, registry.get(n).all_params) for n in names])
    params = {n: registry.get(n).resolve_params({"seed": options.seed, **shared[n]}) for n in names}
    data = {k: _file_id(v) for k, v in (("data", options.data), ("audit", options.audit)) if v}
    plan = {"static": params["static"], "dynamic": params.get("dynamic"), "model_probes": model,
            "scan_options": {"data": options.data, "audit": options.audit, "seed": options.seed,
                             "params": options.params}}
    key_src = {"layering": LAYERING, "data": data,
               "probes": [[n, registry.get(n).version, params[n]] for n in names]}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return plan, key


def _file_id(path: str) -> str:
    from workbench.subject_files import sha256_file

    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"data file not found: {path}")
    return sha256_file(p)


def count_subjects(root: str | Path, stop: threading.Event | None = None) -> int:
    """How many subjects discovery will yield (a cheap walk: names and file heads, no hashing)."""
    n = 0
    for item in discover(root):
        if stop is not None and stop.is_set():
            break
        n += isinstance(item, Subject)
    return n


class _Counter(threading.Thread):
    def __init__(self, root: str | Path) -> None:
        super().__init__(daemon=True, name="registry-count")
        self.root, self.stop = root, threading.Event()
        self.total: int | None = None

    def run(self) -> None:
        n = count_subjects(self.root, self.stop)
        if not self.stop.is_set():
            self.total = n


def run_job(root: str | Path, options: JobOptions, *, store: Any, case_id: int,  # noqa: C901 (the driver loop)
            progress: Callable[[JobProgress], None] | None = None, cancel: threading.Event | None = None,
            engine: Engine | None = None, progress_every_s: float = 0.5) -> Summary:
    """Scan every subject under ``root`` into case ``case_id``; returns the job's summary.

    Memory is flat in the number of subjects: discovery is a generator, at most
    ``engine.capacity`` tasks are in flight and at most one batch is buffered.
    """
    cancel = cancel or threading.Event()
    plan, plan_key = build_plan(options)
    root_p = Path(root).expanduser()
    if not root_p.exists():
        raise ProbeError(f"no such file or folder: {root_p}")
    writer = JobWriter(store, case_id, plan_key, batch_size=options.batch_size, batch_seconds=options.batch_seconds,
                       json_lines=options.json_lines, sarif=options.sarif)
    counter = _Counter(root_p) if options.count_first and progress else None
    if counter:
        counter.start()
    eng = engine or LazyEngine(lambda: make_engine(options.engine, options.workers, address=options.address,
                                                   memory_mb=options.memory_mb), options.workers, options.engine)
    summary = writer.summary
    hasher = Hasher()
    check_case = options.resume and store.registry_has_plan(case_id, plan_key)  # a fresh job has nothing to skip
    waiting: dict[str, list[Subject]] = {}  # sha256 in flight -> the subjects with those bytes (first one scanned)
    source: Iterator[Subject | Problem] = iter(discover(root_p))
    exhausted = False
    chunk: list[Task] = []
    chunk_bytes = [0]
    t0 = time.monotonic()
    last_tick = 0.0

    def tick(force: bool = False) -> None:
        nonlocal last_tick
        now = time.monotonic()
        if progress is None or (not force and now - last_tick < progress_every_s):
            return
        last_tick = now
        done = summary.subjects + len(writer._items)
        elapsed = now - t0
        rate = done / elapsed if elapsed > 0 else 0.0
        total = counter.total if counter else None
        eta = (total - done) / rate if total is not None and rate > 0 else None
        progress(JobProgress(done, total, summary.scanned, summary.duplicates, summary.resumed, summary.failed,
                             summary.problems, eng.in_flight, rate, eta))

    def take_one() -> bool:
        """Discover and dispatch one subject; False when discovery is over."""
        try:
            item = next(source)
        except StopIteration:
            return False
        if isinstance(item, Problem):
            writer.problem(item.path, item.reason)
            return True
        try:
            hash_subject(item, hasher)
        except (FileChanged, OSError) as exc:
            writer.problem(item.path, f"cannot hash: {getattr(exc, 'strerror', None) or exc}")
            return True
        if check_case:
            done_item = store.registry_item(case_id, item.path, item.sha256, plan_key)
            if done_item and done_item["status"] == "done":
                writer.add_resumed(item, done_item)
                return True
        if item.sha256 in waiting:
            waiting[item.sha256].append(item)
            return True
        earlier = writer.pending_report(item.sha256)
        if earlier is not None:
            writer.add(item, earlier[1], scanned_at=earlier[0], how="duplicate")
            return True
        stored = store.registry_content(case_id, item.sha256, plan_key)
        if stored is not None:
            writer.add(item, writer.stored_report(stored), scanned_at=stored["path"], how="duplicate")
            return True
        waiting[item.sha256] = [item]
        chunk.append(Task(item.sha256, item.path, item.layout, item.files, plan, options.time_limit_s,
                          options.memory_mb))
        chunk_bytes[0] += item.size
        return True

    def send(force: bool = False) -> None:
        """Hand the open chunk to the engine when it is full, or when a worker would otherwise wait."""
        if chunk and (force or len(chunk) >= options.chunk_size or chunk_bytes[0] >= options.chunk_mb * (1 << 20)
                      or eng.in_flight == 0):
            eng.submit(list(chunk))
            chunk.clear()
            chunk_bytes[0] = 0

    try:
        while True:
            while not exhausted and not cancel.is_set() and eng.in_flight < eng.capacity:
                exhausted = not take_one()
                send(force=exhausted)
                if writer.due():
                    writer.flush()
            if (exhausted or cancel.is_set()) and eng.in_flight == 0 and not chunk:
                break
            if cancel.is_set():
                break
            for task, outcome in eng.poll(0.2):
                subjects = waiting.pop(task.key, [])
                summary.scanned += 1
                summary.task_seconds += float(outcome.get("duration_s") or 0.0)
                summary.task_cpu_seconds += float(outcome.get("cpu_s") or 0.0)
                for i, s in enumerate(subjects):
                    writer.add(s, outcome, scanned_at=subjects[0].path, how="scanned" if i == 0 else "duplicate")
            if writer.due():
                writer.flush()
            tick()
    finally:
        summary.cancelled = cancel.is_set()
        summary.engine = eng.describe()
        if counter:
            counter.stop.set()
        try:
            eng.close(cancel=cancel.is_set())
        finally:
            writer.flush()
            summary.wall_seconds = time.monotonic() - t0
            tick(force=True)
            writer.close()
    return summary
