"""The hostile-input table of issue 18: every case built here, run in its own subprocess with a timeout,
judged held or not, with its wall time and peak RSS.

    .venv/bin/python benchmarks/hostile_inputs.py [--timeout 60] [--only NAME,...] [--full] [--keep DIR]

Each case is built by this script (streamed, so building costs little memory), then checked by a child
``python benchmarks/hostile_inputs.py --one NAME DIR``: the child runs the workbench as an examiner would
(mostly the CLI, in a grandchild) and prints one JSON line ``{"held": bool, "why": str, "peak_kb": int}``
(its peak RSS and its largest waited-for descendant's). A child over the timeout is killed with its
process group and counts as not held. The child's address space is capped (8 GiB soft limit) so a memory
bomb that gets through fails there rather than on the machine.

Cases marked "static" are the static scanner's (issue 18 items 2, 4, 5, 7-bz2, 7-zip): they may show
"no" on a branch without that fix. ``--full`` builds the issue's full sizes (1e6 tiny pickles) instead
of the quick ones (2e5). Nothing here touches the network; no suspect file is unpickled in this process.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import json
import os
import pickle
import re
import resource
import shlex
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _setup  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
GIB = 1 << 30


def wb(*args, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """The workbench CLI as an examiner runs it (this checkout's code)."""
    return subprocess.run([PY, "-m", "workbench", *map(str, args)], capture_output=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "WORKBENCH_THREADS": "1", **(env or {})})


def text(p: subprocess.CompletedProcess) -> tuple[str, str]:
    return p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def scan_json(path, *extra, db=None) -> tuple[dict | None, str]:
    """``scan --json``: the report (or None) and stderr's last line."""
    p = wb("scan", path, "--json", *extra, "--db", db or Path(path).parent / "bench-case.db")
    out, err = text(p)
    try:
        return json.loads(out), err.strip().splitlines()[-1] if err.strip() else ""
    except ValueError:
        return None, (err.strip().splitlines() or ["no output"])[-1][:200]


def one_line_error(p: subprocess.CompletedProcess) -> bool:
    _, err = text(p)
    return "Traceback" not in err and p.returncode in (0, 1, 2)


# ------------------------------------------------------------------ builders (streamed, low memory)

def _raw_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> None:
    """A zip from precomputed (name, deflated bytes, crc32, uncompressed size) members (sizes < 4 GiB)."""
    with open(path, "wb") as fh:
        central = b""
        for name, data, crc, size in members:
            off = fh.tell()
            nb = name.encode()
            fh.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size, len(nb), 0) + nb)
            fh.write(data)
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(data), size,
                                   len(nb), 0, 0, 0, 0, 0, off) + nb
        cd_off = fh.tell()
        fh.write(central)
        fh.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), cd_off, 0))


def _deflated_zeros(n: int) -> tuple[bytes, int]:
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk, crc, out = bytes(1 << 24), 0, []
    for _ in range(n // len(chunk)):
        out.append(co.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    out.append(co.flush())
    return b"".join(out), crc


def _call_pickle(module: str, name: str, arg_opcodes: bytes) -> bytes:
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n(" + arg_opcodes + b"tR."


def _torch_zip(path: Path, data_pkl: bytes, extra: list[tuple[str, bytes]] = ()) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/byteorder", "little")
        for name, data in extra:
            zf.writestr(name, data)


def build_symlink_loop(d: Path) -> Path:
    f = d / "hf"
    f.mkdir()
    (f / "config.json").write_text('{"model_type": "bert"}')
    (f / "pytorch_model.bin").write_bytes(_call_pickle("os", "system", b"X\x04\x00\x00\x00true"))
    os.symlink("b", f / "a")
    os.symlink("a", f / "b")
    return f


def build_memory_bomb(d: Path) -> Path:
    p = d / "bomb.pt"
    _torch_zip(p, _call_pickle("builtins", "bytearray", b"\x8a\x05\x00\x5e\xd0\xb2\x00"))  # bytearray(3e9)
    return p


def build_fifo(d: Path) -> Path:
    f = d / "hf"
    f.mkdir()
    (f / "config.json").write_text('{"model_type": "bert"}')
    (f / "model.pkl").write_bytes(pickle.dumps({"w": [0.0]}, protocol=2))
    os.mkfifo(f / "pipe.bin")
    return f


def build_opcode_stream(d: Path) -> Path:
    p = d / "model.pkl.gz"  # a gzip'd pickle: 1 GiB of NONE/POP opcodes in ~1 MB
    with gzip.open(p, "wb", compresslevel=9) as fh:
        fh.write(b"\x80\x02")
        chunk = b"N0" * (1 << 22)
        for _ in range(GIB // len(chunk)):
            fh.write(chunk)
        fh.write(b"N.")
    return p


def build_zip_16x1g(d: Path) -> Path:
    data, crc = _deflated_zeros(GIB)
    members = [("archive/data.pkl", zlib.compress(pickle.dumps({}, protocol=2))[2:-4],
                zlib.crc32(pickle.dumps({}, protocol=2)), len(pickle.dumps({}, protocol=2)))]
    members += [(f"archive/data/{i}", data, crc, GIB) for i in range(16)]
    p = d / "wide.pt"
    _raw_zip(p, members)
    return p


def build_many_pickles(d: Path, n: int) -> Path:
    p = d / "many.zip"
    tiny = pickle.dumps([0], protocol=2)
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"p/{i}.pkl", tiny)
    return p


def build_bz2_multistream(d: Path) -> Path:
    import joblib
    import numpy as np

    one = d / "one.joblib"
    joblib.dump({"coef": np.arange(4.0)}, one)
    raw = one.read_bytes()
    one.unlink()
    p = d / "model.joblib.bz2"
    half = len(raw) // 2
    p.write_bytes(bz2.compress(raw[:half]) + bz2.compress(raw[half:]))
    return p


def build_declared_10g(d: Path) -> Path:
    p = d / "declared.pt"
    small = pickle.dumps({"w": 1}, protocol=2)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = co.compress(bytes(1024)) + co.flush()
    with open(p, "wb") as fh:  # one member whose zip64 headers declare 10 GiB, with 1 KiB of data behind them
        members = []
        for name, data, crc, size, method in (("archive/data.pkl", small, zlib.crc32(small), len(small), 0),
                                              ("archive/data/0", body, zlib.crc32(bytes(1024)), 10 * GIB, 8)):
            off = fh.tell()
            nb = name.encode()
            extra = struct.pack("<HHQQ", 1, 16, size, len(data)) if size > 0xFFFFFFFF else b""
            usize = 0xFFFFFFFF if extra else size
            csize = 0xFFFFFFFF if extra else len(data)
            fh.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0, crc, csize, usize, len(nb), len(extra))
                     + nb + extra + data)
            members.append((nb, crc, csize, usize, extra, off, method))
        cd_off, central = fh.tell(), b""
        for nb, crc, csize, usize, extra, off, method in members:
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 0, crc, csize, usize,
                                   len(nb), len(extra), 0, 0, 0, 0, off) + nb + extra
        fh.write(central)
        fh.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), cd_off, 0))
    return p


def build_nonutf8(d: Path) -> dict[str, str]:
    import torch

    folder = os.fsencode(d / "odd")
    os.mkdir(folder)
    with open(os.path.join(folder, b"config.json"), "wb") as fh:
        fh.write(b'{"model_type": "bert"}')
    with open(os.path.join(folder, b"weights\xff.bin"), "wb") as fh:
        fh.write(pickle.dumps({"w": [1.0]}, protocol=2))
    g = torch.Generator().manual_seed(0)
    torch.save({"w": torch.randn(2, 2, generator=g)}, d / "tmp.pt")
    single = os.fsencode(d) + b"/model\xff.pt"
    os.rename(d / "tmp.pt", single)
    return {"folder": os.fsdecode(folder), "file": os.fsdecode(single)}


def build_npz_bomb(d: Path) -> Path:
    import numpy as np
    from numpy.lib import format as npy_format

    p = d / "bomb.npz"
    n = 750_000  # (n, 1, 32, 32) float32 = 3 GB declared, deflated zeros
    hdr = io.BytesIO()
    npy_format.write_array_header_1_0(hdr, {"descr": "<f4", "fortran_order": False, "shape": (n, 1, 32, 32)})
    y = io.BytesIO()
    np.save(y, np.zeros(n, np.int64))
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            fh.write(hdr.getvalue())
            chunk = bytes(1 << 24)
            for _ in range(n * 4096 // len(chunk)):
                fh.write(chunk)
        zf.writestr("y.npy", y.getvalue())
    return p


def _linear_weights(d: Path) -> Path:
    import torch

    g = torch.Generator().manual_seed(0)
    p = d / "weights.pt"
    torch.save({"fc.weight": torch.randn(10, 64, generator=g), "fc.bias": torch.zeros(10)}, p)
    return p


# ------------------------------------------------------------------ checks (run in the child)

def check_sandbox_escape(d: Path) -> tuple[bool, str]:
    from probes.context import context_for
    from probes.dynamic_load import run, sandbox

    victim = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        def call(mod, name, args):
            return b"c" + mod + b"\n" + name + b"\n(" + args + b"tR"
        pid = b"J" + victim.pid.to_bytes(4, "little")
        payload = b"\x80\x02" + call(b"os", b"pidfd_open", pid) + b"q\x000" + call(b"signal", b"pidfd_send_signal",
                                                                              b"h\x00J\x09\x00\x00\x00") + b"."
        p = d / "pidfd.pkl"
        p.write_bytes(payload)
        res = run(str(p), context_for("dynamic", {"baseline": False}))
        z = sandbox.get_zygote()
        with z.lock:
            z.run_job(str(p), "pickle", timeout_s=20, cpu_s=20, memory_mb=1024, audit_hook=False)
        alive = victim.poll() is None
        return alive and res.verdict == "malicious", (f"victim {'alive' if alive else 'KILLED'}; verdict {res.verdict}; "
                                                      f"also with the audit hook off; pidns={z.isolation.get('pidns')}")
    finally:
        victim.kill()
        victim.wait()
        sandbox.shutdown()


def check_symlink_loop(d: Path) -> tuple[bool, str]:
    out, err = scan_json(build_symlink_loop(d))
    if out is None:
        return False, f"no report: {err}"
    return out["verdict"] != "clean", f"layered verdict {out['verdict']} ({out['evidence'][:80]})"


def check_verify_edit(d: Path) -> tuple[bool, str]:
    from casefiles import CaseStore

    db = d / "case.db"
    with CaseStore(db) as s:
        cid = s.new_case("edit")
        sid = s.add_subject(cid, path="/e/m.pt", sha256="5" * 64, size=1, format="torch-zip", kind="x", files=[])
        r = s.start_run(cid, sid, "static", {})
        s.finish_run(r, status="done", result={"probe": "static", "verdict": "malicious", "score": 1.0,
                                                     "summary": "os.system"})
    conn = sqlite3.connect(db)
    conn.execute("update runs set verdict='clean', score=0, result=json_set(result, '$.verdict', 'clean')")
    conn.commit()
    conn.close()
    p = wb("case", "verify", "1", "--db", db)
    out, _ = text(p)
    report, _ = text(wb("case", "export", "1", "--db", db))
    held = p.returncode == 1 and "run 1" in out and "WARNING" in report
    return held, f"verify exit {p.returncode}; {'names run 1' if 'run 1' in out else 'run not named'}; " \
                 f"report {'warns' if 'WARNING' in report else 'says nothing'}"


def check_memory_bomb(d: Path) -> tuple[bool, str]:
    out, err = scan_json(build_memory_bomb(d))
    if out is None:
        return False, f"no report: {err}"
    return out["verdict"] != "clean", f"layered verdict {out['verdict']} ({out['evidence'][:80]})"


def _scan_held(path, what: str) -> tuple[bool, str]:
    out, err = scan_json(path)
    if out is None:
        return False, f"no report: {err}"
    held = out["verdict"] != "clean"
    return held, f"{what}: verdict {out['verdict']} ({out['evidence'][:90]})"


def check_fifo(d: Path) -> tuple[bool, str]:
    return _scan_held(build_fifo(d), "FIFO in folder")


def check_opcode_stream(d: Path) -> tuple[bool, str]:
    return _scan_held(d / "model.pkl.gz", "1 GiB opcode stream")


def check_zip_16x1g(d: Path) -> tuple[bool, str]:
    return _scan_held(d / "wide.pt", "16 x 1 GiB members")


def _static(out: dict) -> dict:
    return next((r for r in out.get("results", []) if r["probe"] == "static"), {})


def check_many_pickles(d: Path) -> tuple[bool, str]:
    """Held when the scan is bounded (the runner's timeout and RSS cap) and honest: every member read and
    clean, or what was not read reported and the verdict not clean."""
    out, err = scan_json(d / "many.zip")
    if out is None:
        return False, f"no report: {err}"
    not_read = _static(out).get("not_read") or []
    held = (out["verdict"] == "clean") == (not not_read)
    return held, (f"tiny pickles: verdict {out['verdict']}, {len(not_read)} part(s) reported not read "
                  f"({out['evidence'][:60]})")


def check_bz2(d: Path) -> tuple[bool, str]:
    out, err = scan_json(build_bz2_multistream(d))
    if out is None:
        return False, f"no report: {err}"
    static = _static(out)
    named = "bz2" in (static.get("summary") or "").lower()  # says why: the multi-stream bz2 container
    # held: every stream read (a benign file is then clean), or not read and the reason names bz2
    read_all = out["verdict"] == "clean" and not static.get("not_read") and static.get("verdict") == "clean"
    return read_all or (out["verdict"] != "clean" and named), \
        f"verdict {out['verdict']}{' (every stream read)' if read_all else ''}: {static.get('summary', '')[:80]}"


def check_dynamic_51(d: Path) -> tuple[bool, str]:
    from probes.context import context_for
    from probes.dynamic_load import run, sandbox

    f = d / "many"
    f.mkdir()
    for i in range(51):
        (f / f"w{i:02d}.pkl").write_bytes(pickle.dumps({"w": [float(i)]}, protocol=2))
    try:
        res = run(str(f), context_for("dynamic", {"baseline": False}))
    finally:
        sandbox.shutdown()
    named = "w50.pkl" in res.summary
    return res.verdict != "clean" and named, f"verdict {res.verdict}; {'names' if named else 'does not name'} w50.pkl"


def check_declared_10g(d: Path) -> tuple[bool, str]:
    out, err = scan_json(build_declared_10g(d))
    if out is None:
        return False, f"no report: {err}"
    static = next((r for r in out["results"] if r["probe"] == "static"), {})
    said = json.dumps([static.get("summary"), static.get("findings"), static.get("inconclusive_parts")]).lower()
    named = re.search(r"declar|10(\.0)? ?gib|10737418240|10240 mib", said) is not None
    return named and out["verdict"] != "clean", \
        f"verdict {out['verdict']}; declared size {'mentioned' if named else 'not mentioned'}: {static.get('summary', '')[:60]}"


def check_nonutf8(d: Path) -> tuple[bool, str]:
    paths = build_nonutf8(d)
    db = d / "case.db"
    wb("case", "new", "odd", "--db", db)
    bad = []
    for kind, path in paths.items():
        for extra in ([], ["--case", "1", "--db", db]):
            p = wb("scan", path, *extra)
            if not one_line_error(p):
                bad.append(f"{kind}{' --case' if extra else ''}: {text(p)[1].strip().splitlines()[-1][:80]}")
    return not bad, "; ".join(bad) or "folder and file, with and without --case: no traceback"


def check_disk_full(d: Path) -> tuple[bool, str]:
    if not shutil.which("unshare"):
        return False, "util-linux unshare missing: not tried"
    mnt = d / "mnt"
    mnt.mkdir()
    subject = d / "vendor.pkl"
    subject.write_bytes(b"\x80\x02(" + b"".join(b"cvendorlib.m%d\nC%d\n" % (i, i) for i in range(2000)) + b"l.")
    db = mnt / "c.db"
    w = f"PYTHONPATH={shlex.quote(str(ROOT))} {PY} -m workbench"
    script = (f"mount -t tmpfs -o size=1m tmpfs {mnt} || exit 99; {w} case new full --db {db} >/dev/null && "
              f"{w} subject add 1 {subject} --db {db} >/dev/null && avail=$(df -k {mnt} | tail -1 | awk '{{print $4}}') && "
              f"dd if=/dev/zero of={mnt}/filler bs=1k count=$((avail - 120)) 2>/dev/null; "
              f"{w} scan {subject} --probes static --case 1 --db {db}; echo rc=$?; rm {mnt}/filler; "
              f"{w} case show 1 --db {db}")
    p = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, timeout=300)
    out, err = text(p)
    if p.returncode == 99:
        return False, "cannot mount a tmpfs here: not tried"
    after = out.split("rc=", 1)[-1]
    held = "Traceback" not in err and " running " not in after and "Verdict:" in out
    return held, ("verdict shown, run recorded " + ("failed" if " failed " in after else "?")) if held else \
        f"traceback or run left running: {err.strip().splitlines()[-1][:90] if err.strip() else after[:90]}"


def check_string_labels(d: Path) -> tuple[bool, str]:
    import numpy as np

    data = d / "labels.npz"
    np.savez(data, x=np.zeros((8, 1, 8, 8), np.float32), y=np.array(["cat", "dog"] * 4))
    arch = d / "arch.py"
    arch.write_text("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                    "        self.fc = nn.Linear(64, 10)\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
    p = wb("scan", _linear_weights(d), "--arch", f"{arch}:Net", "--data", data, "--db", d / "c.db")
    err = text(p)[1]
    return one_line_error(p) and p.returncode == 2, f"exit {p.returncode}: {err.strip().splitlines()[-1][:90] if err.strip() else ''}"


def check_npz_bomb(d: Path) -> tuple[bool, str]:
    p = wb("scan", _linear_weights(d), "--data", d / "bomb.npz", "--db", d / "c.db")
    err = text(p)[1]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return one_line_error(p) and peak < 2048, f"exit {p.returncode}, CLI peak {peak:.0f} MB: {err.strip().splitlines()[-1][:70]}"


def check_arch_exit(d: Path) -> tuple[bool, str]:
    arch = d / "exit0.py"
    arch.write_text("import sys\nsys.exit(0)\n")
    p = wb("scan", _linear_weights(d), "--arch", f"{arch}:Net", "--probes", "fingerprint", "--db", d / "c.db")
    err = text(p)[1]
    last = err.strip().splitlines()[-1][:90] if err.strip() else "no output"
    return p.returncode == 2 and "error:" in err, f"exit {p.returncode}: {last}"


def check_read_only(d: Path) -> tuple[bool, str]:
    if not shutil.which("unshare"):
        return False, "util-linux unshare missing: not tried"
    f = d / "ro"
    f.mkdir()
    db = f / "case.db"
    wb("case", "new", "ro", "--db", db)
    w = f"PYTHONPATH={shlex.quote(str(ROOT))} {PY} -m workbench"
    script = (f"mount --bind {f} {f} && mount -o remount,bind,ro {f} || exit 99; {w} case list --db {db} >/dev/null; "
              f"echo list=$?; {w} case export 1 --db {db} >/dev/null; echo export=$?")
    p = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, timeout=120)
    out = text(p)[0]
    if p.returncode == 99:
        return False, "cannot make a read-only mount here: not tried"
    return "list=0" in out and "export=0" in out, " ".join(out.split())


@dataclass
class Case:
    name: str
    item: str
    check: Callable[[Path], tuple[bool, str]]
    build: Callable[[Path, argparse.Namespace], object] | None = None  # heavy inputs, built before timing
    static: bool = False
    max_rss_mb: float | None = None  # held only if the peak RSS stays under this (a bounded-memory case)


CASES = [
    Case("sandbox-escape-pidfd", "1", check_sandbox_escape),
    Case("folder-symlink-loop", "2", check_symlink_loop, static=True),
    Case("verify-edited-verdict", "3", check_verify_edit),
    Case("bytearray-3e9-torch-zip", "4", check_memory_bomb, static=True, max_rss_mb=1024),
    Case("fifo-in-folder", "5", check_fifo, static=True),
    Case("gzip-1gib-opcode-stream", "5", check_opcode_stream, lambda d, a: build_opcode_stream(d), static=True,
         max_rss_mb=1024),
    Case("zip-16x1gib-members", "5", check_zip_16x1g, lambda d, a: build_zip_16x1g(d), static=True, max_rss_mb=1024),
    Case("many-tiny-pickles", "5", check_many_pickles,
         lambda d, a: build_many_pickles(d, 1_000_000 if a.full else 200_000), static=True, max_rss_mb=1024),
    Case("non-utf8-names", "6", check_nonutf8),
    Case("disk-full-tmpfs", "6", check_disk_full),
    Case("string-labels-data", "6", check_string_labels),
    Case("npz-3gb-data-bomb", "6", check_npz_bomb, lambda d, a: build_npz_bomb(d), max_rss_mb=1024),
    Case("bz2-multistream-joblib", "7", check_bz2, static=True),
    Case("dynamic-51-pickles", "7", check_dynamic_51),
    Case("zip-declares-10gib", "7", check_declared_10g, static=True),
    Case("arch-sys-exit-0", "8", check_arch_exit),
    Case("read-only-case-file", "9", check_read_only),
]


def child(name: str, d: Path) -> None:
    """``--one NAME DIR``: run one check, print its JSON line (peak RSS of this process and its children)."""
    # A soft cap only: the dynamic probe's sandbox sets its own (higher) limits, which a hard cap would forbid.
    resource.setrlimit(resource.RLIMIT_AS, (8 * GIB, resource.getrlimit(resource.RLIMIT_AS)[1]))
    case = next(c for c in CASES if c.name == name)
    try:
        held, why = case.check(d)
    except Exception as exc:  # noqa: BLE001 - a check that crashes is a case not held, said in one line
        held, why = False, f"check crashed: {type(exc).__name__}: {str(exc)[:120]}"
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    sys.stdout.write("\n" + json.dumps({"held": bool(held), "why": why, "peak_kb": peak}) + "\n")


def run_case(case: Case, d: Path, timeout: float) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([PY, str(Path(__file__).resolve()), "--one", case.name, str(d)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "WORKBENCH_THREADS": "1"})
    deadline = t0 + timeout
    rusage, timed_out = None, False
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode("utf-8", "replace") if proc.stdout else ""
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    report = json.loads(lines[-1]) if lines and not timed_out else None
    peak_kb = max(rusage.ru_maxrss if rusage else 0, (report or {}).get("peak_kb", 0))
    if timed_out:
        held, why = False, f"timed out after {timeout:g} s (killed)"
    elif report is None:
        held, why = False, f"the check died (status {status})"
    else:
        held, why = report["held"], report["why"]
        if held and case.max_rss_mb is not None and peak_kb / 1024 > case.max_rss_mb:
            held, why = False, f"peak RSS {peak_kb / 1024:.0f} MB over {case.max_rss_mb:.0f} MB; {why}"
    return {"case": case.name, "item": case.item, "static": case.static, "held": held, "why": why,
            "time_s": round(wall, 2), "peak_rss_mb": round(peak_kb / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default 60)")
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--full", action="store_true", help="the issue's full sizes (1e6 tiny pickles)")
    ap.add_argument("--keep", type=Path, default=None, help="build the cases here and keep them")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    ap.add_argument("--one", nargs=2, metavar=("NAME", "DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        child(a.one[0], Path(a.one[1]))
        return
    wanted = [c for c in CASES if not a.only or c.name in a.only.split(",")]
    root = a.keep or Path(tempfile.mkdtemp(prefix="wb-hostile-"))
    rows = []
    t_all = time.perf_counter()
    try:
        for case in wanted:
            d = root / case.name
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            tb = time.perf_counter()
            if case.build:
                case.build(d, a)
            build_s = time.perf_counter() - tb
            row = run_case(case, d, a.timeout)
            row["build_s"] = round(build_s, 1)
            rows.append(row)
            print(f"  {row['case']:<26} {'yes' if row['held'] else 'NO ':<4} {row['time_s']:>7.1f} s "
                  f"{row['peak_rss_mb']:>8.0f} MB  {row['why'][:110]}", file=sys.stderr, flush=True)
            if a.keep is None:
                shutil.rmtree(d, ignore_errors=True)
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - t_all
    print("\n| case | item | held | why | time s | peak RSS MB |\n|---|---|---|---|---|---|")
    for r in rows:
        tag = " (static)" if r["static"] else ""
        print(f"| {r['case']} | {r['item']}{tag} | {'yes' if r['held'] else 'no'} | {r['why'][:120]} | "
              f"{r['time_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    held = sum(r["held"] for r in rows)
    print(f"\nheld {held}/{len(rows)} cases; run time {sum(r['time_s'] for r in rows):.0f} s of checks, "
          f"{total:.0f} s with building; max peak RSS {max((r['peak_rss_mb'] for r in rows), default=0):.0f} MB; "
          f"timeout {a.timeout:g} s per case")
    not_static = [r for r in rows if not r["static"]]
    print(f"non-static cases (this branch's): held {sum(r['held'] for r in not_static)}/{len(not_static)}")
    if a.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
