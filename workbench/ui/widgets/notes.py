"""Notes: a markdown editor per case and per subject, autosaved with a short debounce, with a preview.

Every change restarts a short timer; when it fires the text goes to the case file
(``CaseStore.save_note``, an upsert of the working note). Switching target,
exporting or quitting flushes first, so no key press is ever needed to keep text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Static, TextArea

from workbench.ui.widgets.pane import Pane, Selection

AUTOSAVE_S = 0.5


class NoteEditor(TextArea):
    BINDINGS = [Binding("escape", "leave", "Leave editor", id="notes.leave",
                        tooltip="Leave the note editor (the note is already saved) and go back to the case tree")]

    def action_leave(self) -> None:
        self.app.query_one("#tree").focus()


class NotesPane(Pane, Vertical):
    always = True  # the note follows the selection at once: typing goes to what is selected

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target: tuple[int, int | None] | None = None  # (case_id, subject_id)
        self.dirty = False
        self._loading = False
        self._timer: Timer | None = None
        self.saves = 0
        self._saved_text = ""

    def compose(self) -> ComposeResult:
        yield Static(id="notes-head")
        with Horizontal(id="notes-body"):
            yield NoteEditor(id="notes-editor", soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
            with VerticalScroll(id="notes-preview-box"):
                from textual.widgets import Markdown  # markdown-it is imported only when notes are first shown

                yield Markdown(id="notes-preview")
        yield Static(id="notes-status")

    def on_mount(self) -> None:
        self.tell_app_mounted()

    @property
    def editor(self) -> TextArea:
        return self.query_one("#notes-editor", TextArea)

    def show(self, selection: Selection, store: Any) -> None:
        if selection.case_id is None:
            return
        if selection.subject_id is None:
            case = store.get_case(selection.case_id)
            self.set_target(store, selection.case_id, None, f"case {selection.case_id}: {case['title']}")
        else:
            s = store.get_subject(selection.subject_id)
            self.set_target(store, selection.case_id, selection.subject_id, f"subject {s['name']}")

    def set_target(self, store: Any, case_id: int | None, subject_id: int | None, label: str) -> None:
        """Show the note of a case (``subject_id`` None) or of a subject; saves the previous one first."""
        new = None if case_id is None else (case_id, subject_id)
        if new == self.target:
            return
        self.flush()
        self.target = new
        head = Text("Notes for ", style="grey70")
        head.append(label or "—", style="bold")
        head.append("   (markdown, autosaved as you type)", style="grey50")
        self.query_one("#notes-head", Static).update(head)
        body = ""
        if new is not None:
            notes = store.list_notes(case_id, subject_id=subject_id)
            body = notes[-1]["body"] if notes else ""
        self._loading = True
        self._saved_text = body
        self.editor.load_text(body)
        self.editor.disabled = new is None
        self._loading = False
        self.dirty = False
        self._status(f"{len(body)} characters" if body else "empty — start typing")
        self.call_after_refresh(self._render_preview)

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if self._loading or self.target is None or self.editor.text == self._saved_text:
            return
        self.dirty = True
        self._status("editing…")
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(AUTOSAVE_S, self._autosave)

    async def _autosave(self) -> None:
        self.flush()
        await self._render_preview()

    async def _render_preview(self) -> None:
        await self.query_one("#notes-preview").update(self.editor.text or "*(no note yet)*")

    def flush(self) -> bool:
        """Save now if there are unsaved changes; True when saved (or nothing to save)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if not self.dirty or self.target is None or self.editor.text == self._saved_text:
            self.dirty = False
            return True
        from casefiles.errors import CaseFileBusy, CaseFileError

        case_id, subject_id = self.target
        try:
            text = self.editor.text
            self.app.store.save_note(case_id, text, subject_id=subject_id)  # type: ignore[attr-defined]
        except CaseFileBusy:
            self._status("case file busy — retrying in 1 s", error=True)
            self.app.notify("Case file busy; the note will be saved in a second.", severity="warning")
            self._timer = self.set_timer(1.0, self._autosave)
            return False
        except CaseFileError as exc:
            self._status(f"NOT SAVED: {exc}", error=True)
            self.app.notify(f"Note not saved: {exc}", severity="error")
            return False
        self._saved_text = text
        self.dirty = False
        self.saves += 1
        self._status(f"saved at {datetime.now():%H:%M:%S}")
        return True

    def _status(self, text: str, error: bool = False) -> None:
        self.query_one("#notes-status", Static).update(Text(text, style="bold red" if error else "grey50"))
