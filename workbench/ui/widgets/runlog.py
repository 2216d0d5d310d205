"""Run log: every run of the case (probe, parameters, status, duration, error) and this session's events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, RichLog, Static

from workbench.ui import render
from workbench.ui.widgets.pane import Pane, Selection


class RunLogPane(Pane, Vertical):
    case_level = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history: list[str] = []  # this session's events as plain text
    def compose(self) -> ComposeResult:
        yield Static("Runs recorded in the case file", classes="pane-title")
        yield DataTable(id="runlog-table", cursor_type="row", zebra_stripes=True)
        yield Static("This session", classes="pane-title")
        yield RichLog(id="runlog-events", wrap=True, markup=False, max_lines=2000)

    def on_mount(self) -> None:
        t = self.query_one("#runlog-table", DataTable)
        t.add_columns("run", "", "subject", "probe", "status", "verdict", "started", "duration",
                      "error / summary", "params")
        self.tell_app_mounted()

    def show(self, selection: Selection, store: Any) -> None:
        self.show_case(store, selection.case_id)

    def show_case(self, store: Any, case_id: int | None) -> None:
        t = self.query_one("#runlog-table", DataTable)
        t.clear()
        if case_id is None:
            return
        names = {s["id"]: s["name"] for s in store.list_subjects(case_id)}
        for r in store.list_runs(case_id=case_id):
            tail = r.get("error") or r.get("summary") or ""
            t.add_row(str(r["id"]), render.status_text(r["status"]), names.get(r["subject_id"], "—"), r["probe"],
                      r["status"], render.verdict_text(r.get("verdict")), (r.get("started") or "")[11:19],
                      render.fmt_duration(r.get("duration_s")),
                      Text(tail[:70], style="red" if r.get("error") and r["status"] != "done" else ""),
                      render.short_params(r.get("params"), 60),
                      key=f"run{r['id']}")
        if t.row_count:
            t.move_cursor(row=t.row_count - 1)

    def event(self, text: str, style: str = "", stamp: bool = True) -> None:
        line = Text(f"{datetime.now():%H:%M:%S} " if stamp else "", style="grey50")
        line.append(text, style=style)
        self.history.append(line.plain)
        self.query_one("#runlog-events", RichLog).write(line)
