"""Scores: the layered risk (trust score and band), every probe's verdict and score, the evidence line, and the
static scan's findings one per row (Enter shows the opcodes or config/graph node around a finding)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from vocabulary.layered import case_verdict, subject_verdict
from workbench.ui import render
from workbench.ui.model import latest_by_probe
from workbench.ui.widgets.pane import Pane, Selection, column_widths


class ScoresPane(Pane, Vertical):
    def compose(self) -> ComposeResult:
        yield Static(id="scores-head")
        yield DataTable(id="scores-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="scores-evidence")
        findings: DataTable = DataTable(id="scores-findings", cursor_type="row", zebra_stripes=True)
        findings.display = False  # shown only for a subject whose static scan has findings
        yield findings
        yield Static(id="scores-detail")

    def on_mount(self) -> None:
        self.show_empty("Select a case or a subject in the case tree (or press n for a new case).")
        self.tell_app_mounted()

    def show(self, selection: Selection, store: Any) -> None:
        self._shown = (selection, store)
        if selection.case_id is None:
            return
        if selection.subject_id is None:
            self.show_case(store, selection.case_id)
        else:
            self.show_subject(store, selection.subject_id, selection.run_id)

    def on_resize(self) -> None:
        shown = getattr(self, "_shown", None)
        if shown is not None and self.size.width != getattr(self, "_fitted", None):
            self.show(*shown)  # the columns follow the pane's width

    def _width(self) -> int:
        """Cells the table may use: the pane's width once laid out, else the screen's minus the case tree."""
        width = self.size.width or max(40, self.app.size.width - 46)
        self._fitted = self.size.width
        return width

    def _fill(self, headers: list[str], rows: list[tuple[list[Any], str]], *, flexible: int,
              cap: dict[int, float] | None = None) -> None:
        """Columns sized to the content and to the pane: the ``flexible`` column takes what is left, and a
        column in ``cap`` takes at most that share of the width (long names are cut with an ellipsis)."""
        total = self._width()
        wanted = [max([len(h)] + [_cell_width(cells[i]) for cells, _ in rows]) for i, h in enumerate(headers)]
        for i, share in (cap or {}).items():
            wanted[i] = min(wanted[i], max(len(headers[i]), int(total * share)))
        widths = column_widths(total, wanted, flexible)
        t = self.query_one("#scores-table", DataTable)
        t.clear(columns=True)
        for h, w in zip(headers, widths):
            t.add_column(h, width=w)
        for cells, key in rows:
            t.add_row(*(_trim_cell(c, w) for c, w in zip(cells, widths)), key=key)

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
        rows = []
        for s, v in zip(subjects, all_v):
            n = sum(1 for r in runs if r["subject_id"] == s["id"])
            risk = Text("—") if v["score"] is None else Text(f"{v['score']} {v['band']}",
                                                             style=render.BAND_STYLE.get(v["band"], ""))
            verdict = render.verdict_text(v["verdict"] if v["score"] is not None else None)
            rows.append(([f"[{s['id']}] {s['name']}", s["kind"] or "?", verdict, risk, str(n), v["evidence"]],
                         f"s{s['id']}"))
        self._fill(["subject", "kind", "verdict", "risk", "runs", "evidence"], rows, flexible=5, cap={0: 0.35})
        desc = case.get("description") or ""
        self.query_one("#scores-evidence", Static).update(Text(desc, style="grey70"))
        self._show_findings(None)
        self.query_one("#scores-detail", Static).update(
            Text(f"{len(subjects)} subject(s), {len(runs)} run(s). Enter on a subject in the tree opens it.",
                 style="grey50"))

    def show_subject(self, store: Any, subject_id: int, run_id: int | None = None) -> None:
        s = store.get_subject(subject_id)
        runs = store.list_runs(subject_id=subject_id)
        v = subject_verdict(runs)
        self.query_one("#scores-head", Static).update(
            self._head(f"{s['name']}  ({s['format']}, {s['kind']})  sha256 {s['sha256'][:16]}…", v))
        contrib = v.get("contributions") or {}
        rows = []
        for probe, r in latest_by_probe(runs).items():
            score = Text(render.fmt_score(r.get("score")))
            if r.get("score") is not None and r["score"] >= 0.5:
                score.stylize("bold red")
            c = contrib.get(probe)
            rows.append(([render.status_text(r["status"]), probe, render.verdict_text(r.get("verdict")), score,
                          "—" if c is None else str(c), render.fmt_duration(r.get("duration_s")),
                          r.get("summary") or r.get("error") or ""], f"r{r['id']}"))
        self._fill(["", "probe", "verdict", "score", "risk", "duration", "summary"], rows, flexible=6)
        ev = Text("Evidence: ", style="bold")
        ev.append(v["evidence"])
        self.query_one("#scores-evidence", Static).update(ev)
        static = store.get_run(run_id) if run_id is not None else None
        if static is None or static.get("probe") != "static":
            static = latest_by_probe(runs).get("static")
        self._show_findings(static)
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


    FINDING_HEADERS = ["severity", "file", "member", "offset", "opcode", "target", "why"]

    def _show_findings(self, run: dict[str, Any] | None) -> None:
        """The static run's findings, one per row (file, member, offset, opcode, target, severity, why)."""
        t = self.query_one("#scores-findings", DataTable)
        result = (run or {}).get("result") or {}
        self._findings: list[dict[str, Any]] = list(result.get("findings") or [])[:2000]
        t.display = bool(self._findings)
        if not self._findings:
            return
        t.clear(columns=True)
        total = self._width()
        rows = [[Text(str(f.get("severity") or "?"), style=_SEV_STYLE.get(str(f.get("severity")), "")),
                 Path(str(f.get("file") or "")).name, str(f.get("member") or ""),
                 "" if f.get("offset") is None else str(f["offset"]), str(f.get("opcode") or ""),
                 ".".join(x for x in (f.get("module"), f.get("name")) if x) or str(f.get("where") or ""),
                 str(f.get("explanation") or f.get("rule") or "")] for f in self._findings]
        wanted = [max([len(h)] + [_cell_width(r[i]) for r in rows]) for i, h in enumerate(self.FINDING_HEADERS)]
        for i, share in ((1, 0.15), (2, 0.15), (5, 0.2)):
            wanted[i] = min(wanted[i], max(len(self.FINDING_HEADERS[i]), int(total * share)))
        widths = column_widths(total, wanted, 6)
        for h, w in zip(self.FINDING_HEADERS, widths):
            t.add_column(h, width=w)
        for i, cells in enumerate(rows):
            t.add_row(*(_trim_cell(c, w) for c, w in zip(cells, widths)), key=f"f{i}")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "scores-findings":
            return
        event.stop()
        key = str(event.row_key.value or "")
        findings = getattr(self, "_findings", [])
        if not key.startswith("f") or int(key[1:]) >= len(findings):
            return
        from probes.static_scan.disasm import finding_context
        from workbench.ui.screens.finding import FindingScreen

        self.app.push_screen(FindingScreen(finding_context(findings[int(key[1:])])))


_SEV_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "grey62"}


def _cell_width(value: Any) -> int:
    return Text(value).cell_len if isinstance(value, str) else value.cell_len


def _trim_cell(value: Any, n: int) -> Any:
    if isinstance(value, str):
        return _trim(value, n)
    if value.cell_len <= n:
        return value
    out = value.copy()
    out.truncate(n, overflow="ellipsis")
    return out


def _trim(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
