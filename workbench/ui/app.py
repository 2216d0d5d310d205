"""The Trojan Workbench TUI: ``WorkbenchApp`` and ``run_app``.

Layout: the case tree on the left; on the right, tabs for scores, trigger norms,
the trigger hunt, data audits, notes and the run log; a job strip (progress bar,
queue) above the footer. Every long task runs in a thread worker (see
:mod:`workbench.ui.tasks`) that reports through messages; Esc cancels.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.lazy import Lazy
from textual.widgets import DataTable, Footer, Header, ProgressBar, Static, TabbedContent, TabPane, Tree
from textual.worker import Worker, WorkerState, get_current_worker

from casefiles import CaseFileBusy, CaseFileError, CaseStore
from vocabulary import file_path
from workbench.ui import messages as M
from workbench.ui.commands import WorkbenchCommands
from workbench.ui.model import data_paths_for, dynamic_called_for
from workbench.ui.tasks import RUNNERS, Job
from workbench.ui.widgets.audit import AuditPane
from workbench.ui.widgets.case_tree import CaseTree
from workbench.ui.widgets.hunt import HuntPane
from workbench.ui.widgets.norms import NormsPane
from workbench.ui.widgets.notes import NotesPane
from workbench.ui.widgets.pane import Pane, Selection
from workbench.ui.widgets.runlog import RunLogPane
from workbench.ui.widgets.scores import ScoresPane

TABS = [("scores", "Scores"), ("norms", "Trigger norms"), ("hunt", "Trigger hunt"), ("audit", "Data audit"),
        ("notes", "Notes"), ("log", "Run log")]


class WorkbenchApp(App[int]):
    CSS_PATH = "workbench.tcss"
    TITLE = "Trojan Workbench"
    COMMANDS = App.COMMANDS | {WorkbenchCommands}
    BINDINGS = [
        Binding("n", "new_case", "New case", id="case.new", tooltip="Open a new case in this case file"),
        Binding("a", "add_subject", "Add subject", id="subject.add",
                tooltip="Add a suspect model (file or folder) to the case; it is hashed, never loaded"),
        Binding("r", "run_probes", "Run probes", id="probes.run",
                tooltip="Pick probes that apply to the selected subject (or every subject of the case) and queue them"),
        Binding("t", "trigger_hunt", "Trigger hunt", id="hunt.start",
                tooltip="Start a live KL trigger hunt on the selected language model"),
        Binding("m", "remediate", "Remediate", id="subject.remediate", show=False,
                tooltip="Repair a copy of the selected flagged subject (unlearn its trigger), write it with an input "
                        "filter and before/after evidence"),
        Binding("e", "export", "Export", id="case.export", tooltip="Export the case: one HTML page, or a markdown folder with images"),
        Binding("v", "verify", "Verify", id="case.verify", tooltip="Verify the case's hash-chained audit trail"),
        Binding("escape", "cancel", "Cancel", id="jobs.cancel",
                tooltip="Cancel the running probe and drop the queued ones"),
        Binding("f1,question_mark", "help", "Help", id="help", tooltip="Keys and how to use the workbench"),
        Binding("f5", "reload", "Reload", id="reload", show=False, tooltip="Re-read the case file"),
        Binding("q", "quit", "Quit", id="quit", show=False, tooltip="Save notes, cancel jobs and quit"),
        *[Binding(str(i + 1), f"show_tab('{key}')", label, id=f"tab.{key}", show=False,
                  tooltip=f"Show the {label.lower()} pane") for i, (key, label) in enumerate(TABS)],
    ]
    # name, help, action: the command palette offers every one of them
    PALETTE = [
        ("New case", "Open a new case in this case file (n)", "new_case"),
        ("Add subject", "Add a model file or folder to the current case (a)", "add_subject"),
        ("Run probes", "Pick and queue probes for the selected subject(s) (r)", "run_probes"),
        ("Start trigger hunt", "Live KL trigger hunt on the selected language model (t)", "trigger_hunt"),
        *[(name, help_, f"hunt('{action}')") for name, help_, action in HuntPane.PALETTE],
        ("Remediate subject", "Repair a copy of the selected flagged subject, with filter and evidence (m)",
         "remediate"),
        ("Export case", "Write the case as an HTML page or a markdown folder with figures (e)", "export"),
        ("Verify audit trail", "Check the case's hash-chained audit trail (v)", "verify"),
        ("Cancel jobs", "Cancel the running probe and drop the queue (Esc)", "cancel"),
        ("Reload case file", "Re-read the case file (F5)", "reload"),
        ("Help", "Keys and how to use the workbench (F1)", "help"),
        *[(f"Show {label}", f"Switch to the {label.lower()} pane ({i + 1})", f"show_tab('{key}')")
          for i, (key, label) in enumerate(TABS)],
    ]

    def __init__(self, db_path: str | Path, *, case_id: int | None = None, subject_id: int | None = None,
                 probe_params: dict[str, Any] | None = None, kl_params: dict[str, Any] | None = None,
                 remediation_params: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """``probe_params`` / ``kl_params`` / ``remediation_params``: extra settings for every scan / trigger hunt /
        remediation (as ``--param``)."""
        super().__init__()
        self.remediation_params = dict(remediation_params or {})
        self.probe_params = dict(probe_params or {})
        self.kl_params = dict(kl_params or {})
        self.db_path = Path(db_path)
        self.last_export: Path | None = None  # the newest finished export (tests wait on it)
        self.store = CaseStore(self.db_path)
        self.sub_title = str(self.db_path)
        self.start_case, self.start_subject = case_id, subject_id
        self.sel = Selection()
        self.queue: deque[Job] = deque()
        self.current: Job | None = None
        self.finished_jobs: list[Job] = []
        self._stale: set[str] = set()  # ids of hidden panes to refresh when shown
        self.events: list[tuple[str, str]] = []  # this session's run-log events (the pane mounts lazily)
        self._stage: tuple[int, str] | None = None

    # -- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield CaseTree(id="tree")
            with TabbedContent(id="tabs", initial="tab-scores"):
                with TabPane("1 Scores", id="tab-scores"):
                    yield ScoresPane(id="scores", classes="pane")
                # hidden panes are mounted just after the first paint
                with TabPane("2 Trigger norms", id="tab-norms"):
                    yield Lazy(NormsPane(id="norms", classes="pane"))
                with TabPane("3 Trigger hunt", id="tab-hunt"):
                    yield Lazy(HuntPane(id="hunt", classes="pane"))
                with TabPane("4 Data audit", id="tab-audit"):
                    yield Lazy(AuditPane(id="audit", classes="pane"))
                with TabPane("5 Notes", id="tab-notes"):
                    yield Lazy(NotesPane(id="notes", classes="pane"))
                with TabPane("6 Run log", id="tab-log"):
                    yield Lazy(RunLogPane(id="log", classes="pane"))
        with Horizontal(id="jobstrip"):
            yield Static("idle", id="job-label")
            yield ProgressBar(id="job-progress", total=1, show_eta=False)
            yield Static("", id="queue-label")
        yield Footer()

    @property
    def tree(self) -> CaseTree:
        return self.query_one(CaseTree)

    def on_mount(self) -> None:
        self.tree.sync(self.store)
        self.tree.focus()
        self.log_event(f"opened {self.db_path}")
        self.call_after_refresh(self._initial_select)

    def _initial_select(self) -> None:
        cases = self.store.list_cases()
        target = self.start_case or (cases[-1]["id"] if cases else None)
        if self.start_subject is not None:
            self.select_key(("subject", self.start_subject))
        elif target is not None:
            self.select_key(("case", target))
        else:
            self.notify("No case yet: press n to open one (Ctrl+P lists every command).", title="Empty case file")

    # -- selection ----------------------------------------------------------------------------
    def select_key(self, key: tuple[str, int]) -> None:
        if self.tree.select_key(key):
            node = self.tree.nodes_by_key[key]
            if node.data:
                self.select(node.data)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        if event.node.data and event.node is event.control.cursor_node:  # skip stale highlights
            self.select(event.node.data)

    def select(self, data: dict[str, Any]) -> None:
        new = Selection.of(data)
        case_changed = new.case_id != self.sel.case_id
        self.sel = new
        self.refresh_panes(runlog=case_changed)

    def pane(self, cls: type) -> Any:
        """A pane if it is mounted (panes other than the first are mounted lazily, after the first paint)."""
        found = self.query(cls)
        return found.first() if found else None

    def panes(self) -> list[Pane]:
        return [w for w in self.query(".pane") if isinstance(w, Pane)]

    def refresh_panes(self, runlog: bool = True) -> None:
        """Refresh the visible pane now; hidden ones when they are shown (arrowing through a big tree stays fast)."""
        tabs = self.query(TabbedContent)
        if not tabs:  # shutting down
            return
        active = tabs.first().active
        for pane in self.panes():
            if pane.case_level and not runlog:
                continue
            if pane.always or f"tab-{pane.id}" == active:
                self.refresh_pane(pane)
                self._stale.discard(str(pane.id))
            else:
                self._stale.add(str(pane.id))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        key = (event.pane.id or "").removeprefix("tab-")
        if key in self._stale:
            self._stale.discard(key)
            pane = self.query(f"#{key}")
            if pane:
                self.refresh_pane(pane.first())

    def pane_mounted(self, pane: Any) -> None:
        """Called by each pane when it is mounted: fill it for the current selection."""
        if isinstance(pane, RunLogPane):
            for text, style in self.events:
                pane.event(text, style, stamp=False)
        self.refresh_pane(pane)

    def refresh_pane(self, pane: Any) -> None:
        """Let ``pane`` show the current selection; a busy or broken case file is a notification."""
        if self.sel.case_id is None:
            return
        try:
            pane.show(self.sel, self.store)
        except CaseFileBusy:
            self.notify("Case file busy (another process is writing); press F5 to retry.", severity="warning")
        except CaseFileError as exc:
            self.notify(str(exc), severity="error")

    def record(self, case_id: int, action: str, detail: dict[str, Any], *, what: str = "event") -> None:
        """An audit-trail row for an examiner's action in the UI (a warning when the file refuses it)."""
        try:
            self.store.record(case_id, action, detail)
        except CaseFileError as exc:
            self.notify(f"{what} not recorded: {exc}", severity="warning")

    def resync(self) -> None:
        try:
            self.tree.sync(self.store)
        except CaseFileBusy:
            return
        self.refresh_panes()

    # -- jobs -----------------------------------------------------------------------------------
    def enqueue(self, job: Job) -> None:
        self.queue.append(job)
        self.log_event(f"queued {job.title()}")
        self._pump()
        self._show_queue()

    def _pump(self) -> None:
        if self.current is None and self.queue:
            job = self.queue.popleft()
            job.status, job.started = "running", time.monotonic()
            self.current = job
            self._stage = None
            self.query_one("#job-label", Static).update(Text(f"◐ {job.title()}", style="cyan"))
            self.query_one("#job-progress", ProgressBar).update(total=None, progress=0)
            self.run_job(job)
        self._show_queue()

    @work(thread=True, exit_on_error=False, group="jobs")
    def run_job(self, job: Job) -> None:
        worker = get_current_worker()

        def emit(message: Any) -> None:
            if worker.is_cancelled:
                job.cancel.set()
            self.post_message(message)

        try:
            RUNNERS[job.kind](job, self.db_path, emit)
        except Exception as exc:  # noqa: BLE001 - the runners report their own errors; this is a last resort
            self.post_message(M.JobFinished(job, "failed", f"{type(exc).__name__}: {exc}"))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "jobs" and event.state == WorkerState.ERROR and self.current is not None:
            self.post_message(M.JobFinished(self.current, "failed", str(event.worker.error)))

    def _show_queue(self) -> None:
        n = len(self.queue)
        self.query_one("#queue-label", Static).update(Text(f"{n} queued" if n else "", style="grey62"))

    def on_job_progress(self, msg: M.JobProgress) -> None:
        if msg.job is not self.current:
            return
        ev = msg.event
        label = Text(f"◐ {msg.job.title()} ", style="cyan")
        label.append(msg.text[:80], style="")
        self.query_one("#job-label", Static).update(label)
        self.query_one("#job-progress", ProgressBar).update(total=max(ev.total, 1), progress=ev.done)
        if msg.job.kind in ("hunt", "confirm", "custom"):
            hunt = self.pane(HuntPane)
            if hunt is not None and msg.job.kind == "hunt" and hunt.subject_id == msg.job.subject_id:
                hunt.progress(ev)
        if self._stage != (msg.job.id, msg.stage):
            self._stage = (msg.job.id, msg.stage)
            self.log_event(f"{msg.job.title()}: {msg.stage} — {msg.text}", "grey70")
            self.resync()

    def on_probe_finished(self, msg: M.ProbeFinished) -> None:
        if msg.status == "done":
            self.log_event(f"{msg.probe} done: {msg.summary or ''}", "green")
        elif msg.status == "offered":
            self.log_event(f"{msg.probe} offered: {msg.error}", "cyan")
            self.notify(f"{msg.error}. Press r: {msg.probe} is ticked in the picker.", title=f"Next: {msg.probe}",
                        timeout=8)
        elif msg.status in ("skipped",):
            self.log_event(f"{msg.probe} skipped: {msg.error}", "grey62")
        else:
            self.log_event(f"{msg.probe} {msg.status}: {msg.error}", "bold red")
            self.notify(f"{msg.probe} {msg.status}: {msg.error}", title="Probe failed" if msg.status == "failed"
                        else "Probe stopped", severity="error" if msg.status in ("failed", "refused") else "warning")
        self.resync()

    def on_hunt_partial(self, msg: M.HuntPartial) -> None:
        hunt = self.pane(HuntPane)
        if hunt is not None and hunt.subject_id == msg.job.subject_id:
            hunt.update_ranking(msg.ranking)

    def on_job_finished(self, msg: M.JobFinished) -> None:
        job = msg.job
        if job.status in ("done", "failed", "cancelled"):
            return  # already reported (e.g. worker error after the runner's own message)
        job.status = msg.status
        self.finished_jobs.append(job)
        elapsed = time.monotonic() - (job.started or time.monotonic())
        style = {"done": "green", "cancelled": "yellow"}.get(msg.status, "bold red")
        self.log_event(f"{job.title()} {msg.status} in {elapsed:.1f}s: {msg.text}", style)
        hunt = self.query_one(HuntPane)  # mounted long before any job can finish
        if job.kind == "hunt" and hunt.subject_id == job.subject_id:
            hunt.finished(msg.status, msg.text)
        if job.kind == "confirm" and msg.status == "done" and hunt.subject_id == job.subject_id:
            hunt.show_comparison(msg.data)
        if job.kind == "custom" and msg.status == "done" and hunt.subject_id == job.subject_id:
            hunt.add_custom(msg.data)
        severity = {"done": "information", "cancelled": "warning"}.get(msg.status, "error")
        self.notify(msg.text[:300], title=f"{job.title()}: {msg.status}", severity=severity,
                    timeout=8 if severity == "error" else 5)
        if self.current is job:
            self.current = None
            self.query_one("#job-label", Static).update(Text(f"idle — last: {job.title()} {msg.status}",
                                                             style="grey62"))
            bar = self.query_one("#job-progress", ProgressBar)
            bar.update(total=1, progress=1 if msg.status == "done" else 0)
        self.tree.sync(self.store)
        if job.kind == "add-subject" and msg.status == "done" and msg.data:
            self.select_key(("subject", int(msg.data)))
        else:
            self.refresh_panes()
        self._pump()

    def action_cancel(self) -> None:
        if self.current is None and not self.queue:
            self.tree.focus()  # nothing to cancel: Esc goes back to the case tree
            return
        dropped = list(self.queue)
        self.queue.clear()
        for job in dropped:
            job.status = "cancelled"
            self.log_event(f"{job.title()} dropped from the queue", "yellow")
        if self.current is not None:
            self.current.cancel.set()
            self.workers.cancel_group(self, "jobs")
            self.log_event(f"cancelling {self.current.title()} …", "yellow")
            self.query_one("#job-label", Static).update(Text(f"cancelling {self.current.title()} …", style="yellow"))
        self.notify("Cancelling" + (f" ({len(dropped)} queued dropped)" if dropped else ""), timeout=3)
        self._show_queue()

    # -- actions --------------------------------------------------------------------------------
    def _need_case(self) -> int | None:
        if self.sel.case_id is None:
            self.notify("Open or select a case first (n creates one).", severity="warning")
        return self.sel.case_id

    def action_new_case(self) -> None:
        from workbench.ui.screens.dialogs import Field, PromptScreen

        def done(values: dict[str, str] | None) -> None:
            if not values:
                return
            try:
                cid = self.store.new_case(values["title"], values.get("description", ""))
            except CaseFileError as exc:
                self.notify(str(exc), severity="error")
                return
            self.tree.sync(self.store)
            self.select_key(("case", cid))
            self.log_event(f"case {cid} opened: {values['title']}")
            self.notify(f"Case {cid} opened. Press a to add a subject.")

        self.push_screen(PromptScreen("New case", [Field("title", "Title", placeholder="Vendor model 2026-11"),
                                                   Field("description", "Description (optional)")],
                                      submit="Create", required=("title",)), done)

    def action_add_subject(self) -> None:
        from workbench.ui.screens.dialogs import Field, PromptScreen

        case_id = self._need_case()
        if case_id is None:
            return

        def done(values: dict[str, str] | None) -> None:
            if values and values.get("path"):
                self.enqueue(Job("add-subject", case_id, path=values["path"],
                                 label=f"add {Path(values['path']).name}"))

        self.push_screen(PromptScreen(f"Add a subject to case {case_id}",
                                      [Field("path", "Model file or Hugging Face-style folder", value=str(Path.cwd()) + "/",
                                             path=True)],
                                      submit="Add", required=("path",),
                                      note="Tab completes the path. The files are hashed and recorded; nothing is loaded."),
                         done)

    def _subjects_for_action(self) -> list[dict[str, Any]]:
        if self.sel.subject_id is not None:
            return [self.store.get_subject(self.sel.subject_id)]
        if self.sel.case_id is not None:
            return self.store.list_subjects(self.sel.case_id)
        return []

    def action_run_probes(self) -> None:
        from probes import registry
        from workbench.ui.screens.dialogs import ProbePicker

        case_id = self._need_case()
        if case_id is None:
            return
        subjects = self._subjects_for_action()
        if not subjects:
            self.notify("This case has no subject yet: press a to add one.", severity="warning")
            return
        data = audit = None
        for s in subjects:
            d, a = data_paths_for(self.store.list_runs(subject_id=s["id"]))
            data, audit = data or d, audit or a
        wanted: set[str] = set()
        for s in subjects:
            kind = s["kind"] if s["kind"] in ("image-classifier", "causal-lm") else None
            wanted.update(registry.applicable(kind, have_data=bool(data), have_audit=bool(audit)))
            if dynamic_called_for(self.store.list_runs(subject_id=s["id"])):
                wanted.add("dynamic")  # opt-in, ticked because the static scan could not settle it
        wanted.discard("kl")  # a language model is hunted live (t)
        probes = [(p.name, p.help, p.name in wanted) for p in registry.PROBES.values()]
        title = (f"Run probes on {subjects[0]['name']}" if len(subjects) == 1
                 else f"Run probes on all {len(subjects)} subjects of case {case_id} (queued one after another)")

        def done(values: dict[str, Any] | None) -> None:
            if not values:
                return
            for s in subjects:
                chosen = [p for p in values["probes"] if not registry.get(p).kinds
                          or s["kind"] not in ("image-classifier", "causal-lm") or s["kind"] in registry.get(p).kinds]
                if not chosen:
                    self.log_event(f"{s['name']}: none of the chosen probes applies to a {s['kind']}", "grey62")
                    continue
                self.enqueue(Job("scan", case_id, s["id"], path=file_path(str(s["path"])), probes=chosen, data=values["data"],
                                 audit=values["audit"], params=dict(self.probe_params),
                                 label=f"{s['name']}: {', '.join(chosen)}"))

        self.push_screen(ProbePicker(title, probes, data or "", audit or ""), done)

    def action_trigger_hunt(self) -> None:
        from workbench.ui.screens.dialogs import Field, PromptScreen

        case_id = self._need_case()
        sid = self.sel.subject_id
        if case_id is None:
            return
        if sid is None:
            self.notify("Select a language-model subject in the case tree first.", severity="warning")
            return
        s = self.store.get_subject(sid)
        if s["kind"] not in ("causal-lm", "unknown", "", None):
            self.notify(f"{s['name']} is a {s['kind']}: the KL trigger hunt needs a causal language model.",
                        severity="warning")
            return

        def done(values: dict[str, str] | None) -> None:
            if values is None:
                return
            params: dict[str, Any] = dict(self.kl_params)
            if values.get("candidates"):
                params["candidates"] = values["candidates"]
            if values.get("max_sweep"):
                try:
                    params["max_sweep"] = int(values["max_sweep"])
                except ValueError:
                    self.notify("max sweep must be a whole number", severity="error")
                    return
            hunt = self.query_one(HuntPane)
            hunt.start(sid, s["name"], params)
            self.action_show_tab("hunt")
            self.enqueue(Job("hunt", case_id, sid, path=file_path(str(s["path"])), params=params, label=f"hunt {s['name']}"))

        self.push_screen(PromptScreen(f"Trigger hunt on {s['name']}",
                                      [Field("candidates", "Extra candidate triggers (comma-separated, optional)"),
                                       Field("max_sweep", "Vocabulary tokens to sweep (blank = all)")],
                                      submit="Start hunt",
                                      note="Every vocabulary token and the built-in suspicious strings are tried at "
                                           "three positions over 16 prompts; the best are extended to phrases and "
                                           "confirmed by generation. Esc cancels."), done)

    def action_hunt(self, what: str) -> None:
        """A trigger-hunt action from the palette: run it on the hunt pane (refreshed first if it is stale)."""
        hunt = self.query_one(HuntPane)
        if "hunt" in self._stale:
            self._stale.discard("hunt")
            self.refresh_pane(hunt)
        getattr(hunt, f"action_{what}")()

    def action_remediate(self) -> None:
        from workbench.ui.screens.dialogs import Field, PromptScreen

        case_id = self._need_case()
        sid = self.sel.subject_id
        if case_id is None:
            return
        if sid is None:
            self.notify("Select a flagged subject in the case tree first.", severity="warning")
            return
        s = self.store.get_subject(sid)
        runs = self.store.list_runs(subject_id=sid)
        lm = s["kind"] == "causal-lm"
        detector = "kl" if lm else "neural-cleanse"
        flagged = any(r["probe"] == detector and r["status"] == "done" and r.get("verdict") in ("backdoored",)
                      for r in runs)
        data, _ = data_paths_for(runs)
        out = str(Path(s["path"]).with_name(Path(s["path"]).name.split(".")[0] + "-repaired"))
        fields = [Field("out", "Output folder (new)", value=out, path=True)]
        if lm:
            fields.append(Field("trigger", "Trigger text (blank: the confirmed one of the hunt)"))
        else:
            fields += [Field("data", "Clean labelled data (.npz)", value=data or "", path=True),
                       Field("method", "Method: unlearn or prune", value="unlearn")]
        note = ("Detector result found: its trigger is removed." if flagged else
                f"No flagged {detector} result yet: the detector runs first (a clean result stops here).")

        def done(values: dict[str, str] | None) -> None:
            if not values:
                return
            params = dict(self.remediation_params)
            self.enqueue(Job("remediate", case_id, sid, path=file_path(str(s["path"])), data=values.get("data") or None,
                             params={"out": values["out"], "method": values.get("method") or "unlearn",
                                     "trigger": values.get("trigger") or None, "settings": params},
                             label=f"remediate {s['name']}"))

        self.push_screen(PromptScreen(f"Remediate {s['name']}", fields, submit="Repair",
                                      required=("out", "data") if not lm else ("out",),
                                      note=note + " Progress below; Esc cancels (nothing is written)."), done)

    def action_export(self) -> None:
        from workbench.ui.screens.dialogs import Field, PromptScreen

        case_id = self._need_case()
        if case_id is None:
            return

        def done(values: dict[str, str] | None) -> None:
            if not values:
                return
            fmt = (values.get("format") or "html").lower().removeprefix(".")
            fmt = {"markdown": "md", "htm": "html"}.get(fmt, fmt)
            if fmt not in ("html", "md"):
                self.notify(f"Export format must be html or md, not {fmt!r}", severity="error")
                return
            default = Path.cwd() / (f"case-{case_id}.html" if fmt == "html" else f"case-{case_id}-report")
            self.export_case(case_id, Path(values["path"]).expanduser() if values.get("path") else default, fmt)

        self.push_screen(PromptScreen(
            f"Export case {case_id}",
            [Field("format", "Format: html (one self-contained page) or md (folder: report.md + images/)",
                   value="html"),
             Field("path", "Write to (blank: case-N.html, or the folder case-N-report/)", path=True)],
            submit="Export", note="Figures are drawn once and kept in the case file; Enter exports."), done)

    def export_case(self, case_id: int, dest: Path, fmt: str = "md") -> None:
        """Export in a thread (the first export of a case draws its figures, a few seconds) on its own connection."""
        notes = self.pane(NotesPane)
        if notes is not None:
            notes.flush()
        self.notify(f"Exporting case {case_id} as {fmt} …", title="Export")
        self._export_worker(case_id, dest, fmt)

    @work(thread=True, exit_on_error=False, group="export")
    def _export_worker(self, case_id: int, dest: Path, fmt: str) -> None:
        from casefiles.report import export_case
        from workbench.ui.tasks import open_store

        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open_store(self.db_path) as store:
                outcome, _ = export_case(store, case_id, fmt, dest)
        except (OSError, CaseFileError) as exc:
            self.call_from_thread(self._export_failed, case_id, exc)
            return
        self.call_from_thread(self._export_done, case_id, dest, fmt, outcome)

    def _export_failed(self, case_id: int, exc: Exception) -> None:
        self.notify(f"Export failed: {getattr(exc, 'strerror', None) or exc}", severity="error")
        self.log_event(f"export of case {case_id} failed: {exc}", "bold red")

    def _export_done(self, case_id: int, dest: Path, fmt: str, outcome: Any) -> None:
        self.last_export = dest
        self.notify(f"Report written to {dest}", title="Exported")
        self.log_event(f"case {case_id} exported to {dest} ({fmt}, {outcome.size:,} bytes, "
                       f"{outcome.figures} figures, {outcome.seconds:.1f} s)", "green")

    def action_verify(self) -> None:
        case_id = self._need_case()
        if case_id is None:
            return
        try:
            report = self.store.verify(case_id)
        except CaseFileError as exc:
            self.notify(str(exc), severity="error")
            return
        if report.ok:
            self.notify(f"Audit trail intact: {report.rows} rows, head {report.head[:16]}…", title="Verified")
            self.log_event(f"case {case_id}: audit trail intact ({report.rows} rows, head {report.head})", "green")
        else:
            self.notify("\n".join(report.problems[:3]), title="Audit trail BROKEN", severity="error", timeout=15)
            for p in report.problems:
                self.log_event(f"case {case_id}: {p}", "bold red")
        self.last_verify = report

    def action_show_tab(self, key: str) -> None:
        self.query_one(TabbedContent).active = f"tab-{key}"
        if key == "hunt":
            self.query_one("#hunt-table", DataTable).focus()
        elif key == "notes":
            self.query_one(NotesPane).editor.focus()

    def action_reload(self) -> None:
        self.resync()
        self.notify("Case file re-read.", timeout=2)

    def action_help(self) -> None:
        from workbench.ui.screens.dialogs import HelpScreen

        self.push_screen(HelpScreen(help_text(self)))

    async def action_quit(self) -> None:
        if self.current is not None and not getattr(self, "_quit_armed", False):
            self._quit_armed = True
            self.set_timer(4, lambda: setattr(self, "_quit_armed", False))
            self.notify(f"{self.current.title()} is running: quit again to cancel it and leave.",
                        severity="warning", timeout=4)
            return
        self.shutdown()
        self.exit(0)

    def shutdown(self) -> None:
        """Keep the note, stop the probes (their runs are recorded as cancelled)."""
        notes = self.pane(NotesPane)
        if notes is not None:
            notes.flush()
        if self.current is not None:
            self.current.cancel.set()
        self.queue.clear()

    def on_unmount(self) -> None:
        self.shutdown()

    def log_event(self, text: str, style: str = "") -> None:
        from datetime import datetime

        text = f"{datetime.now():%H:%M:%S} {text}"
        self.events.append((text, style))
        pane = self.pane(RunLogPane)
        if pane is not None:
            pane.event(text, style, stamp=False)


def help_text(app: WorkbenchApp) -> str:
    rows = "\n".join(f"| `{b.key}` | {b.description} | {b.tooltip} |" for b in app.BINDINGS
                     if isinstance(b, Binding) and not b.key.isdigit())
    hunt = "\n".join(f"| `{b.key}` | {b.description} | {b.tooltip} |" for b in HuntPane.BINDINGS)
    return f"""# Trojan Workbench

Investigate suspect models offline. The **case tree** (left) holds cases → subjects → runs:
✔ done · ✘ failed · ⊘ cancelled · ⚠ interrupted · ◐ running; colours are verdicts
(green clean, yellow suspicious, red backdoored, magenta malicious).

Keys **1–6** switch panes: Scores, Trigger norms, Trigger hunt, Data audit, Notes, Run log.
**Ctrl+P** opens the command palette (every action, and jump to any case or subject).
Tab / Shift+Tab move focus between the tree and the pane.

| key | action | |
|---|---|---|
{rows}

In the trigger hunt pane:

| key | action | |
|---|---|---|
{hunt}

Notes are saved automatically as you type (per case, and per subject).
Probes run one after another in the background; Esc cancels the running one and the queue.
"""


def run_app(db_path: str | Path, **kwargs: Any) -> int | None:
    """Open the workbench on ``db_path`` (``case_id=`` / ``subject_id=`` select where to start)."""
    app = WorkbenchApp(db_path, **kwargs)
    try:
        return app.run()
    finally:
        app.store.close()
