"""Trigger hunt: the live KL ranking of a language model filling in as batches finish.

Sortable (s), pin a candidate to the top (p), add an examiner's candidate (c),
confirm the highlighted candidate by generation (g): each prompt's answer with
the candidate inserted, side by side with the clean answer.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, ProgressBar, Static

from vocabulary import file_path
from workbench.ui.model import latest_done
from workbench.ui.widgets.pane import Pane, Selection

SORTS = [("kl", "KL quantile"), ("kl_mean", "KL mean"), ("z", "robust z"), ("candidate", "candidate")]


class HuntPane(Pane, Vertical):
    BINDINGS = [
        Binding("p", "pin", "Pin", id="hunt.pin", tooltip="Pin / unpin the highlighted candidate (kept on top)"),
        Binding("c", "custom", "Add candidate", id="hunt.custom",
                tooltip="Score a candidate trigger of your own with the same prompts"),
        Binding("g", "confirm", "Confirm", id="hunt.confirm",
                tooltip="Confirm the highlighted candidate by generation, side by side with the clean answers"),
        Binding("s", "sort", "Sort", id="hunt.sort", tooltip="Cycle the sort column"),
    ]
    # the command palette offers these too (name, help, action on this pane)
    PALETTE = [
        ("Pin hunt candidate", "Pin / unpin the highlighted candidate of the trigger hunt (p)", "pin"),
        ("Add hunt candidate", "Score a candidate trigger of your own (c)", "custom"),
        ("Confirm hunt candidate", "Confirm the highlighted candidate by generation (g)", "confirm"),
        ("Sort hunt ranking", "Cycle the sort column of the trigger hunt (s)", "sort"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.subject_id: int | None = None
        self.subject_name = ""
        self.ranking: list[dict[str, Any]] = []
        self.custom: dict[str, dict[str, Any]] = {}
        self.pinned: set[str] = set()
        self.sort_index = 0
        self.live = False
        self.rate: float | None = None
        self.evaluated = 0
        self.stage = ""
        self.kl_params: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="hunt-head")
        yield ProgressBar(id="hunt-progress", total=1, show_eta=False)
        yield DataTable(id="hunt-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="hunt-compare-head")
        yield DataTable(id="hunt-compare", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        t = self.query_one("#hunt-table", DataTable)
        for key, label in (("pin", "★"), ("rank", "#"), ("candidate", "candidate"), ("kl", "KL q"),
                           ("kl_mean", "KL mean"), ("position", "position"), ("source", "source"), ("z", "z"),
                           ("confirmed", "confirmed")):
            t.add_column(label, key=key)
        self._compare_columns()
        self._head()
        self.tell_app_mounted()

    def show(self, selection: Selection, store: Any) -> None:
        """A language model's last hunt (a live hunt of another subject keeps the pane)."""
        if selection.subject_id is None or (self.live and self.subject_id != selection.subject_id):
            return
        s = store.get_subject(selection.subject_id)
        kl = latest_done(store.list_runs(subject_id=selection.subject_id), "kl")
        if s["kind"] == "causal-lm" or kl:
            self.set_subject(selection.subject_id, s["name"], kl["result"] if kl else None)

    # -- actions (keys in the pane, and the command palette) --------------------------------------
    def _ready(self) -> bool:
        if self.subject_id is None:
            self.app.notify("No trigger hunt: select a language model and press t.", severity="warning")
            return False
        return True

    def action_pin(self) -> None:
        if not self._ready():
            return
        cand = self.toggle_pin()
        if cand is None:
            self.app.notify("No candidate highlighted.", severity="warning")
            return
        pinned = cand in self.pinned
        app: Any = self.app
        app.log_event(f"{'pinned' if pinned else 'unpinned'} {cand!r}")
        app.record(app.sel.case_id or 0, "hunt.pinned" if pinned else "hunt.unpinned",
                   {"subject_id": self.subject_id, "candidate": cand}, what="pin")

    def action_sort(self) -> None:
        if self._ready():
            self.app.notify(f"Sorted by {self.cycle_sort()}", timeout=2)

    def action_confirm(self) -> None:
        if not self._ready():
            return
        cand = self.highlighted()
        if cand is None:
            self.app.notify("No candidate highlighted.", severity="warning")
            return
        self._job("confirm", {"candidate": cand["candidate"], "token_ids": cand.get("token_ids"),
                              "position": cand.get("position")}, f"confirm {cand['candidate']!r}")

    def action_custom(self) -> None:
        from workbench.ui.screens.dialogs import Field, PromptScreen

        if not self._ready():
            return

        def done(values: dict[str, str] | None) -> None:
            if values and values.get("candidate"):
                self._job("custom", {"candidate": values["candidate"]}, f"score {values['candidate']!r}")

        self.app.push_screen(PromptScreen("Add a candidate trigger", [Field("candidate", "Candidate (a word or phrase)")],
                                          submit="Score", required=("candidate",)), done)

    def _job(self, kind: str, params: dict[str, Any], label: str) -> None:
        from workbench.ui.tasks import Job

        app: Any = self.app
        s = app.store.get_subject(self.subject_id)
        app.enqueue(Job(kind, s["case_id"], s["id"], path=file_path(str(s["path"])), params={**params, "kl_params": dict(self.kl_params)},
                        label=label))

    # -- state --------------------------------------------------------------------------------
    def set_subject(self, subject_id: int | None, name: str, last_result: dict[str, Any] | None) -> None:
        if subject_id == self.subject_id:
            return
        self.subject_id, self.subject_name = subject_id, name
        self.ranking = list((last_result or {}).get("ranking") or [])
        self.custom, self.pinned, self.live, self.rate, self.evaluated = {}, set(), False, None, 0
        self.stage = "last hunt" if last_result else ""
        self.query_one("#hunt-compare", DataTable).clear()
        self.query_one("#hunt-compare-head", Static).update("")
        self.query_one("#hunt-progress", ProgressBar).update(total=1, progress=1 if last_result else 0)
        self._fill()
        self._head()

    def start(self, subject_id: int, name: str, params: dict[str, Any]) -> None:
        self.subject_id, self.subject_name = subject_id, name
        self.ranking, self.live, self.rate, self.evaluated, self.stage = [], True, None, 0, "queued"
        self.kl_params = dict(params)
        self._fill()
        self._head()

    def update_ranking(self, ranking: list[dict[str, Any]]) -> None:
        self.ranking = list(ranking)
        self._fill()
        self._head()

    def progress(self, event: Any) -> None:
        """Show a :class:`probes.context.ProgressEvent` of the hunt: the stage's counts and its rate."""
        self.stage = f"{event.stage}: {event.message}" if event.message else event.stage
        self.query_one("#hunt-progress", ProgressBar).update(total=max(event.total, 1), progress=event.done)
        if event.unit == "candidates":
            self.rate = event.rate if event.rate else self.rate
            self.evaluated = event.done
        self._head()

    def finished(self, status: str, text: str) -> None:
        self.live = False
        self.stage = f"{status}: {text}"
        bar = self.query_one("#hunt-progress", ProgressBar)
        if status == "done" and bar.total:
            bar.update(progress=bar.total)
        self._head()

    def add_custom(self, entry: dict[str, Any]) -> None:
        self.custom[entry["candidate"]] = entry
        self.pinned.add(entry["candidate"])
        self._fill()

    def toggle_pin(self) -> str | None:
        cand = self.highlighted()
        if cand is None:
            return None
        if cand["candidate"] in self.pinned:
            self.pinned.discard(cand["candidate"])
        else:
            self.pinned.add(cand["candidate"])
        self._fill(keep=cand["candidate"])
        return cand["candidate"]

    def cycle_sort(self) -> str:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self._fill()
        self._head()
        return SORTS[self.sort_index][1]

    def highlighted(self) -> dict[str, Any] | None:
        t = self.query_one("#hunt-table", DataTable)
        rows = self.rows()
        if not rows or t.cursor_row is None or t.cursor_row >= len(rows):
            return None
        return rows[t.cursor_row]

    def show_comparison(self, data: dict[str, Any]) -> None:
        head = Text(f"Confirmation of {data['candidate']!r} at {data['position']}: ", style="bold")
        if data.get("confirmed"):
            head.append("CONFIRMED", style="bold red")
        else:
            head.append("not confirmed", style="bold green")
        head.append(f" — {data.get('target_agreement', 0):.0%} of prompts give the same answer"
                    f" (clean: {data.get('clean_agreement', 0):.0%}), similarity to clean {data.get('clean_similarity', 0):.2f}")
        if data.get("target_response"):
            head.append(f"\nfixed answer: {data['target_response']!r}", style="red")
        self.query_one("#hunt-compare-head", Static).update(head)
        c = self._compare_columns()
        for i, r in enumerate(data.get("rows") or []):
            changed = r["clean"] != r["triggered"]
            c.add_row(r["prompt"], r["clean"], Text(r["triggered"], style="red" if changed else ""), key=f"c{i}")
        for r in self.ranking:
            if r["candidate"] == data["candidate"]:
                r["confirmed"] = data.get("confirmed")
        if data["candidate"] in self.custom:
            self.custom[data["candidate"]]["confirmed"] = data.get("confirmed")
        self._fill(keep=data["candidate"])

    def _compare_columns(self) -> DataTable:
        """(Re)create the side-by-side columns sized to the pane: prompt 30%, each response 35%."""
        c = self.query_one("#hunt-compare", DataTable)
        c.clear(columns=True)
        room = max(88, (self.size.width or 96) - 8)
        c.add_column("prompt", key="prompt", width=int(room * 0.3))
        c.add_column("clean response", key="clean", width=int(room * 0.35))
        c.add_column("with candidate", key="triggered", width=int(room * 0.35))
        return c

    # -- rendering ------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for e in self.ranking:
            merged.setdefault(e["candidate"], e)
        for k, e in self.custom.items():
            merged.setdefault(k, e)
        key = SORTS[self.sort_index][0]
        if key == "candidate":
            ordered = sorted(merged.values(), key=lambda e: e["candidate"])
        else:
            ordered = sorted(merged.values(), key=lambda e: -(e.get(key) if e.get(key) is not None else -1e9))
        pinned = [e for e in ordered if e["candidate"] in self.pinned]
        return pinned + [e for e in ordered if e["candidate"] not in self.pinned]

    def _fill(self, keep: str | None = None) -> None:
        t = self.query_one("#hunt-table", DataTable)
        current = self.highlighted() if keep is None else {"candidate": keep}
        t.clear()
        rank = {e["candidate"]: i + 1 for i, e in enumerate(self.ranking)}
        cursor = 0
        for i, e in enumerate(self.rows()):
            conf = e.get("confirmed")
            t.add_row(Text("★", style="yellow") if e["candidate"] in self.pinned else "",
                      str(rank.get(e["candidate"], "—")),
                      Text(e["candidate"], style="bold red" if conf else ""),
                      f"{e.get('kl', 0):.3f}", f"{e.get('kl_mean', 0):.3f}", e.get("position", ""),
                      e.get("source", ""), "—" if e.get("z") is None else f"{e['z']:.1f}",
                      Text("yes", style="bold red") if conf else ("no" if conf is False else "—"),
                      key=f"k{i}")
            if current is not None and e["candidate"] == current["candidate"]:
                cursor = i
        if t.row_count:
            t.move_cursor(row=cursor, animate=False)

    def _head(self) -> None:
        t = Text()
        if self.subject_id is None:
            t.append("Select a language-model subject, then press t to start a trigger hunt.", style="grey62")
        else:
            t.append(f"Trigger hunt — {self.subject_name}", style="bold")
            t.append("  ● live" if self.live else "", style="bold cyan")
            t.append(f"\n{self.stage or 'no hunt yet: press t to start one'}", style="grey70")
            if self.rate:
                t.append(f"   {self.rate:,.0f} candidates/s", style="bold")
            if self.evaluated:
                t.append(f"   {self.evaluated:,} in this stage", style="grey62")
            t.append(f"\nsorted by {SORTS[self.sort_index][1]}   p pin · c add candidate · g confirm by generation"
                     " · s sort · Esc cancel", style="grey50")
        self.query_one("#hunt-head", Static).update(t)
