"""Trigger norms: per-class Neural Cleanse L1 bars (median, MAD threshold, suspected class) and the
recovered mask / pattern / stamped trigger as half-block heatmaps."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from workbench.ui import render
from workbench.ui.model import selected_or_latest
from workbench.ui.widgets.pane import Pane, Selection


class NormsPane(Pane, VerticalScroll):
    def compose(self) -> ComposeResult:
        yield Static(id="norms-head")
        yield Static(id="norms-bars")
        yield Static(id="norms-maps")

    def on_mount(self) -> None:
        self.show_none("Select an image-classifier subject with a Neural Cleanse run.")
        self.tell_app_mounted()

    def show(self, selection: Selection, store: Any) -> None:
        """The selected run when it is a Neural Cleanse run, else the subject's latest one."""
        if selection.subject_id is None:
            self.show_none("Select an image-classifier subject to see its Neural Cleanse trigger norms.")
            return
        s = store.get_subject(selection.subject_id)
        found = selected_or_latest(store.list_runs(subject_id=selection.subject_id), selection.run_id,
                                   ("neural-cleanse",))
        if found:
            self.show_run(found[0], s["name"])
        else:
            self.show_none(f"{s['name']}: no finished Neural Cleanse run"
                           + (" (press r to run probes)." if s["kind"] != "causal-lm" else
                              " (a language model: see the trigger hunt, key 3)."))

    def show_none(self, message: str) -> None:
        self.query_one("#norms-head", Static).update(Text(message, style="grey62"))
        self.query_one("#norms-bars", Static).update("")
        self.query_one("#norms-maps", Static).update("")

    def show_run(self, run: dict[str, Any], subject_name: str = "") -> None:
        res = run.get("result") or {}
        per_class = res.get("per_class") or []
        if not per_class:
            self.show_none(f"Run {run['id']} has no per-class norms.")
            return
        ai = res.get("anomaly_index")
        target = res.get("suspected_target")
        cand = res.get("candidate_class")
        thr = float((res.get("params") or {}).get("threshold", 2.0) or 2.0)
        head = Text(f"Neural Cleanse — {subject_name}  (run {run['id']})\n", style="bold")
        head.append("Anomaly index ")
        head.append(f"{ai:.2f}" if ai is not None else "—",
                    style="bold red" if ai is not None and ai > thr else "bold green")
        head.append(f" (flag > {thr:g})   ")
        if target is not None:
            head.append(f"suspected target class {target}", style="bold red")
        else:
            head.append(f"no class stands out (smallest trigger: class {cand})", style="green")
        asr = res.get("trigger_attack_success_heldout")
        if asr is not None:
            head.append(f"   recovered trigger succeeds on {asr:.0%} of held-out inputs")
        head.append("\n")
        self.query_one("#norms-head", Static).update(head)
        bars = Text("Per-class L1 norm of the smallest trigger (a backdoor target needs a far smaller one)\n\n",
                    style="grey70")
        bars.append_text(render.norm_bars(per_class, suspected=target, candidate=cand, threshold=thr))
        self.query_one("#norms-bars", Static).update(bars)
        mask, pattern = res.get("mask"), res.get("pattern")
        maps = Text()
        if mask:
            width = len(mask[0]) if mask and mask[0] else 1
            room = (self.size.width or 100) - 2
            scale = max(1, min(3, (room // 3 - 3) // width))  # three pictures side by side
            kw = {"xscale": scale, "yscale": scale}
            blocks = [("mask", render.heatmap(mask, **kw))]
            if pattern:
                grid, rgb = render.gray_pattern(pattern)
                blocks.append(("pattern", render.heatmap(grid, rgb=rgb, **kw)))
                st = render.stamped_trigger(mask, pattern)
                blocks.append(("mask × pattern", render.heatmap(st, rgb=rgb, **kw)))
            label = f"class {target if target is not None else cand}"
            maps.append(f"\nRecovered trigger for {label}  (mask L1 {res.get('mask_l1', 0):.1f}; "
                        "each picture scaled to its own range, bright = high)\n\n", style="bold")
            maps.append_text(render.side_by_side(blocks))
        self.query_one("#norms-maps", Static).update(maps)
