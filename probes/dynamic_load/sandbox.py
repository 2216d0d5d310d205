"""Parent side of the sealed loader: start the zygote, hand it jobs, read the JSON trace, enforce time.

The parent never unpickles anything. It talks to ``_child.py`` (the zygote, a
small fork server started with ``python -I -S -B`` and a clean environment)
over two pipes: job lines in on stdin, trace lines out on stdout, both JSON.
Each job runs in a fresh grandchild forked from the warm zygote (torch, numpy
and joblib already imported), so a load costs a fork rather than a Python and
torch start-up. A grandchild that hangs is killed (its own process group) at
the wall-clock timeout; one that crashes or exceeds its limits is reported by
the zygote; a zygote that dies is replaced on the next job.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes.errors import Cancelled, ProbeError

CHILD_SCRIPT = Path(__file__).with_name("_child.py")
# Imported once in the warm zygote before it reports ready (so a load costs a fork, not an import).
DEFAULT_PRELOAD = ("torch", "numpy", "joblib")
# Imported by the zygote (outside any hook) before the first job that may need them, then kept: the
# scikit-learn stack costs more start-up than torch's pickle path needs, so a torch file does not wait for it.
SKLEARN_PRELOAD = ("sklearn", "sklearn.base", "sklearn.linear_model", "sklearn.tree", "sklearn.ensemble",
                   "sklearn.pipeline", "sklearn.preprocessing", "sklearn.decomposition", "sklearn.cluster",
                   "sklearn.svm")


# Hugging Face side files (training_args.bin, pickled configs) import transformers: seconds per load otherwise.
HF_PRELOAD = ("transformers", "transformers.training_args", "transformers.configuration_utils")


def job_preload(path: str, loader: str) -> tuple[str, ...]:
    """What the zygote must have imported before forking for this file: decided from the file's bytes and
    loader alone, so the same file always meets the same warm image (and the same baseline)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8 << 20)
    except OSError:
        head = b""
    out: tuple[str, ...] = ()
    if loader in ("joblib", "pickle", "numpy") or b"sklearn" in head:
        out += SKLEARN_PRELOAD
    if b"transformers" in head:
        out += HF_PRELOAD
    return out


ZYGOTE_START_TIMEOUT_S = 120.0


def _stdlib_and_site_paths() -> list[str]:
    """Only the sys.path entries a load needs: the standard library and the venv's site-packages."""
    paths = sysconfig.get_paths()
    wanted = [paths.get("stdlib"), paths.get("platstdlib")]
    wanted.append(os.path.join(paths["stdlib"], "lib-dynload") if paths.get("stdlib") else None)
    wanted += [paths.get("purelib"), paths.get("platlib")]
    zipped = os.path.join(sys.base_prefix, "lib", f"python{sys.version_info[0]}{sys.version_info[1]}.zip")
    out: list[str] = []
    for p in [zipped, *wanted]:
        if p and p not in out and os.path.exists(p):
            out.append(os.path.realpath(p))
    return out


def _child_limits(as_bytes: int, fsize_bytes: int) -> None:
    """preexec_fn: runs in the forked child before exec. Only async-signal-safe-ish calls."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_bytes, fsize_bytes))
    resource.setrlimit(resource.RLIMIT_AS, (as_bytes, as_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@dataclass
class JobTrace:
    """Everything the parent learned about one load (plain data, JSON-able)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    done: dict[str, Any] | None = None
    exit: dict[str, Any] | None = None
    pid: int | None = None
    timed_out: bool = False
    zygote_died: bool = False
    forged_lines: int = 0
    hook_errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


class _Lines:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def read(self, timeout: float) -> dict | str | None:
        """One decoded line, None on timeout; raises EOFError when the zygote is gone."""
        while b"\n" not in self.buf:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
            timeout = 0.0 if b"\n" in self.buf else timeout
        raw, self.buf = self.buf.split(b"\n", 1)
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")[:300]


class Zygote:
    """One warm sealed child. Jobs run one at a time (callers hold ``lock``)."""

    def __init__(self, *, preload=DEFAULT_PRELOAD, netns: bool = True, readonly_fs: bool = True,
                 zygote_memory_mb: int = 16384) -> None:
        self.lock = threading.Lock()
        self.tmp = tempfile.mkdtemp(prefix="wb-dynamic-")
        os.chmod(self.tmp, 0o700)
        self.sys_path = _stdlib_and_site_paths()
        self.preload = list(preload)
        self._jobs = 0
        config = {"sys_path": self.sys_path, "tmp_dir": self.tmp, "preload": self.preload,
                  "netns": netns, "readonly_fs": readonly_fs, "tmpfs_mb": 64}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "HOME": os.path.join(self.tmp, "work"), "TMPDIR": os.path.join(self.tmp, "tmp"),
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self.err_path = self.tmp + ".stderr"
        as_bytes = zygote_memory_mb * 1024 * 1024
        fsize = 64 * 1024 * 1024
        t = time.perf_counter()
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(CHILD_SCRIPT), json.dumps(config)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=self.tmp, env=env,
                close_fds=True, start_new_session=True,
                preexec_fn=lambda: _child_limits(as_bytes, fsize),  # noqa: PLW0108
            )
        self.lines = _Lines(self.proc.stdout.fileno())
        deadline = time.monotonic() + ZYGOTE_START_TIMEOUT_S
        ready = None
        try:
            while ready is None:
                line = self.lines.read(deadline - time.monotonic())
                if line is None:
                    raise ProbeError("the sandbox child did not start in time")
                if isinstance(line, dict) and line.get("t") == "ready":
                    ready = line
        except EOFError:
            self.close()
            raise ProbeError(f"the sandbox child failed to start: {self._stderr_tail()}") from None
        except BaseException:
            self.close()
            raise
        self.isolation: dict[str, Any] = dict(ready.get("isolation") or {})
        self.isolation.update({
            "python_flags": "-I -S -B", "clean_env": sorted(env), "sys_path": self.sys_path,
            "audit_hook": True, "fresh_process_per_file": "fork of a warm zygote",
            "rlimits": ["RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_CORE=0", "RLIMIT_NOFILE"],
            "network": "network namespace + audit-hook refusal" if ready["isolation"].get("netns")
            else "audit-hook refusal only",
            "processes": ("own PID namespace + " if ready["isolation"].get("pidns") else "")
            + ("seccomp filter + " if ready["isolation"].get("seccomp_in_job") else "")
            + "kill/pidfd/pthread_kill replaced by refusing functions",
        })
        self.startup_s = time.perf_counter() - t
        self.pid = self.proc.pid

    # ----------------------------------------------------------------- helpers
    def _stderr_tail(self) -> str:
        try:
            return Path(self.err_path).read_text("utf-8", "replace")[-400:].strip().replace("\n", " | ")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:  # end of input first: the zygote exits and its PID-namespace parent reaps it (usage is kept)
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            os.unlink(self.err_path)
        except OSError:
            pass

    def roots(self, path: str) -> dict[str, list[str]]:
        real = os.path.realpath(path)
        trusted = list(self.sys_path)
        read = trusted + [real, os.path.dirname(real), "/proc/self", "/proc/thread-self", "/proc/cpuinfo",
                          "/proc/meminfo", "/proc/stat", "/proc/sys/vm", "/proc/sys/kernel/random", "/sys/devices/system/cpu",
                          "/sys/fs/cgroup", "/dev/null", "/dev/urandom",
                          "/dev/random", "/dev/shm", "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/share/zoneinfo",
                          "/etc/ld.so.cache", "/etc/localtime", os.path.realpath(self.tmp),
                          os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)]
        return {"trusted": trusted, "read": read, "write": [os.path.join(os.path.realpath(self.tmp), "tmp")]}

    # ----------------------------------------------------------------- one job
    # complexity: one request/response loop with the child: every exit path is a distinct failure
    def run_job(self, path: str, loader: str, *, timeout_s: float, cpu_s: float, memory_mb: int,  # noqa: C901 (see above)
                max_events: int = 4000, cancel: threading.Event | None = None,
                audit_hook: bool = True, preload: tuple[str, ...] | None = None) -> JobTrace:
        """Load ``path`` in a fresh grandchild. ``audit_hook=False`` exists only to test the OS layers alone."""
        self._jobs += 1
        nonce = secrets.token_hex(16)
        job = {"id": self._jobs, "nonce": nonce, "path": os.path.realpath(path), "loader": loader,
               "cpu_s": max(1, int(cpu_s)), "memory_mb": int(memory_mb), "max_events": int(max_events),
               "roots": self.roots(path), "audit_hook": bool(audit_hook),
               "preload": list(job_preload(path, loader) if preload is None else preload)}
        trace = JobTrace()
        t0 = time.monotonic()
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            trace.zygote_died = True
            return trace
        deadline = None
        killed_at = None
        cancelled = False
        while True:
            now = time.monotonic()
            if cancel is not None and cancel.is_set() and not cancelled:
                cancelled = True
                self._kill(trace.pid)
                killed_at = now
            if deadline is not None and now > deadline and not trace.timed_out and not cancelled:
                trace.timed_out = True
                self._kill(trace.pid)
                killed_at = now
            if killed_at is not None and now - killed_at > 10:
                trace.zygote_died = True  # the zygote did not reap: treat it as broken
                self.close()
                break
            if deadline is None and now - t0 > timeout_s + 30:
                trace.zygote_died = True
                self.close()
                break
            try:
                line = self.lines.read(0.05)
            except EOFError:
                trace.zygote_died = True
                break
            if line is None:
                continue
            if not isinstance(line, dict):
                trace.forged_lines += 1
                continue
            kind = line.get("t")
            if kind == "g":  # a grandchild line, relayed (and wrapped) by the zygote
                if line.get("job") != job["id"]:
                    continue  # a late line from an earlier, killed job
                try:
                    line = json.loads(line.get("l") or "")
                except ValueError:
                    trace.forged_lines += 1
                    continue
                if not isinstance(line, dict) or line.get("n") != nonce:
                    trace.forged_lines += 1
                    continue
                kind = line.get("t")
                if kind == "ev":
                    trace.events.append(line)
                elif kind == "done":
                    if trace.done is not None:
                        trace.forged_lines += 1
                    trace.done = line
                elif kind == "hook-error":
                    trace.hook_errors.append(str(line.get("err"))[:200])
                continue
            if kind == "forked" and line.get("job") == job["id"]:
                trace.pid = int(line["pid"])
                deadline = time.monotonic() + timeout_s
            elif kind == "exit" and line.get("job") == job["id"]:
                trace.exit = line
                break
            elif kind == "exit":
                continue  # an earlier job's exit (that job was abandoned)
            else:
                trace.forged_lines += 1
        trace.wall_s = time.monotonic() - t0
        if cancelled:
            raise Cancelled("cancelled")
        return trace

    def _kill(self, pid: int | None) -> None:
        if not pid:
            return
        for fn in (os.killpg, os.kill):
            try:
                fn(pid, signal.SIGKILL)
                return
            except OSError:
                continue


# --------------------------------------------------------------------- the pool (one warm zygote)

_POOL: dict[tuple, Zygote] = {}
_POOL_LOCK = threading.Lock()


def get_zygote(preload=DEFAULT_PRELOAD, netns: bool = True, readonly_fs: bool = True) -> Zygote:
    key = (tuple(preload), bool(netns), bool(readonly_fs))
    with _POOL_LOCK:
        z = _POOL.get(key)
        if z is None or not z.alive():
            if z is not None:
                z.close()
            z = Zygote(preload=preload, netns=netns, readonly_fs=readonly_fs)
            _POOL[key] = z
        return z


def warm_up(background: bool = True, **kwargs) -> threading.Thread | None:
    """Start the zygote ahead of the first file (e.g. as soon as the examiner picks the probe)."""
    if background:
        th = threading.Thread(target=lambda: _safe_get(**kwargs), name="dynamic-load-warmup", daemon=True)
        th.start()
        return th
    get_zygote(**kwargs)
    return None


def _safe_get(**kwargs) -> None:
    try:
        get_zygote(**kwargs)
    except Exception:  # noqa: BLE001  (reported on first real use)
        pass


def shutdown(*, netns: bool | None = None, readonly_fs: bool | None = None) -> None:
    """Stop the warm zygote(s); with ``netns``/``readonly_fs`` only the ones started with those settings."""
    with _POOL_LOCK:
        for key in list(_POOL):
            if (netns is None or key[1] == netns) and (readonly_fs is None or key[2] == readonly_fs):
                _POOL.pop(key).close()


atexit.register(shutdown)
