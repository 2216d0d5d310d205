"""Command palette provider: every workbench action, plus jumping to any case or subject."""

from __future__ import annotations

from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider


class WorkbenchCommands(Provider):
    def _commands(self) -> list[tuple[str, str, Any]]:
        app: Any = self.app
        out = [(name, help_, partial(app.run_action, action)) for name, help_, action in app.PALETTE]
        store = getattr(app, "store", None)
        if store is not None:
            try:
                for c in store.list_cases():
                    out.append((f"Open case {c['id']}: {c['title']}", f"{c['subjects']} subject(s), {c['runs']} run(s)",
                                partial(app.select_key, ("case", c["id"]))))
                    for s in store.list_subjects(c["id"]):
                        out.append((f"Open subject {s['name']} (case {c['id']})", f"{s['format']}, {s['kind']}",
                                    partial(app.select_key, ("subject", s["id"]))))
            except Exception:  # noqa: BLE001 - a busy file must not break the palette
                pass
        return out

    async def discover(self) -> Hits:
        for name, help_, cb in self._commands():
            yield DiscoveryHit(name, cb, help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_, cb in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), cb, text=name, help=help_)
