"""Where registry tasks run: a local process pool (the default) or a Ray cluster.

Both engines take chunks of :class:`~workbench.registry.task.Task` objects (one round
trip for many small subjects) and hand back ``(task, outcome)`` pairs as chunks
finish; the driver never waits for the whole job.
A worker that dies has its task retried once; a second death records the task as
failed with the reason. The local engine runs retries alone in a fresh one-worker
pool, so a task that kills its worker cannot take an innocent neighbour down twice.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from workbench.registry.task import Task, run_task, run_tasks, worker_init

Done = tuple[Task, dict[str, Any]]
_DIED = "the worker process died while scanning it (killed, crashed or out of memory)"


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


class LocalEngine:
    """A ``ProcessPoolExecutor`` of ``workers`` processes (forkserver: no inherited locks or open case file)."""

    name = "local"

    def __init__(self, workers: int, *, memory_mb: int | None = 4096, threads: int = 1) -> None:
        self.workers = max(1, int(workers))
        self.memory_mb = memory_mb
        self.threads = threads
        methods = multiprocessing.get_all_start_methods()
        self._ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        self._pool = self._new_pool(self.workers)
        self._futures: dict[Future[list[dict[str, Any]]], tuple[list[Task], float]] = {}
        self._retry: deque[Task] = deque()
        self._solo: ProcessPoolExecutor | None = None
        self._solo_job: tuple[Future[dict[str, Any]], Task, float] | None = None

    def _new_pool(self, n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=n, mp_context=self._ctx, initializer=worker_init,
                                   initargs=(self.memory_mb, self.threads))

    @property
    def capacity(self) -> int:
        return self.workers * 3  # chunks: one running and two queued per worker keep every worker busy

    @property
    def in_flight(self) -> int:
        return len(self._futures) + len(self._retry) + (1 if self._solo_job else 0)

    def submit(self, tasks: list[Task]) -> None:
        try:
            fut = self._pool.submit(run_tasks, tasks)
        except BrokenProcessPool:
            self._recover()
            fut = self._pool.submit(run_tasks, tasks)
        self._futures[fut] = (tasks, time.monotonic())

    def _recover(self) -> None:
        """The pool broke (a worker died): every task in it gets its one retry, run alone."""
        for fut, (tasks, _t) in list(self._futures.items()):
            if fut.done() and not isinstance(fut.exception(), BrokenProcessPool):
                continue  # finished before the break; poll hands it back
            self._futures.pop(fut)
            for task in tasks:
                task.attempt += 1
                self._retry.append(task)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool(self.workers)

    def _overdue(self) -> None:
        """A task stuck in C code past twice its limit (the in-worker alarm could not fire): break the pool."""
        now = time.monotonic()
        for fut, (tasks, t) in self._futures.items():
            budget = sum(2 * task.time_limit_s for task in tasks) * (1 + self.capacity) + 30
            if not fut.done() and now - t > budget:
                for proc in list(getattr(self._pool, "_processes", {}).values()):  # no public way to kill one worker
                    proc.kill()
                return

    def _poll_solo(self, out: list[Done]) -> None:
        if self._solo_job is None and self._retry:
            task = self._retry.popleft()
            if self._solo is None:
                self._solo = self._new_pool(1)
            try:
                fut = self._solo.submit(run_task, task)
            except BrokenProcessPool:
                self._solo = self._new_pool(1)
                fut = self._solo.submit(run_task, task)
            self._solo_job = (fut, task, time.monotonic())
        if self._solo_job is None:
            return
        fut, task, t = self._solo_job
        if not fut.done():
            if time.monotonic() - t > 2 * task.time_limit_s + 30 and self._solo is not None:
                for proc in list(getattr(self._solo, "_processes", {}).values()):
                    proc.kill()
            return
        self._solo_job = None
        try:
            out.append((task, fut.result()))
        except BrokenProcessPool:
            self._solo.shutdown(wait=False, cancel_futures=True) if self._solo else None
            self._solo = None
            out.append((task, _failed(task, f"{_DIED}; retried once, died again")))
        except Exception as exc:  # an unpicklable result or the like: this subject fails, the job goes on
            out.append((task, _failed(task, f"worker error: {exc}")))

    def poll(self, timeout: float) -> list[Done]:
        out: list[Done] = []
        self._poll_solo(out)
        if self._futures:
            done, _ = wait(list(self._futures), timeout=timeout if not out else 0, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                if isinstance(fut.exception(), BrokenProcessPool):
                    broken = True
                    continue
                tasks, _t = self._futures.pop(fut)
                exc = fut.exception()
                if exc is None:
                    out.extend(zip(tasks, fut.result()))
                else:
                    out.extend((task, _failed(task, f"worker error: {exc}")) for task in tasks)
            if broken:
                self._recover()
            else:
                self._overdue()
        elif not out:
            time.sleep(min(timeout, 0.05))
        self._poll_solo(out)
        return out

    def close(self, *, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
        if self._solo is not None:
            self._solo.shutdown(wait=not cancel, cancel_futures=cancel)

    def describe(self) -> dict[str, Any]:
        return {"engine": "local", "workers": self.workers, "start_method": self._ctx.get_start_method()}

    def worker_pids(self) -> list[int]:
        """The pids of the live worker processes (pool and retry pool), for diagnostics and tests."""
        pools = [p for p in (self._pool, self._solo) if p is not None]
        return [pid for p in pools for pid in list(getattr(p, "_processes", None) or {})]


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
