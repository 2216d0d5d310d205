"""What every pane of the right-hand tabs shares: it shows the current selection itself.

The app tells a pane *what* is selected (:class:`Selection`) and hands it the
case store; the pane decides what to read and draw (``show``), so the app
holds no per-pane logic. ``always`` panes (the notes) follow the selection even
when hidden; the others are refreshed when they become visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Selection:
    """What the case tree points at: a case, a subject of it, or a run of a subject."""

    type: str | None = None  # "case" | "subject" | "run"
    case_id: int | None = None
    subject_id: int | None = None
    run_id: int | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Selection:
        return cls(data["type"], data["case_id"], data.get("subject_id"),
                   data["id"] if data["type"] == "run" else None)


class Pane:
    """Mixin for a pane widget: ``show(selection, store)`` draws it for the selection."""

    always = False  # refresh even while hidden (the notes follow the selection at once)
    case_level = False  # depends only on the case (the run log): refresh when the case changes

    def show(self, selection: Selection, store: Any) -> None:  # pragma: no cover - every pane defines it
        raise NotImplementedError

    def tell_app_mounted(self) -> None:
        """Panes are mounted lazily (after the first paint): ask the app to fill this one in."""
        self.app.pane_mounted(self)  # type: ignore[attr-defined]


def column_widths(total: int, wanted: list[int], flexible: int, minimum: int = 6) -> list[int]:
    """Widths for a table of ``total`` cells: every column its ``wanted`` width, the ``flexible`` one whatever
    is left (at least ``minimum``); when even that does not fit, the flexible one shrinks to ``minimum``."""
    gaps = 2 * len(wanted)  # DataTable pads each cell by one on either side
    fixed = sum(w for i, w in enumerate(wanted) if i != flexible)
    out = list(wanted)
    out[flexible] = max(minimum, total - gaps - fixed)
    return out
