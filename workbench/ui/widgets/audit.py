"""Data audit: per-class flagged counts and the per-class score distribution of spectral /
activation-clustering runs over a suspect training set."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from workbench.ui import render
from workbench.ui.model import selected_or_latest
from workbench.ui.widgets.pane import Pane, Selection


class AuditPane(Pane, VerticalScroll):
    def compose(self) -> ComposeResult:
        yield Static(id="audit-body")

    def on_mount(self) -> None:
        self.show_none("Select a subject with a spectral or activation-clustering run (needs an audit .npz).")
        self.tell_app_mounted()

    def show(self, selection: Selection, store: Any) -> None:
        """The selected audit run, else the subject's latest spectral and activation-clustering runs."""
        if selection.subject_id is None:
            self.show_none("Select a subject to see its data audits.")
            return
        s = store.get_subject(selection.subject_id)
        aud = selected_or_latest(store.list_runs(subject_id=selection.subject_id), selection.run_id,
                                 ("spectral", "activation-clustering"))
        if aud:
            self.show_runs(aud)
        else:
            self.show_none(f"{s['name']}: no finished spectral or activation-clustering run "
                           "(run probes with an audit .npz, key r).")

    def show_none(self, message: str) -> None:
        self.query_one("#audit-body", Static).update(Text(message, style="grey62"))

    def show_runs(self, runs: list[dict[str, Any]]) -> None:
        parts: list[Any] = []
        for run in runs:
            parts.append(self._one(run))
        from rich.console import Group

        self.query_one("#audit-body", Static).update(Group(*parts))

    @staticmethod
    def _one(run: dict[str, Any]):
        from rich.console import Group

        res = run.get("result") or {}
        per = res.get("per_class") or []
        head = Text(f"{run['probe']} (run {run['id']}): ", style="bold")
        head.append_text(render.verdict_text(res.get("verdict")))
        head.append(f"  {res.get('summary', '')}\n")
        n_total = res.get("n_samples")
        flagged = len(res.get("flagged_indices") or [])
        head.append(f"{flagged} flagged of {n_total} samples; layer {res.get('layer')}", style="grey70")
        if res.get("precision") is not None:
            head.append(f"; precision {res['precision']:.2f} recall {res['recall']:.2f} (ground truth)", style="grey70")
        top_flag = max([int(c.get("flagged") or 0) for c in per] + [1])
        t = Table(box=None, pad_edge=False, expand=False, header_style="bold")
        for col in ("class", "n", "poisoned", "flagged", "", "score distribution", "transplant vs baseline", "reason"):
            if col == "reason":
                t.add_column(col, no_wrap=True, overflow="ellipsis", max_width=36)
            else:
                t.add_column(col, no_wrap=True, min_width={"": 8, "n": 4, "transplant vs baseline": 25,
                                                           "score distribution": 18}.get(col, len(col)))
        for c in per:
            poisoned = bool(c.get("poisoned"))
            tr = c.get("transplant_rate")
            base = c.get("transplant_baseline") or 0.0
            bar = Text("—", style="grey50") if tr is None else (
                render.hbar(tr, 1.0, 14, "bold red" if poisoned else "steel_blue1") + Text(f" {tr:.2f}/{base:.2f}"))
            t.add_row(str(c.get("class")), str(c.get("n")),
                      Text("yes", style="bold red") if poisoned else Text("no", style="green"),
                      str(c.get("flagged") or 0),
                      render.hbar(int(c.get("flagged") or 0), top_flag, 8, "bold red" if poisoned else "grey50"),
                      render.sparkline((c.get("score_hist") or {}).get("counts") or [],
                                       "bold red" if poisoned else "steel_blue1"),
                      bar, Text(str(c.get("reason") or ""), style="grey62"))
        hist_of = next(((c.get("score_hist") or {}).get("of") for c in per if c.get("score_hist")), None)
        foot = Text(f"score distribution: each class's samples by {hist_of} (two humps = a split into two groups)"
                    if hist_of else "", style="grey50")
        return Group(head, Text(""), t, foot, Text(""))
