"""Read-side helpers over a CaseStore for the panes (no Textual, no torch)."""

from __future__ import annotations

from typing import Any

from vocabulary.layered import subject_verdict

__all__ = ["latest_by_probe", "latest_done", "selected_or_latest", "dynamic_called_for", "subject_verdict", "data_paths_for"]


def latest_by_probe(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest run of each probe (any status), by probe name."""
    out: dict[str, dict[str, Any]] = {}
    for r in runs:
        out[r["probe"]] = r  # runs are ordered by id
    return out


def latest_done(runs: list[dict[str, Any]], probe: str | tuple[str, ...]) -> dict[str, Any] | None:
    probes = (probe,) if isinstance(probe, str) else probe
    for r in reversed(runs):
        if r["probe"] in probes and r["status"] == "done" and r.get("result"):
            return r
    return None


def selected_or_latest(runs: list[dict[str, Any]], run_id: int | None, probes: tuple[str, ...]) -> list[dict[str, Any]]:
    """The selected run when it is a finished run of one of ``probes``, else the latest finished run of each."""
    chosen = next((r for r in runs if r["id"] == run_id), None)
    if chosen and chosen["probe"] in probes and chosen.get("result"):
        return [chosen]
    return [r for r in (latest_done(runs, p) for p in probes) if r]


def dynamic_called_for(runs: list[dict[str, Any]]) -> bool:
    """Does the newest static result ask for the opt-in dynamic probe (and has it not run since)?"""
    from probes.dynamic_load import offer_after_static

    static = latest_done(runs, "static")
    dynamic = latest_done(runs, "dynamic")
    if static is None or (dynamic is not None and dynamic["id"] > static["id"]):
        return False
    return offer_after_static(static["result"])


def data_paths_for(runs: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """The data / audit files used by the newest runs of a subject (to prefill the picker)."""
    data = audit = None
    for r in runs:
        p = r.get("params") or {}
        d, a = p.get("data"), p.get("audit")
        if isinstance(d, dict) and d.get("source"):
            data = d["source"]
        if isinstance(a, dict) and a.get("source"):
            audit = a["source"]
    return data, audit
