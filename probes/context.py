"""The run context: everything a probe gets besides its settings.

A probe is ``run(target, ctx) -> ProbeResult``. Its *settings* are
``ctx.params`` (declared on its :class:`~probes.registry.ProbeSpec`, resolved and
checked before the run). Everything else travels here: the examiner's data
files, earlier results it uses (declared as ``uses``), loaded auxiliary inputs
(a stored baseline), the cache directory, the cancel event, progress and a
sink for partial results. Progress is a small structured event, so a UI
renders counts and rates without parsing text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probes.errors import Cancelled

if TYPE_CHECKING:
    from probes.data import LabelledData


@dataclass(frozen=True)
class ProgressEvent:
    """How far a probe (or one stage of it) has come; ``rate`` is ``unit``s per second within the stage."""

    probe: str
    stage: str
    done: int
    total: int
    unit: str = "steps"
    rate: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float | None:
        return None if self.total <= 0 else min(1.0, max(0.0, self.done / self.total))

    def text(self) -> str:
        """One line for a terminal: ``stage: 120/400 steps (31/s) message``."""
        counts = f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}"
        rate = f" ({self.rate:,.0f}/s)" if self.rate else ""
        tail = f" {self.message}" if self.message else ""
        return f"{self.stage}: {counts}{rate}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {"probe": self.probe, "stage": self.stage, "done": self.done, "total": self.total, "unit": self.unit,
                "rate": self.rate, "message": self.message}


ProgressSink = Callable[[ProgressEvent], None]


@dataclass
class _StageClock:
    stage: str = ""
    t0: float = 0.0
    n0: int = 0


@dataclass
class RunContext:
    """What one probe run gets besides its settings (see the module docstring)."""

    probe: str
    params: dict[str, Any] = field(default_factory=dict)
    data: LabelledData | None = None
    audit: LabelledData | None = None
    earlier: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    on_progress: ProgressSink | None = None
    on_partial: Callable[[Any], None] | None = None
    _clock: _StageClock = field(default_factory=_StageClock, repr=False)

    @property
    def seed(self) -> int:
        return int(self.params.get("seed", 0))

    def check_cancel(self) -> None:
        """Raise :class:`Cancelled` if the examiner asked to stop."""
        if self.cancel.is_set():
            raise Cancelled("cancelled")

    def progress(self, done: int, total: int, message: str = "", *, stage: str | None = None,
                 unit: str = "steps") -> None:
        """Report progress; the rate is measured from the first report of the same stage."""
        if self.on_progress is None:
            return
        stage = stage or self.probe
        now = time.perf_counter()
        clock = self._clock
        if clock.stage != stage:
            clock.stage, clock.t0, clock.n0 = stage, now, done
        elapsed = now - clock.t0
        rate = (done - clock.n0) / elapsed if elapsed > 0.05 and done > clock.n0 else None
        self.on_progress(ProgressEvent(self.probe, stage, int(done), int(total), unit, rate, message))

    def partial(self, payload: Any) -> None:
        """Hand a partial result (e.g. the ranking so far) to whoever watches the run."""
        if self.on_partial is not None:
            self.on_partial(payload)

    def child(self, probe: str | None = None, params: dict[str, Any] | None = None, *,
              stage_prefix: str = "") -> RunContext:
        """A context for a probe run inside this one (e.g. STRIP's quick Neural Cleanse), sharing cancel.

        Progress of the inner run is reported under this run's probe name, its stages prefixed.
        """
        outer = self

        def relay(ev: ProgressEvent) -> None:
            if outer.on_progress is not None:
                outer.on_progress(replace(ev, probe=outer.probe, stage=f"{stage_prefix}{ev.stage}"))

        return RunContext(probe or self.probe, dict(params if params is not None else self.params), self.data,
                          self.audit, self.earlier, self.inputs, self.cache_dir, self.cancel,
                          relay if self.on_progress else None, None)

    def progress_callback(self, *, stage: str | None = None, unit: str = "steps") -> Callable[..., None]:
        """A plain ``(done, total, message)`` callback for helpers that take one."""
        return lambda done, total, message="": self.progress(done, total, message, stage=stage, unit=unit)


def context_for(probe: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> RunContext:
    """A context with ``params`` resolved and checked against the probe's declarations (tests, scripts)."""
    from probes import registry

    return RunContext(probe, registry.get(probe).resolve_params(params), **kwargs)
