"""How many threads torch may use: ``--threads`` / ``$WORKBENCH_THREADS``, else a default that holds under load.

Measured by ``benchmarks/threads.py`` on this project's 2-core machine (Neural Cleanse on a
16x16 digits CNN): quiet, 1 thread 3.7 s and 2 threads 2.3 s; with the other core busy, 1 thread
3.9 s and 2 threads 13.3 s, because torch's threads wait on each other for a core they do not get.
The default therefore counts only the cores that are idle when the command starts (from the
1-minute load average) and never more than the machine has: 3.8 s under that load. The load
average lags by up to a minute, so right after heavy work it may still choose fewer threads than
a quiet machine would allow (the cheaper mistake).
"""

from __future__ import annotations

import os

ENV = "WORKBENCH_THREADS"


def default_threads() -> int:
    """Cores that are idle now (cores minus the 1-minute load average, rounded), at least 1."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def resolve_threads(requested: int | None = None) -> int:
    """``requested``, else ``$WORKBENCH_THREADS``, else :func:`default_threads`."""
    if requested is None:
        env = os.environ.get(ENV, "").strip()
        if env:
            try:
                requested = int(env)
            except ValueError:
                raise ValueError(f"${ENV} must be a whole number of threads, got {env!r}") from None
    if requested is None:
        return default_threads()
    if requested < 1:
        raise ValueError(f"threads must be at least 1, got {requested}")
    return requested


def apply_threads(requested: int | None = None) -> int:
    """Set torch's intra-op thread count (imports torch); returns the count used."""
    import torch

    n = resolve_threads(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
