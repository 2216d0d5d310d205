"""Scores: the layered risk (trust score and band), every probe's verdict and score, the evidence line."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from workbench.ui import render
from vocabulary.layered import case_verdict, subject_verdict
from workbench.ui.model import latest_by_probe


class ScoresPane(Vertical):
    def compose(self) -> ComposeResult:
        yield Static(id="scores-head")
        yield DataTable(id="scores-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="scores-evidence")
        yield Static(id="scores-detail")

    def on_mount(self) -> None:
        self.show_empty("Select a case or a subject in the case tree (or press n for a new case).")
        self.app.pane_mounted(self)  # type: ignore[attr-defined]

    def show_empty(self, message: str) -> None:
        self.query_one("#scores-head", Static).update(Text(message, style="grey62"))
        t = self.query_one("#scores-table", DataTable)
        t.clear(columns=True)
        self.query_one("#scores-evidence", Static).update("")
        self.query_one("#scores-detail", Static).update("")

    @staticmethod
    def _head(title: str, v: dict[str, Any]) -> Text:
        t = Text(f"{title}\n", style="bold")
        if v["score"] is None:
            t.append("Risk: — (no finished probe yet; press r to run probes)", style="grey62")
            return t
        style = render.BAND_STYLE.get(v["band"], "")
        t.append("Risk ")
        t.append(f" {v['score']}/100 ", style=f"reverse {style}")
        t.append(f"  {v['band']} risk  ", style=style)
        t.append("verdict ")
        t.append_text(render.verdict_text(v["verdict"]))
        t.append("\n")
        t.append("█" * (v["score"] // 4), style=style)
        t.append("░" * (25 - v["score"] // 4), style="grey30")
        t.append("  0–30 low · 31–60 medium · 61–100 high", style="grey50")
        return t

    def show_case(self, store: Any, case_id: int) -> None:
        case = store.get_case(case_id)
        runs = store.list_runs(case_id=case_id)
        subjects = store.list_subjects(case_id)
        all_v = [subject_verdict([r for r in runs if r["subject_id"] == s["id"]]) for s in subjects]
        overall = case_verdict(all_v)
        self.query_one("#scores-head", Static).update(self._head(f"Case {case_id}: {case['title']}", overall))
        t = self.query_one("#scores-table", DataTable)
        t.clear(columns=True)
        t.add_columns("subject", "kind", "verdict", "risk", "runs", "evidence")
        for s, v in zip(subjects, all_v):
            n = sum(1 for r in runs if r["subject_id"] == s["id"])
            risk = Text("—") if v["score"] is None else Text(f"{v['score']} {v['band']}",
                                                             style=render.BAND_STYLE.get(v["band"], ""))
            t.add_row(f"[{s['id']}] {s['name']}", s["kind"], render.verdict_text(v["verdict"] if v["score"] is not None else None),
                      risk, str(n), _trim(v["evidence"], 70), key=f"s{s['id']}")
        desc = case.get("description") or ""
        self.query_one("#scores-evidence", Static).update(Text(desc, style="grey70"))
        self.query_one("#scores-detail", Static).update(
            Text(f"{len(subjects)} subject(s), {len(runs)} run(s). Enter on a subject in the tree opens it.",
                 style="grey50"))

    def show_subject(self, store: Any, subject_id: int, run_id: int | None = None) -> None:
        s = store.get_subject(subject_id)
        runs = store.list_runs(subject_id=subject_id)
        v = subject_verdict(runs)
        self.query_one("#scores-head", Static).update(
            self._head(f"{s['name']}  ({s['format']}, {s['kind']})  sha256 {s['sha256'][:16]}…", v))
        t = self.query_one("#scores-table", DataTable)
        t.clear(columns=True)
        t.add_columns("", "probe", "verdict", "score", "risk", "duration", "summary")
        contrib = v.get("contributions") or {}
        for probe, r in latest_by_probe(runs).items():
            score = Text(render.fmt_score(r.get("score")))
            if r.get("score") is not None and r["score"] >= 0.5:
                score.stylize("bold red")
            c = contrib.get(probe)
            t.add_row(render.status_text(r["status"]), probe, render.verdict_text(r.get("verdict")), score,
                      "—" if c is None else str(c), render.fmt_duration(r.get("duration_s")), _trim(r.get("summary") or r.get("error") or "", 90),
                      key=f"r{r['id']}")
        ev = Text("Evidence: ", style="bold")
        ev.append(v["evidence"])
        self.query_one("#scores-evidence", Static).update(ev)
        detail = Text()
        if run_id is not None:
            r = store.get_run(run_id)
            detail.append(f"Run {r['id']}: {r['probe']} {r['status']}", style="bold")
            detail.append(f"  started {r['started']}  {render.fmt_duration(r.get('duration_s'))}\n")
            if r.get("summary"):
                detail.append(f"{r['summary']}\n")
            if r.get("error"):
                detail.append(f"error: {r['error']}\n", style="red")
            detail.append("params: " + json.dumps(r.get("params") or {}, default=str)[:400], style="grey62")
        else:
            detail.append(f"path {s['path']}", style="grey50")
        self.query_one("#scores-detail", Static).update(detail)


def _trim(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
