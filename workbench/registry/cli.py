"""The ``workbench registry scan`` command's body: case selection, progress on stderr, Ctrl+C, the summary.

Kept out of ``workbench/cli.py`` so that file stays a thin Typer layer.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from probes.errors import ProbeError


class ProgressLine:
    """Job progress on stderr: one rewritten line on a terminal, a line every few seconds when piped."""

    def __init__(self, enabled: bool, every_s: float = 5.0) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self._last_t = 0.0
        self._width = 0

    def __call__(self, p: Any) -> None:
        import time

        if not self.enabled:
            return
        line = p.text()
        if self.tty:
            sys.stderr.write("\r" + line.ljust(self._width))
            self._width = len(line)
        elif time.monotonic() - self._last_t >= self.every_s or (p.total is not None and p.done >= p.total):
            sys.stderr.write(line + "\n")
            self._last_t = time.monotonic()
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._width:
            sys.stderr.write("\n")


def registry_case(store: Any, root: Path, case: int | None) -> int:
    """The case to record into: the given one, else the case titled ``registry ROOT`` (created when missing)."""
    if case is not None:
        store.get_case(case)
        return case
    title = f"registry {root.resolve()}"
    for c in store.list_cases():
        if c["title"] == title:
            return int(c["id"])
    return int(store.new_case(title, "Registry scan (workbench registry scan)"))


def summary_lines(summary: dict[str, Any], case_id: int, db: Path) -> list[str]:
    counts = ", ".join(f"{n} {v}" for v, n in sorted(summary["verdicts"].items(), key=lambda kv: -kv[1]))
    lines = [f"{summary['subjects']} subjects: {counts or 'none'}",
             f"  scanned {summary['scanned']} distinct contents, {summary['duplicates']} duplicate(s) reported from "
             f"one scan, {summary['resumed']} already in the case, {summary['failed']} failed, "
             f"{summary['problems']} problem(s) under the root",
             f"  {summary['wall_s']:.1f}s, {summary['subjects_per_s']:.1f} subjects/s on {summary['engine'].get('engine')} "
             f"({summary['engine'].get('workers')} workers); case {case_id} in {db}"]
    if summary["worst"]:
        lines.append("Worst subjects:")
        for w in summary["worst"][:10]:
            risk = f"{w['risk']:.0f}" if isinstance(w.get("risk"), (int, float)) else "-"
            tail = w.get("summary") or w.get("error") or ""
            lines.append(f"  {w['verdict'] if w['status'] == 'done' else 'FAILED':<12} risk {risk:>3}  {w['path']}  {tail}"[:220])
    if summary["cancelled"]:
        lines.append("Stopped early: re-run the same command to finish (finished subjects are kept).")
    return lines


def run_registry_scan(root: Path, *, case: int | None, engine: str, address: str | None, workers: int,
                      probes: str | None, data: Path | None, audit: Path | None, params: dict[str, Any],
                      resume: bool, time_limit: float, memory_mb: int, json_lines: Path | None, sarif: Path | None,
                      quiet: bool, db: Path | None, as_json: bool, echo: Callable[..., None],
                      open_store: Callable[..., Any]) -> None:
    import typer

    from workbench.registry.job import JobOptions, build_plan, run_job
    from workbench.scan import parse_probe_list

    if not root.exists():
        raise ProbeError(f"no such file or folder: {root}")
    options = JobOptions(probes=parse_probe_list(probes), params=params, data=str(data) if data else None,
                         audit=str(audit) if audit else None, engine=engine, address=address, workers=workers,
                         resume=resume, time_limit_s=time_limit, memory_mb=memory_mb, json_lines=json_lines,
                         sarif=sarif)
    build_plan(options)  # every parameter checked before the case file is touched
    if engine not in ("local", "ray"):
        raise ProbeError(f"unknown engine {engine!r} (local or ray)")
    if address and engine != "ray":
        raise ProbeError("--address is for --engine ray")
    cancel = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        sys.stderr.write("\nstopping: finishing the current batch (Ctrl+C again to abort at once)\n")

    old = signal.signal(signal.SIGINT, on_sigint)
    line = ProgressLine(not quiet)
    try:
        with open_store(db) as store:
            case_id = registry_case(store, root, case)
            summary = run_job(root, options, store=store, case_id=case_id, progress=line, cancel=cancel).to_dict()
            db_path = store.path
    finally:
        signal.signal(signal.SIGINT, old)
        line.close()
    if as_json:
        echo(json.dumps({"case_id": case_id, **summary}, indent=2, default=str))
    else:
        for text in summary_lines(summary, case_id, db_path):
            echo(text)
    if summary["cancelled"]:
        raise typer.Exit(130)
