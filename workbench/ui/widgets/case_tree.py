"""Case tree: cases → subjects → runs, with status icons and verdict colours."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from vocabulary.layered import case_verdict, subject_verdict
from workbench.ui import render

Key = tuple[str, int]


class CaseTree(Tree[dict]):
    """Built from the case file; :meth:`sync` adds new nodes and relabels changed ones in place."""

    BINDINGS = [
        Binding("right", "expand_node", "Expand", show=False, id="tree.expand",
                tooltip="Expand the highlighted case or subject"),
        Binding("left", "collapse_node", "Collapse", show=False, id="tree.collapse",
                tooltip="Collapse the highlighted node, or go to its parent"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("Case file", **kwargs)
        self.show_root = False
        self.guide_depth = 3
        self.nodes_by_key: dict[Key, TreeNode[dict]] = {}

    # -- building ---------------------------------------------------------------------------
    def sync(self, store: Any) -> None:
        for case in store.list_cases():
            runs = store.list_runs(case_id=case["id"])
            subjects = store.list_subjects(case["id"])
            verdicts = []
            by_subject: dict[int | None, list[dict[str, Any]]] = {}
            for r in runs:
                by_subject.setdefault(r["subject_id"], []).append(r)
            cnode = self._ensure(("case", case["id"]), self.root, {"type": "case", "id": case["id"],
                                                                  "case_id": case["id"]})
            for s in subjects:
                sruns = by_subject.get(s["id"], [])
                v = subject_verdict(sruns)
                verdicts.append(v)
                snode = self._ensure(("subject", s["id"]), cnode, {"type": "subject", "id": s["id"],
                                                                   "case_id": case["id"], "subject_id": s["id"]})
                snode.set_label(self._subject_label(s, sruns, v))
                for r in sruns:
                    self._run_node(r, snode, case["id"])
            for r in by_subject.get(None, []):
                self._run_node(r, cnode, case["id"])
            cnode.set_label(self._case_label(case, case_verdict(verdicts)["verdict"] if runs else None, runs))

    def _run_node(self, r: dict[str, Any], parent: TreeNode[dict], case_id: int) -> None:
        node = self._ensure(("run", r["id"]), parent, {"type": "run", "id": r["id"], "case_id": case_id,
                                                       "subject_id": r["subject_id"]}, leaf=True)
        node.set_label(self._run_label(r))

    def _ensure(self, key: Key, parent: TreeNode[dict], data: dict, leaf: bool = False) -> TreeNode[dict]:
        node = self.nodes_by_key.get(key)
        if node is None:
            node = parent.add_leaf("", data=data) if leaf else parent.add("", data=data)
            self.nodes_by_key[key] = node
        return node

    @staticmethod
    def _case_label(case: dict[str, Any], worst: str | None, runs: list[dict[str, Any]]) -> Text:
        running = any(r["status"] == "running" for r in runs)
        t = Text("■ ", style=render.VERDICT_STYLE.get(worst or "", "grey50"))
        t.append(f"Case {case['id']}: ", style="bold")
        t.append(case["title"])
        if running:
            t.append(" ◐", style="cyan")
        return t

    @staticmethod
    def _subject_label(s: dict[str, Any], runs: list[dict[str, Any]], v: dict[str, Any]) -> Text:
        verdict = v["verdict"] if v["score"] is not None else None
        t = Text("● ", style=render.VERDICT_STYLE.get(verdict or "", "grey50"))
        t.append(s["name"])
        kind = {"image-classifier": "img", "causal-lm": "lm"}.get(s["kind"], s["kind"] or "?")
        t.append(f"  {kind}", style="grey62")
        if v["score"] is not None:
            t.append(f"  {v['score']}", style=render.BAND_STYLE.get(v["band"], ""))
        if any(r["status"] == "running" for r in runs):
            t.append(" ◐", style="cyan")
        return t

    @staticmethod
    def _run_label(r: dict[str, Any]) -> Text:
        t = render.status_text(r["status"])
        t.append(f" {r['probe']}")
        if r.get("verdict"):
            t.append(" ")
            t.append_text(render.verdict_text(r["verdict"]))
        elif r["status"] != "done":
            t.append(f" {r['status']}", style="grey62")
        if r.get("duration_s") is not None:
            t.append(f"  {render.fmt_duration(r['duration_s'])}", style="grey50")
        return t

    # -- navigation -------------------------------------------------------------------------
    def select_key(self, key: Key, expand: bool = True) -> bool:
        node = self.nodes_by_key.get(key)
        if node is None:
            return False
        parent = node.parent
        while parent is not None and expand:
            parent.expand()
            parent = parent.parent
        if expand and key[0] != "run":
            node.expand()
        self.call_after_refresh(self.move_cursor, node)
        self.move_cursor(node)
        return True

    def action_expand_node(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand:
            node.expand()

    def action_collapse_node(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.is_expanded and node.allow_expand:
            node.collapse()
        elif node.parent is not None and node.parent is not self.root:
            self.move_cursor(node.parent)
