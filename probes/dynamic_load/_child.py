"""Sealed loader: runs as ``python -I -S -B _child.py CONFIG_JSON`` with a clean environment.

This file is a standalone script (it imports nothing from the project). It is
the *zygote* of a tiny fork server:

1. At start-up, before importing anything heavy, it seals itself: a new network
   namespace (only a downed loopback), a new mount namespace in which every
   mount is remounted read-only and a private tmpfs is the only writable place,
   ``PR_SET_NO_NEW_PRIVS``. Each step is best-effort and reported.
2. It imports the libraries a model load needs (torch, numpy, joblib) once, and
   then waits for jobs on stdin (one JSON line each).
3. For each job it forks a fresh grandchild, which: becomes its own process
   group, lowers its resource limits (CPU seconds, address space), routes its
   stdout/stderr to a log, installs the audit hook, and *then* loads the
   suspect file with the full unpickler. Every audit event is written at once
   to the trace channel as one JSON line carrying the job's nonce; the
   dangerous ones are refused by raising inside the hook, so the payload is
   recorded and blocked rather than run.
4. The zygote reaps the grandchild and reports its exit status and usage.

Nothing is ever pickled back: the trace is JSON lines on fd 1 of the zygote.
"""

import json
import os
import sys
import time

CONFIG = json.loads(sys.argv[1])
sys.path[:] = list(CONFIG["sys_path"])
TRACE_FD = os.dup(1)  # the channel to the parent; fd 1 itself is re-pointed per job
MAX_LINE = 3800  # below PIPE_BUF so lines from the zygote and a grandchild never interleave


def _line(obj):
    data = json.dumps(obj, separators=(",", ":"), default=str)
    if len(data) > MAX_LINE:
        # Trim the argument list rather than drop the event.
        obj = dict(obj)
        obj["a"] = [str(x)[:200] for x in (obj.get("a") or [])][:6]
        data = json.dumps(obj, separators=(",", ":"), default=str)[:MAX_LINE]
        if not data.endswith("}"):
            data = json.dumps({k: obj[k] for k in obj if k != "a"} | {"a": ["<trimmed>"]}, default=str)
    return (data + "\n").encode("utf-8", "replace")


def send(obj):
    data = _line(obj)
    while data:
        n = os.write(TRACE_FD, data)
        data = data[n:]


# --------------------------------------------------------------------------- sealing

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38


PR_CAPBSET_DROP = 24
PR_SET_PDEATHSIG = 1
CLONE_NEWPID = 0x20000000
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
LIBC = []  # the libc handle, kept for the grandchildren's PR_SET_PDEATHSIG (set before any hook)


def drop_capabilities(libc, ctypes):
    """Empty the bounding set and the effective/permitted/inheritable sets (we may run as root).

    Without CAP_SYS_ADMIN the grandchild cannot remount the file system writable or leave the network
    namespace; without CAP_SYS_RESOURCE it cannot raise its hard resource limits; with the bounding
    set empty even an exec of a root-owned binary gains nothing.
    """
    try:
        for cap in range(64):
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        hdr = Header(0x20080522, 0)
        data = (Data * 2)()
        if libc.capset(ctypes.byref(hdr), data) != 0:
            return False
        with open("/proc/self/status") as fh:
            caps = {line.split(":")[0]: int(line.split()[1], 16) for line in fh if line.startswith("Cap")}
        return caps.get("CapEff", 1) == 0 and caps.get("CapPrm", 1) == 0 and caps.get("CapBnd", 1) == 0
    except Exception:  # noqa: BLE001
        return False


def enter_pid_namespace(libc, ctypes, iso):
    """Give the zygote (and so every grandchild) its own PID namespace, where no host process has a PID.

    ``unshare(CLONE_NEWPID)`` moves only the caller's future children, so this process forks once: the
    child, PID 1 of the new namespace, carries on as the zygote; this process only waits for it and exits
    with its status (the parent's kill of the process group still reaches both). A payload's
    ``kill``/``pidfd_open`` of a host PID then finds nothing (ESRCH).
    """
    if libc.unshare(CLONE_NEWPID) != 0:
        iso["pidns_error"] = os.strerror(ctypes.get_errno())
        return
    pid = os.fork()
    if pid:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    iso["pidns"] = os.getpid() == 1


# Syscalls a load never needs that reach other processes: refused outright (EPERM) in every grandchild.
_SECCOMP_TABLES = {
    # arch: (AUDIT_ARCH, {name: nr} refused, {name: nr} allowed only when aimed at the caller itself)
    "x86_64": (0xC000003E,
               {"ptrace": 101, "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438,
                "process_vm_readv": 310, "process_vm_writev": 311, "rt_tgsigqueueinfo": 297, "setns": 308,
                "unshare": 272, "kcmp": 312, "process_madvise": 440},
               {"kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129}),
    "aarch64": (0xC00000B7,
                {"ptrace": 117, "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438,
                 "process_vm_readv": 270, "process_vm_writev": 271, "rt_tgsigqueueinfo": 240, "setns": 268,
                 "unshare": 97, "kcmp": 272, "process_madvise": 440},
                {"kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138}),
}


def seccomp_filter_bytes(own_pid):
    """A classic-BPF seccomp program (list of (code, jt, jf, k)): signals only to ``own_pid``, no pidfd,
    ptrace, cross-process memory or namespace calls; a foreign syscall ABI (i386/x32 on x86_64) gets EPERM."""
    arch = os.uname().machine
    if arch not in _SECCOMP_TABLES:
        return None
    audit_arch, refused, self_only = _SECCOMP_TABLES[arch]
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    deny_nrs, self_nrs = sorted(refused.values()), sorted(self_only.values())
    prog = [(ld_abs, 0, 0, 4)]  # seccomp_data.arch
    # layout after the arch check: [ld nr][x32 check][deny checks][self checks][ret allow][self: ld a0][jeq][allow][deny]
    n_checks = len(deny_nrs) + len(self_nrs)
    body = 1 + 1 + n_checks + 1  # instructions between the arch jump and "self: ld a0"
    prog.append((jeq, 0, body + 3, audit_arch))  # wrong arch -> deny (the last instruction)
    prog.append((ld_abs, 0, 0, 0))  # seccomp_data.nr
    rest = 1 + n_checks + 1 + 3  # from the next instruction to deny
    prog.append((jge, rest - 1, 0, 0x40000000))  # the x32 ABI's syscall numbers
    for i, nr in enumerate(deny_nrs):
        to_deny = (n_checks - i - 1) + 1 + 3
        prog.append((jeq, to_deny, 0, nr))
    for i, nr in enumerate(self_nrs):
        to_self = (len(self_nrs) - i - 1) + 1
        prog.append((jeq, to_self, 0, nr))
    prog.append((ret, 0, 0, allow))
    prog.append((ld_abs, 0, 0, 16))  # args[0], low 32 bits (pid_t)
    prog.append((jeq, 0, 1, own_pid & 0xFFFFFFFF))
    prog.append((ret, 0, 0, allow))
    prog.append((ret, 0, 0, deny))
    return prog


def install_seccomp(libc, ctypes, own_pid):
    """Install the filter on this (single-threaded) process; threads started later inherit it."""
    prog = seccomp_filter_bytes(own_pid)
    if prog is None:
        return f"no syscall table for {os.uname().machine}"

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]

    arr = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    fprog = SockFprog(len(prog), ctypes.cast(arr, ctypes.POINTER(SockFilter)))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        return os.strerror(ctypes.get_errno())
    return None


def seccomp_self_test():
    """Fork once, install the filter, check a signal to the parent and a pidfd are refused and one to itself
    is not. Returns (what it refuses, None) or (None, why not)."""
    libc = LIBC[0]
    import ctypes

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        msg = b"ok"
        try:
            err = install_seccomp(libc, ctypes, os.getpid())
            if err:
                msg = err.encode()
            else:
                os.kill(os.getpid(), 0)
                for probe in (lambda: os.kill(os.getppid(), 0), lambda: os.pidfd_open(os.getppid())):
                    try:
                        probe()
                        msg = b"a signal/pidfd to another process was allowed"
                    except PermissionError:
                        pass
        except BaseException as exc:  # noqa: BLE001
            msg = repr(exc).encode()[:200]
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    out = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    if out == b"ok":
        return "kill/tkill/tgkill/rt_sigqueueinfo to another process, ptrace, pidfd_*, process_vm_*, setns, unshare", None
    return None, out.decode("utf-8", "replace") or "the self-test child died"


def seal(tmp_dir):  # noqa: C901 - the sandbox's sealing steps in order; a standalone script, kept flat on purpose
    """Best-effort OS isolation of this process (and so of every grandchild)."""
    iso = {"netns": False, "mountns_readonly": False, "no_new_privs": False, "uid": os.getuid()}
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    except Exception as exc:  # noqa: BLE001
        iso["error"] = f"ctypes unavailable: {exc}"
        return iso
    iso["pidns"] = False
    if CONFIG.get("pidns", True):
        enter_pid_namespace(libc, ctypes, iso)
    if CONFIG.get("netns", True):
        if libc.unshare(CLONE_NEWNET) == 0:
            iso["netns"] = True
        else:
            iso["netns_error"] = os.strerror(ctypes.get_errno())
    if CONFIG.get("readonly_fs", True):
        try:
            if libc.unshare(CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
            if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "make / private")
            # A private tmpfs: the only place a grandchild may write (e.g. torch's legacy tar extraction).
            if libc.mount(b"tmpfs", tmp_dir.encode(), b"tmpfs", MS_NOSUID | MS_NODEV,
                          f"size={int(CONFIG.get('tmpfs_mb', 64))}m,mode=0700".encode()) != 0:
                raise OSError(ctypes.get_errno(), "tmpfs")
            points = []
            with open("/proc/self/mountinfo", "rb") as fh:
                for row in fh:
                    parts = row.split()
                    mp = parts[4].decode("utf-8", "replace").replace("\\040", " ")
                    points.append(mp)
            failed = []
            for mp in sorted(set(points), key=len):
                if mp == tmp_dir:
                    continue
                flags = MS_BIND | MS_REMOUNT | MS_RDONLY
                if libc.mount(None, mp.encode(), None, flags, None) != 0:
                    # Keep the flags a mount already has (nosuid/nodev/noexec) and retry.
                    st = os.statvfs(mp)
                    extra = (MS_NOSUID if st.f_flag & os.ST_NOSUID else 0) | (MS_NODEV if st.f_flag & os.ST_NODEV else 0) \
                        | (8 if st.f_flag & os.ST_NOEXEC else 0)
                    if libc.mount(None, mp.encode(), None, flags | extra, None) != 0:
                        failed.append(mp)
            iso["mountns_readonly"] = "/" not in failed
            if failed:
                iso["writable_mounts_left"] = failed[:20]
        except OSError as exc:
            iso["mountns_error"] = str(exc)
    LIBC.append(libc)
    try:
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
            iso["no_new_privs"] = True
    except Exception:  # noqa: BLE001
        pass
    if CONFIG.get("drop_caps", True):
        iso["capabilities_dropped"] = drop_capabilities(libc, ctypes)
    if CONFIG.get("seccomp", True):
        iso["seccomp_in_job"], err = seccomp_self_test()
        if err:
            iso["seccomp_error"] = err
    try:
        import socket

        iso["interfaces"] = sorted(name for _, name in socket.if_nameindex())
    except OSError:
        iso["interfaces"] = []
    return iso


# --------------------------------------------------------------------------- the audit hook

SPAWN = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.startfile",
         "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "os.setuid", "os.setgid"}
FILE_OPS = {"os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.chmod", "os.chown", "os.link", "os.symlink",
            "os.truncate", "os.utime", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "os.lockf",
            "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.copytree", "shutil.rmtree",
            "shutil.move", "shutil.chown", "shutil.make_archive", "shutil.unpack_archive",
            "tempfile.mkstemp", "tempfile.mkdtemp", "os.mkfifo", "os.mknod"}
TAMPER = {"sys.addaudithook", "sys.settrace", "sys.setprofile", "gc.get_objects", "gc.get_referrers",
          "gc.get_referents", "sys._current_frames", "resource.setrlimit", "resource.prlimit",
          "sys.remote_exec", "cpython.remove_remote_exec", "os.chroot", "os.setns", "os.unshare"}
NETWORK_PREFIXES = ("socket.", "urllib.", "http.client.", "ftplib.", "smtplib.", "poplib.", "imaplib.",
                    "nntplib.", "telnetlib.", "webbrowser.", "ssl.")
# Frequent and harmless: counted, not streamed.
QUIET = {"builtins.id", "object.__getattr__", "sys._getframe", "sys._getframemodulename", "os.listdir",
         "os.scandir", "marshal.loads", "object.__setattr__", "object.__delattr__", "time.sleep",
         "array.__new__", "os.putenv", "os.unsetenv", "code.__new__", "function.__new__", "pickle.find_class",
         "import", "open", "exec", "compile", "glob.glob", "glob.glob/2", "os.walk", "fcntl.ioctl", "fcntl.fcntl",
         "mmap.__new__", "os.chdir", "sqlite3.connect"}

# File operations whose audit arguments end with a dir_fd (path is relative to it).
DIR_FD_EVENTS = {"os.remove", "os.mkdir", "os.rmdir", "os.chmod", "os.chown", "os.utime", "os.mkfifo", "os.mknod",
                 "os.setxattr", "os.removexattr"}
# Modules whose functions reach process creation or raw memory without raising an audit event.
NATIVE_ESCAPES = {"_posixsubprocess", "_ctypes", "ctypes", "_winapi", "_xxsubinterpreters", "_testcapi", "_testinternalcapi"}

CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".so", ".pyd", ".pth")

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _short(value, n=240):
    try:
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value[:n]).decode("latin-1")
        elif type(value).__name__ == "code":
            text = f"<code {value.co_name} from {value.co_filename}>"
        else:
            text = str(value)
    except Exception:  # noqa: BLE001
        text = "<unprintable>"
    return text if len(text) <= n else text[:n] + "..."


def make_hook(nonce, job, roots):  # noqa: C901 - the audit hook and its rules live in one closure so the hot path makes no extra calls
    """Build the hook. State lives in this closure (no module globals a payload could rebind)."""
    import pickle as _pickle

    trusted = tuple(roots["trusted"])
    read_ok = tuple(roots["read"])
    write_ok = tuple(roots["write"])
    u = _pickle._Unpickler
    reduce_codes = frozenset(f.__code__ for f in (u.load_reduce, u.load_newobj, u.load_newobj_ex, u.load_obj,
                                                  u.load_inst, u.load_build, u._instantiate, u.load_setitem,
                                                  u.load_setitems, u.load_append, u.load_appends, u.load_additems)
                             if hasattr(f, "__code__"))
    own_codes = set()
    harness_names = frozenset(vars(sys.modules["__main__"]))
    harness_modules = frozenset({"_child", "probes.dynamic_load._child", "probes.dynamic_load"})
    counts = {}
    state = {"busy": False, "refused": 0, "streamed": 0}
    limit_stream = int(job.get("max_events", 4000))
    getframe = sys._getframe
    realpath = os.path.realpath
    from _thread import get_ident
    read_ok = read_ok + (f"/proc/{os.getpid()}",)

    def under(path, prefixes):
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)

    def norm(path, dir_fd=None):
        if isinstance(path, int):
            return None
        try:
            path = os.fsdecode(path)
        except Exception:  # noqa: BLE001
            return str(path)
        if not os.path.isabs(path):
            base = None
            if isinstance(dir_fd, int) and not isinstance(dir_fd, bool) and dir_fd >= 0:
                try:
                    base = os.readlink(f"/proc/self/fd/{dir_fd}")
                except OSError:
                    base = None
            path = os.path.join(base or os.getcwd(), path)
        try:
            return realpath(path)
        except Exception:  # noqa: BLE001
            return os.path.normpath(path)

    def context():
        """(caller 'file:function', directly called by the unpickler?, unpickler active?, inside import?)"""
        f = getframe(3)
        while f is not None and f.f_code in own_codes:
            f = f.f_back
        caller = f"{f.f_code.co_filename}:{f.f_code.co_name}" if f is not None else "?"
        direct = f is not None and f.f_code in reduce_codes
        active, importing = direct, False
        g, depth = f, 0
        while g is not None and depth < 200:
            code = g.f_code
            if code in reduce_codes:
                active = True
            if code.co_filename.startswith("<frozen importlib"):
                importing = True
            g, depth = g.f_back, depth + 1
        return caller, direct, active, importing

    def decide(event, args):  # noqa: C901 - the audit-event rule table (one branch per event family), inside the hook's closure
        """Return (refusal reason or None, extra info dict)."""
        if event == "pickle.find_class":
            module, name = (list(args) + ["", ""])[:2]
            if module in harness_modules or (module == "__main__" and name in harness_names):
                return "reaches into the sandbox harness", {}
            if module.split(".")[0] in NATIVE_ESCAPES:
                return "native escape hatch that bypasses the audit events", {}
            return None, {}
        if event == "sys._getframe":
            return "frame inspection from the pickle stream", {}
        if event in SPAWN or event.startswith("os.exec") or event.startswith("os.spawn"):
            return "process spawn / signal", {}
        if event.startswith(NETWORK_PREFIXES):
            return "network", {}
        if event.startswith("ctypes."):
            caller, direct, active, importing = context()
            if event == "ctypes.dlopen" and importing and not active and args and isinstance(args[0], str) \
                    and under(norm(args[0]) or "", trusted):
                return None, {"caller": caller}
            return "native code via ctypes", {"caller": caller}
        if event in TAMPER:
            return "sandbox tampering", {}
        if event == "_thread.start_new_thread":
            return "thread start during the load (could race the hook)", {}
        if event in FILE_OPS:
            fds = [a for a in args if isinstance(a, int) and not isinstance(a, bool) and a >= 0]
            dir_fd = fds[0] if fds and event in DIR_FD_EVENTS else None
            paths = [norm(a, dir_fd) for a in args if isinstance(a, (str, bytes, os.PathLike))]
            if paths and all(p and under(p, write_ok) for p in paths):
                return None, {}
            return "filesystem modification", {}
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                      (mode is None and isinstance(flags, int) and flags & WRITE_FLAGS)
            p = norm(path)
            if p is None:
                return None, {"write": bool(writing)}
            if writing:
                return (None if under(p, write_ok) else "write outside the sandbox"), {"write": True, "path": p}
            if p.endswith(CODE_SUFFIXES) and not under(p, trusted):
                return "code file read from outside the trusted library paths", {"path": p}
            if under(p, read_ok):
                return None, {"path": p, "lib": under(p, trusted)}
            return "read outside allowed paths", {"path": p}
        if event == "import":
            fname = args[1] if len(args) > 1 else None
            if isinstance(fname, str) and not under(norm(fname) or fname, trusted):
                return "import of code from outside the trusted library paths", {}
            return None, {}
        if event in ("exec", "compile"):
            caller, direct, active, importing = context()
            code = args[0] if args else None
            fname = getattr(code, "co_filename", None) if event == "exec" else (args[1] if len(args) > 1 else None)
            from_file = isinstance(fname, str) and fname.endswith(".py") and under(fname, trusted) \
                and caller.startswith("<frozen importlib")
            info = {"caller": caller, "from_file": from_file, "unpickler_active": active, "importing": importing}
            if caller.startswith("<frozen importlib") and isinstance(fname, str) and fname.endswith(".py") \
                    and not under(fname, trusted):
                return "import of code from outside the trusted library paths", info
            if direct:
                return "code execution called directly by the pickle stream", info
            return None, info
        if event == "marshal.loads":
            caller, direct, active, importing = context()
            if caller.startswith("<frozen importlib") and not direct:
                return None, {}
            return "code object built from data (marshal)", {"caller": caller}
        if event in ("code.__new__", "function.__new__"):
            caller, direct, active, importing = context()
            if active:
                return "code object built during unpickling", {"caller": caller}
            return None, {"caller": caller}
        if event in ("object.__setattr__", "object.__delattr__"):
            caller, direct, active, importing = context()
            if len(args) > 1 and args[1] in ("__code__", "__globals__", "__closure__", "__defaults__",
                                             "__kwdefaults__") and (direct or (active and not importing)):
                return "function internals rewritten while unpickling", {"caller": caller}
            if direct:
                return "monkey-patching from the pickle stream", {"caller": caller}
            return None, {}
        if event in ("os.putenv", "os.unsetenv", "os.chdir"):
            caller, direct, active, importing = context()
            if direct or (active and not importing):
                return "environment change while unpickling", {"caller": caller}
            return None, {}
        return None, {}

    stream_always = {"pickle.find_class", "import", "exec", "compile", "open"}

    def hook(event, args):  # noqa: C901 - the audit hook itself: dispatch plus bookkeeping on the hot path
        me = get_ident()
        if state["busy"] == me:
            return  # an event raised by the hook's own work
        state["busy"] = me
        try:
            counts[event] = counts.get(event, 0) + 1
            if event in ("builtins.id", "object.__getattr__", "sys._getframemodulename"):
                return
            if event == "sys._getframe":
                f = getframe(1)
                if f is None or f.f_code not in reduce_codes:
                    return
            reason, info = decide(event, args)
            if reason is None and event in QUIET and event not in stream_always:
                return
            if reason is None and event == "open" and not info.get("write") and info.get("path", "").endswith(".pyc"):
                return  # a byte-code read by the import system: counted only
            if reason is None and event == "exec" and info.get("from_file"):
                return
            if reason is not None:
                state["refused"] += 1
            if state["streamed"] < limit_stream or reason is not None:
                state["streamed"] += 1
                if event == "import":
                    a = [_short(args[0]), _short(args[1])]
                else:
                    a = [_short(x) for x in args[:4]]
                msg = {"n": nonce, "t": "ev", "e": event, "a": a, "ts": round(time.monotonic() - t0, 5)}
                if info:
                    msg["i"] = info
                if reason is not None:
                    msg["r"] = reason
                send(msg)
        except Exception as exc:  # noqa: BLE001  (a bug in the hook must not hide an event)
            reason = None
            try:
                send({"n": nonce, "t": "hook-error", "e": event, "err": repr(exc)[:300]})
            except Exception:  # noqa: BLE001
                pass
        finally:
            state["busy"] = False
        if reason is not None:
            raise PermissionError(f"[dynamic-load sandbox] refused {event}: {reason}")

    def qualname(func):
        try:
            if isinstance(func, type):
                return f"{func.__module__}.{func.__qualname__}", "class"
            owner = getattr(func, "__self__", None)
            mod = getattr(func, "__module__", None)
            qn = getattr(func, "__qualname__", None) or getattr(func, "__name__", "?")
            if owner is not None and not isinstance(owner, type(sys)) and mod is None:
                mod = type(owner).__module__
            if type(func).__name__ in ("builtin_function_or_method",):
                kind = "builtin"
            elif type(func).__name__ in ("method", "method-wrapper", "method_descriptor"):
                kind = "method"
            else:
                kind = "function"
            return f"{mod}.{qn}", kind
        except Exception:  # noqa: BLE001
            return f"<{type(func).__name__}>", "other"

    def refuse(event, args, reason):
        """A refusal decided outside the audit hook (by the unpickler instrumentation)."""
        state["refused"] += 1
        counts[event] = counts.get(event, 0) + 1
        send({"n": nonce, "t": "ev", "e": event, "a": [_short(x) for x in args], "r": reason,
              "ts": round(time.monotonic() - t0, 5)})
        raise PermissionError(f"[dynamic-load sandbox] refused {event}: {reason}")

    def on_build(inst):
        """BUILD applies state to ``inst``: on a module, class or function that is monkey-patching."""
        kind = type(inst).__name__
        if isinstance(inst, (type, type(sys))) or kind in ("function", "builtin_function_or_method"):
            refuse("pickle.build", [getattr(inst, "__name__", kind), kind],
                   "BUILD on a module/class/function (monkey-patching from the pickle stream)")

    def on_call(opcode, func):
        """The pickle stream is about to call ``func`` (REDUCE/NEWOBJ): record what it calls."""
        if state["busy"]:
            return
        state["busy"] = get_ident()
        try:
            name, kind = qualname(func)
            counts["pickle.call"] = counts.get("pickle.call", 0) + 1
            if state["streamed"] < limit_stream:
                state["streamed"] += 1
                send({"n": nonce, "t": "ev", "e": "pickle.call", "a": [name, kind, opcode],
                      "ts": round(time.monotonic() - t0, 5)})
        finally:
            state["busy"] = False

    t0 = time.monotonic()
    own_codes.update({hook.__code__, decide.__code__, context.__code__, norm.__code__, under.__code__})
    return hook, counts, state, on_call, on_build, refuse


def instrument_unpicklers(on_call, on_build):  # noqa: C901 - patches every unpickler variant in one place
    """Wrap REDUCE/NEWOBJ/NEWOBJ_EX in every pure-Python unpickler's dispatch table (incl. joblib's copy)."""
    import pickle as _pickle

    seen, todo, tables = set(), [_pickle._Unpickler], []
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        table = cls.__dict__.get("dispatch")
        if isinstance(table, dict) and not any(table is t for t in tables):
            tables.append(table)
    specs = ((_pickle.REDUCE[0], "REDUCE", -2), (_pickle.NEWOBJ[0], "NEWOBJ", -2), (_pickle.NEWOBJ_EX[0], "NEWOBJ_EX", -3))
    for table in tables:
        for key, opname, pos in specs:
            orig = table.get(key)
            if orig is None:
                continue

            def wrapper(self, _orig=orig, _op=opname, _pos=pos):
                try:
                    target = self.stack[_pos]
                except (IndexError, AttributeError):
                    target = None
                if target is not None:
                    on_call(_op, target)
                return _orig(self)

            table[key] = wrapper
        orig_build = table.get(_pickle.BUILD[0])
        if orig_build is not None:
            def build_wrapper(self, _orig=orig_build):
                try:
                    inst = self.stack[-2]
                except (IndexError, AttributeError):
                    inst = None
                if inst is not None:
                    on_build(inst)
                return _orig(self)

            table[_pickle.BUILD[0]] = build_wrapper
    # OBJ and INST construct through _instantiate (joblib's unpickler inherits it).
    for cls in seen:
        orig_inst = cls.__dict__.get("_instantiate")
        if orig_inst is None:
            continue

        def inst_wrapper(self, klass, args, _orig=orig_inst):
            on_call("OBJ/INST", klass)
            return _orig(self, klass, args)

        cls._instantiate = inst_wrapper


# --------------------------------------------------------------------------- the job (grandchild)

def host_pid():
    """This process's PID as the parent (outside our PID namespace) sees it: /proc is the host's."""
    try:
        return int(os.readlink("/proc/self"))
    except (OSError, ValueError):
        return os.getpid()


# Process-reaching functions no load calls; replaced before the payload runs (the seccomp filter is the
# hard layer beneath: these make the attempt visible as a refused event rather than a mere EPERM).
PROCESS_CALLS = {"os": ("kill", "killpg", "pidfd_open", "setns", "unshare", "waitid"),
                 "posix": ("kill", "killpg", "pidfd_open", "setns", "unshare", "waitid"),
                 "signal": ("pidfd_send_signal", "pthread_kill", "sigqueue"),
                 "_signal": ("pidfd_send_signal", "pthread_kill", "sigqueue")}


def guard_process_calls(refuse):
    """Swap every process-signalling function in os/posix/signal/_signal for one that refuses and records."""
    for mod_name, names in PROCESS_CALLS.items():
        mod = sys.modules.get(mod_name) or __import__(mod_name)
        for name in names:
            if not hasattr(mod, name):
                continue

            def refused(*args, _event=f"{mod_name}.{name}", **kwargs):
                refuse(_event, list(args)[:4], "signals or reaches another process")

            setattr(mod, name, refused)


def grandchild(job, log_fd, trace_w, trace_r, pid_w):
    global TRACE_FD
    os.setsid()
    os.write(pid_w, str(host_pid()).encode())
    os.close(pid_w)
    if LIBC:  # die with the zygote (single-threaded, so this cannot fire early)
        LIBC[0].prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    # The grandchild never holds the zygote's channel to the parent: it writes only to its own pipe,
    # which the zygote relays wrapped, so nothing a payload writes can pose as a zygote message.
    os.close(trace_r)
    os.close(TRACE_FD)
    TRACE_FD = trace_w
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        os.close(0)
    except OSError:
        pass
    import resource

    nonce = job["nonce"]
    used_cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used_cpu.ru_utime + used_cpu.ru_stime) + int(job.get("cpu_s", 30)) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if job.get("memory_mb"):
        with open("/proc/self/statm") as fh:
            vm_bytes = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = vm_bytes + int(job["memory_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    fsize = int(job.get("fsize_mb", 64)) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    os.environ["TMPDIR"] = job["tmp"]
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = job["tmp"]
    import pickle

    # The pure-Python unpickler: every REDUCE runs in a known frame, so the hook can tell a call made
    # by the pickle stream itself from a call made by library code. (It raises the same audit events.)
    pickle.Unpickler = pickle._Unpickler
    pickle.load = pickle._load
    pickle.loads = pickle._loads

    path = job["path"]
    fh = open(path, "rb")  # opened before the hook: reading the subject is the point
    loader = job["loader"]
    hook, counts, state, on_call, on_build, refuse = make_hook(nonce, job, job["roots"])
    instrument_unpicklers(on_call, on_build)
    seccomp_err = "off" if not CONFIG.get("seccomp", True) else \
        install_seccomp(LIBC[0], sys.modules["ctypes"], os.getpid()) if LIBC else "no libc"
    send({"n": nonce, "t": "start", "pid": os.getpid(), "loader": loader, "seccomp": seccomp_err or True})
    t = time.perf_counter()
    if job.get("audit_hook", True):  # off only in the OS-layer self-test (the hook is the first line, not the only)
        guard_process_calls(refuse)
        sys.addaudithook(hook)
    ok, err, kind = False, None, None
    try:
        if loader == "torch":
            import torch

            obj = torch.load(fh, weights_only=False, map_location="cpu")
        elif loader == "joblib":
            import joblib

            obj = joblib.load(fh)
        elif loader == "numpy":
            import numpy

            obj = numpy.load(fh, allow_pickle=True)
            if hasattr(obj, "files"):
                obj = {k: obj[k] for k in obj.files}
        else:
            obj = pickle.load(fh)
        ok = True
        kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    except BaseException as exc:  # noqa: BLE001
        err = f"{type(exc).__module__}.{type(exc).__qualname__}: {_short(exc, 400)}"
    dur = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_SELF)
    send({"n": nonce, "t": "done", "ok": ok, "error": err, "type": kind, "load_s": round(dur, 5),
          "counts": dict(counts), "refused": state["refused"], "maxrss_kb": ru.ru_maxrss})
    os._exit(0)


def load_lz4_frames():
    """The project's own LZ4 frame decoder, ``probes/lz4_frames.py``, loaded by path (this script imports
    nothing from the project by name) while the zygote starts, before the audit hook would refuse reading it."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lz4_frames.py")
    spec = importlib.util.spec_from_file_location("_wb_lz4_frames", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def install_lz4_fallback():
    """If joblib is here but the lz4 package is not, decode .lz4 joblib files in pure Python."""
    try:
        import lz4  # noqa: F401

        return "lz4 package"
    except ImportError:
        pass
    jc = sys.modules.get("joblib.compressor")
    if jc is None:
        return None
    import io

    lz4_frames = load_lz4_frames()

    class PureLZ4(jc.CompressorWrapper):
        def __init__(self):
            self.prefix = b"\x04\x22\x4d\x18"
            self.extension = ".lz4"
            self.fileobj_factory = None

        def compressor_file(self, fileobj, compresslevel=None):
            raise ValueError("writing is not supported in the sandbox")

        def decompressor_file(self, fileobj):
            return io.BytesIO(lz4_frames.decompress(fileobj.read(), 1 << 31))

    jc.register_compressor("lz4", PureLZ4(), force=True)
    return "pure-python fallback"


def relay(fd, job_id, max_bytes=64 << 20):
    """Forward the grandchild's trace lines, wrapped, until it closes its end (exits or is killed)."""
    pending, total = b"", 0
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:  # a flood: keep draining, stop forwarding
            continue
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            send({"t": "g", "job": job_id, "l": line[:MAX_LINE].decode("utf-8", "replace")})
    if pending:
        send({"t": "g", "job": job_id, "l": pending[:MAX_LINE].decode("utf-8", "replace")})
    os.close(fd)


def _rmtree(top):
    for root, dirs, files in os.walk(top, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(root, name))
            except OSError:
                pass
        for name in dirs:
            try:
                os.rmdir(os.path.join(root, name))
            except OSError:
                pass
    try:
        os.rmdir(top)
    except OSError:
        pass


def main():
    import resource

    tmp_dir = CONFIG["tmp_dir"]
    t = time.perf_counter()
    iso = seal(tmp_dir)
    for sub in ("work", "tmp", "logs"):
        os.makedirs(os.path.join(tmp_dir, sub), mode=0o700, exist_ok=True)
    os.chdir(os.path.join(tmp_dir, "work"))
    for name in CONFIG.get("preload", []):
        try:
            __import__(name)
        except Exception as exc:  # noqa: BLE001
            iso.setdefault("preload_errors", {})[name] = repr(exc)[:200]
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    iso["lz4"] = install_lz4_fallback()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    iso["startup_cpu_s"] = round(ru.ru_utime + ru.ru_stime, 3)
    send({"t": "ready", "pid": os.getpid(), "isolation": iso, "startup_s": round(time.perf_counter() - t, 4)})
    stdin = os.fdopen(0, "rb", buffering=0)
    buf = b""
    while True:
        chunk = stdin.read(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            if not raw.strip():
                continue
            job = json.loads(raw)
            log_path = os.path.join(tmp_dir, "logs", f"job-{job['id']}.log")
            job_tmp = os.path.join(tmp_dir, "tmp", str(job["id"]))
            os.makedirs(job_tmp, exist_ok=True)
            job["tmp"] = job_tmp
            for name in job.get("preload") or ():
                if name not in sys.modules:
                    try:
                        __import__(name)  # trusted library code, in the zygote, before any hook
                    except Exception:  # noqa: BLE001
                        pass
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            trace_r, trace_w = os.pipe()
            pid_r, pid_w = os.pipe()
            started = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(pid_r)
                    grandchild(job, log_fd, trace_w, trace_r, pid_w)
                finally:
                    os._exit(70)
            os.close(log_fd)
            os.close(trace_w)
            os.close(pid_w)
            raw_pid = os.read(pid_r, 32)
            os.close(pid_r)
            # The parent kills a hung grandchild by the PID it sees (outside our PID namespace).
            send({"t": "forked", "job": job["id"], "pid": int(raw_pid) if raw_pid.isdigit() else 0, "ns_pid": pid})
            relay(trace_r, job["id"])
            _, status, ru = os.wait4(pid, 0)
            try:
                with open(log_path, "rb") as fh:
                    fh.seek(max(0, os.path.getsize(log_path) - 2000))
                    tail = fh.read().decode("utf-8", "replace")
                os.unlink(log_path)
            except OSError:
                tail = ""
            _rmtree(job_tmp)
            send({"t": "exit", "job": job["id"], "pid": pid,
                  "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                  "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                  "wall_s": round(time.perf_counter() - started, 4),
                  "cpu_s": round(ru.ru_utime + ru.ru_stime, 4), "maxrss_kb": ru.ru_maxrss, "log_tail": tail})
    del resource


if __name__ == "__main__":
    main()
