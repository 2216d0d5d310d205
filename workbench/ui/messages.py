"""Messages the thread workers post to the app (workers never touch widgets)."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class JobMessage(Message):
    def __init__(self, job: Any) -> None:
        super().__init__()
        self.job = job


class JobStarted(JobMessage):
    pass


class JobProgress(JobMessage):
    """How far the job has come: a :class:`probes.context.ProgressEvent` (stage, counts, unit, rate)."""

    def __init__(self, job: Any, event: Any) -> None:
        super().__init__(job)
        self.event = event

    @property
    def stage(self) -> str:
        return str(self.event.stage)

    @property
    def text(self) -> str:
        return str(self.event.text())


class ProbeFinished(JobMessage):
    """One probe of a job ended (done / failed / cancelled), already recorded in the case file."""

    def __init__(self, job: Any, probe: str, status: str, error: str | None, run_id: int | None,
                 summary: str | None = None) -> None:
        super().__init__(job)
        self.probe, self.status, self.error, self.run_id, self.summary = probe, status, error, run_id, summary


class JobFinished(JobMessage):
    def __init__(self, job: Any, status: str, text: str, data: Any = None) -> None:
        super().__init__(job)
        self.status, self.text, self.data = status, text, data


class HuntPartial(JobMessage):
    def __init__(self, job: Any, ranking: list[dict[str, Any]]) -> None:
        super().__init__(job)
        self.ranking = ranking

