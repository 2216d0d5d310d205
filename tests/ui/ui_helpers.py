"""Helpers for the UI tests: wait for jobs and conditions, read a Static's text."""

from __future__ import annotations


async def settle(app, pilot, rounds: int = 400) -> None:
    """Wait until the job queue is empty (workers awaited, not slept on)."""
    for _ in range(rounds):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if app.current is None and not app.queue:
            return
    raise AssertionError("jobs did not finish")


async def wait_for(pilot, cond, rounds: int = 300, step: float = 0.05) -> None:
    for _ in range(rounds):
        if cond():
            return
        await pilot.pause(step)
    raise AssertionError("condition not reached")


def plain(static, width: int = 200) -> str:
    """The text a Static shows (rich renderables included), without styles."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(static.content)
    return console.file.getvalue()
