"""One static-scan finding in full: where it is, why, and the opcodes or config/graph node around it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class FindingScreen(ModalScreen[None]):
    """Shows :func:`probes.static_scan.disasm.finding_context` for a finding (read, never executed)."""

    BINDINGS = [Binding("escape,q,enter", "close", "Close", id="finding.close", tooltip="Close the finding")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide tall"):
            yield Static(Text(self.text), id="finding-text")

    def action_close(self) -> None:
        self.dismiss(None)
