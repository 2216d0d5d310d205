"""Modal dialogs. Each returns its answer through ``dismiss`` (None when cancelled with Esc)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Input, Label, Markdown, SelectionList, Static
from textual.widgets.selection_list import Selection


class PathSuggester(Suggester):
    """Complete file-system paths as you type (Tab or → accepts)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return complete_path(value)


def path_matches(value: str, limit: int = 50) -> list[Path]:
    if not value:
        value = "./"
    expanded = os.path.expanduser(value)
    folder, prefix = (expanded, "") if expanded.endswith("/") else os.path.split(expanded)
    try:
        entries = sorted(Path(folder or ".").iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    out = [e for e in entries if e.name.startswith(prefix) and (prefix.startswith(".") or not e.name.startswith("."))]
    return out[:limit]


def complete_path(value: str) -> str | None:
    matches = path_matches(value)
    if not matches or not value:
        return None
    expanded = os.path.expanduser(value)
    prefix = "" if expanded.endswith("/") else os.path.basename(expanded)
    names = [m.name for m in matches]
    common = os.path.commonprefix(names)
    if len(matches) == 1:
        tail = names[0][len(prefix):] + ("/" if matches[0].is_dir() else "")
    else:
        tail = common[len(prefix):]
    return value + tail if tail else None


class Field:
    def __init__(self, name: str, label: str, value: str = "", placeholder: str = "", path: bool = False) -> None:
        self.name, self.label, self.value, self.placeholder, self.path = name, label, value, placeholder, path


class PromptScreen(ModalScreen[dict[str, str] | None]):
    """A small form: labelled inputs, Enter submits, Esc cancels; path inputs complete with Tab."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="dialog.cancel", tooltip="Close without doing anything"),
        Binding("tab", "complete", "Complete path", id="dialog.complete", show=False,
                tooltip="Accept the path completion (or move to the next field)"),
    ]

    def __init__(self, title: str, fields: list[Field], *, submit: str = "OK", note: str = "",
                 required: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.title_text, self.fields, self.submit_label, self.note = title, fields, submit, note
        self.required = required

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.title_text, style="bold"), classes="dialog-title")
            for f in self.fields:
                yield Label(f.label)
                yield Input(value=f.value, placeholder=f.placeholder, id=f"field-{f.name}",
                            suggester=PathSuggester() if f.path else None)
                if f.path:
                    yield Static("", id=f"matches-{f.name}", classes="matches")
            if self.note:
                yield Static(Text(self.note, style="grey62"))
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.submit_label, variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        first = self.query(Input).first()
        first.focus()
        first.cursor_position = len(first.value)

    def on_input_changed(self, event: Input.Changed) -> None:
        name = (event.input.id or "").removeprefix("field-")
        box = self.query(f"#matches-{name}")
        if box:
            matches = path_matches(event.value, 8)
            box.first(Static).update(Text("  ".join(m.name + ("/" if m.is_dir() else "") for m in matches),
                                          style="grey50"))

    def action_complete(self) -> None:
        focused = self.focused
        if isinstance(focused, Input) and focused.suggester is not None:
            done = complete_path(focused.value)
            if done:
                focused.value = done
                focused.cursor_position = len(done)
                return
        self.focus_next()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        values = {f.name: self.query_one(f"#field-{f.name}", Input).value.strip() for f in self.fields}
        missing = [f.label for f in self.fields if f.name in self.required and not values[f.name]]
        if missing:
            self.notify(f"{missing[0]} is required", severity="warning")
            return
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ProbePicker(ModalScreen[dict[str, Any] | None]):
    """Pick the probes to run (those that apply are preselected) and the data files they use."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="picker.cancel", tooltip="Close without running anything"),
        Binding("ctrl+r", "run", "Run", id="picker.run", tooltip="Queue the selected probes"),
        Binding("tab", "complete", "Complete path", id="picker.complete", show=False,
                tooltip="Accept the path completion (or move to the next field)"),
    ]

    def __init__(self, title: str, probes: list[tuple[str, str, bool]], data: str = "", audit: str = "") -> None:
        super().__init__()
        self.title_text, self.probes, self.data, self.audit = title, probes, data, audit

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(Text(self.title_text, style="bold"), classes="dialog-title")
            yield Label("Probes (space toggles; the ones that apply are selected)")
            yield SelectionList[str](*[Selection(f"{name:<22} {help_}", name, on) for name, help_, on in self.probes],
                                     id="picker-probes")
            yield Label("Clean labelled inputs (.npz x, y) for Neural Cleanse / STRIP / fingerprint (optional)")
            yield Input(value=self.data, placeholder="path/to/clean-test.npz", id="picker-data",
                        suggester=PathSuggester())
            yield Label("Suspect training set (.npz) for spectral / activation-clustering audits")
            yield Input(value=self.audit, placeholder="path/to/train.npz", id="picker-audit",
                        suggester=PathSuggester())
            with Horizontal(classes="dialog-buttons"):
                yield Button("Run (ctrl+r)", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#picker-probes", SelectionList).focus()

    def action_complete(self) -> None:
        focused = self.focused
        if isinstance(focused, Input):
            done = complete_path(focused.value)
            if done and done != focused.value:
                focused.value = done
                focused.cursor_position = len(done)
                return
        self.focus_next()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_run()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self.action_run()
        else:
            self.dismiss(None)

    def action_run(self) -> None:
        chosen = list(self.query_one("#picker-probes", SelectionList).selected)
        if not chosen:
            self.notify("Select at least one probe (space toggles)", severity="warning")
            return
        self.dismiss({"probes": chosen, "data": self.query_one("#picker-data", Input).value.strip() or None,
                      "audit": self.query_one("#picker-audit", Input).value.strip() or None})

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "close", "Close", id="help.close", tooltip="Close the help")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide tall"):
            yield Markdown(self.text)

    def action_close(self) -> None:
        self.dismiss(None)
