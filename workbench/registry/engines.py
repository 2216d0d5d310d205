"""Where registry tasks run: a local process pool (the default) or a Ray cluster.

Both engines take chunks of :class:`~workbench.registry.task.Task` objects (one round
trip for many small subjects) and hand back ``(task, outcome)`` pairs as chunks
finish; the driver never waits for the whole job.
A worker that dies has its task retried once; a second death records the task as
failed with the reason. The local engine runs retries alone on a separate worker,
so a task that kills its worker cannot take an innocent neighbour down twice.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections import deque
from typing import Any, Protocol

from workbench.registry.task import Task, run_tasks, worker_init

Done = tuple[Task, dict[str, Any]]
_DIED = "the worker process died while scanning it"


def _failed(task: Task, reason: str) -> dict[str, Any]:
    return {"key": task.key, "status": "failed", "results": [], "errors": [], "error": reason, "pid": None,
            "attempt": task.attempt, "duration_s": 0.0}


class Engine(Protocol):
    workers: int
    name: str

    @property
    def capacity(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    def submit(self, tasks: list[Task]) -> None: ...

    def poll(self, timeout: float) -> list[Done]: ...

    def close(self, *, cancel: bool = False) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def _serve(conn: Any, memory_mb: int | None, threads: int) -> None:
    """A local worker: chunks in, outcomes out. A reader thread drains the pipe so the driver never blocks on a send."""
    import queue
    import threading

    worker_init(memory_mb, threads)
    inbox: queue.SimpleQueue[list[Task] | None] = queue.SimpleQueue()

    def reader() -> None:
        while True:
            try:
                inbox.put(conn.recv())
            except (EOFError, OSError):
                inbox.put(None)
                return

    threading.Thread(target=reader, daemon=True).start()
    while (tasks := inbox.get()) is not None:
        try:
            conn.send(run_tasks(tasks))
        except (BrokenPipeError, OSError):
            return


class _Worker:
    """One worker process, its end of the pipe and the chunks it holds (processed in order)."""

    def __init__(self, ctx: Any, memory_mb: int | None, threads: int) -> None:
        conn, child = ctx.Pipe(duplex=True)
        self.conn: Any = conn
        self.proc = ctx.Process(target=_serve, args=(child, memory_mb, threads), daemon=True)
        self.proc.start()
        child.close()
        self.chunks: deque[tuple[list[Task], float]] = deque()

    def death(self) -> str:
        code = self.proc.exitcode
        if code is not None and code < 0:
            import signal as _signal

            try:
                return f"killed by {_signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"


class LocalEngine:
    """``workers`` local processes (forkserver: no inherited locks or open case file), fed over pipes.

    No helper threads in the driver: it sends chunks and waits on the pipes and the processes'
    sentinels itself, so a busy driver never starves the pool. A worker that dies is replaced; every
    subject it held gets one retry alone, on a separate one-at-a-time worker; a second death is final.
    """

    name = "local"
    depth = 3  # chunks held per worker: one running and two queued keep every worker busy

    def __init__(self, workers: int, *, memory_mb: int | None = 4096, threads: int = 1) -> None:
        self.workers = max(1, int(workers))
        self.memory_mb = memory_mb
        self.threads = threads
        methods = multiprocessing.get_all_start_methods()
        self._ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        self._pool = [self._spawn() for _ in range(self.workers)]
        self._retry: deque[Task] = deque()
        self._solo: _Worker | None = None
        self._out: list[Done] = []

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.memory_mb, self.threads)

    @property
    def capacity(self) -> int:
        return self.workers * self.depth

    @property
    def in_flight(self) -> int:
        held = sum(len(w.chunks) for w in self._pool)
        return held + len(self._retry) + (len(self._solo.chunks) if self._solo else 0)

    def submit(self, tasks: list[Task]) -> None:
        w = min(self._pool, key=lambda x: len(x.chunks))
        w.chunks.append((tasks, time.monotonic()))
        try:
            w.conn.send(tasks)
        except (BrokenPipeError, OSError):
            pass  # the worker is dead; poll sees its sentinel and retries what it held

    def _died(self, w: _Worker, solo: bool) -> None:
        why = w.death()
        for tasks, _t in w.chunks:
            for task in tasks:
                if solo or task.attempt >= 2:
                    self._out.append((task, _failed(task, f"{_DIED} ({why}); retried once, died again")))
                else:
                    task.attempt += 1
                    self._retry.append(task)
        w.chunks.clear()
        w.conn.close()
        if solo:
            self._solo = None
        else:
            self._pool[self._pool.index(w)] = self._spawn()

    def _feed_solo(self) -> None:
        if self._retry and (self._solo is None or not self._solo.chunks):
            if self._solo is None:
                self._solo = self._spawn()
            task = self._retry.popleft()
            self._solo.chunks.append(([task], time.monotonic()))
            try:
                self._solo.conn.send([task])
            except (BrokenPipeError, OSError):
                pass

    def poll(self, timeout: float) -> list[Done]:
        from multiprocessing.connection import wait as mp_wait

        self._feed_solo()
        workers = [(w, False) for w in self._pool if w.chunks] + ([(self._solo, True)] if self._solo and
                                                                  self._solo.chunks else [])
        if not workers:
            time.sleep(min(timeout, 0.05))
        else:
            handles: dict[Any, tuple[_Worker, bool]] = {}  # a pipe or a process sentinel -> its worker
            for w, solo in workers:
                handles[w.conn] = (w, solo)
                handles[w.proc.sentinel] = (w, solo)
            ready = mp_wait(list(handles), timeout=0 if self._out else timeout)
            dead: dict[int, tuple[_Worker, bool]] = {}
            for h in ready:
                w, solo = handles[h]
                if h is not w.proc.sentinel:
                    try:
                        while w.chunks and w.conn.poll():
                            outcomes = w.conn.recv()  # EOFError when the worker died: its chunks stay held
                            tasks, _t = w.chunks.popleft()
                            self._out.extend(zip(tasks, outcomes))
                    except (EOFError, OSError):
                        dead[id(w)] = (w, solo)
                elif not w.proc.is_alive():
                    dead[id(w)] = (w, solo)
            for w, solo in dead.values():
                w.proc.join(1)
                self._died(w, solo)
            self._overdue()
        self._feed_solo()
        out, self._out = self._out, []
        return out

    def _overdue(self) -> None:
        """A task stuck in C code past twice its limit (the in-worker alarm could not fire): kill its worker."""
        now = time.monotonic()
        for w in [*self._pool, *([self._solo] if self._solo else [])]:
            if w.chunks:
                tasks, t = w.chunks[0]
                if now - t > sum(2 * task.time_limit_s for task in tasks) * self.depth + 30:
                    w.proc.kill()

    def close(self, *, cancel: bool = False) -> None:
        workers = [*self._pool, *([self._solo] if self._solo else [])]
        for w in workers:
            try:
                w.conn.close()  # the worker's reader sees EOF and the worker ends after its current chunk
            except OSError:
                pass
            if cancel:
                w.proc.kill()
        for w in workers:
            w.proc.join(5 if not cancel else 1)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(1)

    def describe(self) -> dict[str, Any]:
        return {"engine": "local", "workers": self.workers, "start_method": self._ctx.get_start_method()}

    def worker_pids(self) -> list[int]:
        """The pids of the live worker processes (pool and retry worker), for diagnostics and tests."""
        return [w.proc.pid for w in [*self._pool, *([self._solo] if self._solo else [])] if w.proc.pid]


def _ray_env() -> None:
    """Before ``import ray``: no usage reporting; a cluster started here binds loopback only."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # node address = 127.0.0.1, not the LAN's


class RayEngine:
    """Ray tasks (``max_retries=1``: a worker death is retried once by Ray, then reported as failed).

    ``address`` joins an existing cluster (``ray.init(address=...)``; the workbench must be importable on
    its nodes and the registry readable at the same path); without one a local instance with ``workers``
    CPUs is started for the job on loopback, without the dashboard, and shut down after it.
    """

    name = "ray"

    def __init__(self, workers: int, *, address: str | None = None, memory_mb: int | None = 4096,
                 quiet: bool = True) -> None:
        _ray_env()
        import ray

        self.ray = ray
        self.workers = max(1, int(workers))
        self.memory_mb = memory_mb
        self.address = address
        self._started = False
        self._tmp: str | None = None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": not quiet, "logging_level": "ERROR",
                                      "configure_logging": True}
            if address:
                ray.init(address=address, **kwargs)
            else:
                self._tmp = tempfile.mkdtemp(prefix="wb-ray-")
                ray.init(num_cpus=self.workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                         _temp_dir=self._tmp, object_store_memory=96 << 20, **kwargs)
            self._started = True
        if address:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", self.workers)))
        self._remote = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(run_tasks)
        self._solo = ray.remote(num_cpus=1, max_retries=0, retry_exceptions=False)(run_tasks)
        self._refs: dict[Any, tuple[list[Task], float]] = {}

    @property
    def capacity(self) -> int:
        return self.workers * 2

    @property
    def in_flight(self) -> int:
        return len(self._refs)

    def submit(self, tasks: list[Task]) -> None:
        self._refs[self._remote.remote(tasks)] = (tasks, time.monotonic())

    def poll(self, timeout: float) -> list[Done]:
        ray = self.ray
        if not self._refs:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout, fetch_local=True)
        out: list[Done] = []
        for ref in ready:
            tasks, _t = self._refs.pop(ref)
            try:
                out.extend(zip(tasks, ray.get(ref)))
                continue
            except ray.exceptions.TaskCancelledError:
                reason = "time limit reached (cancelled)"
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.OutOfMemoryError) as exc:
                if len(tasks) > 1:  # the chunk's one retry by Ray died too: each subject gets one retry alone
                    for task in tasks:
                        task.attempt = 2
                        self._refs[self._solo.remote([task])] = ([task], time.monotonic())
                    continue
                reason = f"{_DIED}; retried once, died again ({type(exc).__name__})"
            except ray.exceptions.RayError as exc:
                reason = f"ray: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            out.extend((task, _failed(task, reason)) for task in tasks)
        now = time.monotonic()
        for ref, (tasks, t) in list(self._refs.items()):
            if now - t > sum(2 * task.time_limit_s for task in tasks) * (1 + self.capacity) + 30:
                ray.cancel(ref, force=True)
        return out

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            for ref in list(self._refs):
                self.ray.cancel(ref, force=True)
        if self._started:
            self.ray.shutdown()
            self._started = False
        if self._tmp:
            import shutil

            shutil.rmtree(self._tmp, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        return {"engine": "ray", "workers": self.workers, "address": self.address or "local (started for the job)"}


class LazyEngine:
    """An engine started only when the first task is submitted (a fully resumed job never starts Ray)."""

    def __init__(self, factory: Any, workers: int, name: str) -> None:
        self._factory, self.workers, self.name = factory, workers, name
        self._engine: Engine | None = None

    @property
    def started(self) -> Engine | None:
        return self._engine

    def _get(self) -> Engine:
        if self._engine is None:
            eng: Engine = self._factory()
            self._engine, self.workers = eng, eng.workers
            return eng
        return self._engine

    @property
    def capacity(self) -> int:
        return self._engine.capacity if self._engine else self.workers * 2

    @property
    def in_flight(self) -> int:
        return self._engine.in_flight if self._engine else 0

    def submit(self, tasks: list[Task]) -> None:
        self._get().submit(tasks)

    def poll(self, timeout: float) -> list[Done]:
        return self._engine.poll(timeout) if self._engine else []

    def close(self, *, cancel: bool = False) -> None:
        if self._engine is not None:
            self._engine.close(cancel=cancel)

    def describe(self) -> dict[str, Any]:
        return self._engine.describe() if self._engine else {"engine": self.name, "workers": self.workers,
                                                              "started": False}


def make_engine(name: str, workers: int, *, address: str | None = None, memory_mb: int | None = 4096) -> Engine:
    """The engine ``name`` (``local`` or ``ray``) with ``workers`` processes."""
    from probes.errors import ProbeError

    if name == "local":
        if address:
            raise ProbeError("--address is for --engine ray")
        return LocalEngine(workers, memory_mb=memory_mb)
    if name == "ray":
        try:
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise ImportError
        except ImportError:
            raise ProbeError("--engine ray needs Ray: pip install 'trojan-workbench[ray]'") from None
        return RayEngine(workers, address=address, memory_mb=memory_mb)
    raise ProbeError(f"unknown engine {name!r} (local or ray)")
