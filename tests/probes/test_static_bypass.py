"""Static-scan bypass families (issues 12 and 18), one regression test each; every sample is built here.

Families guarded, by parametrize id:

* frame consistency - ``frame-straddle-hides-payload`` (a BINBYTES whose header closes a FRAME: the C
  unpickler reads the payload as data, a frame-respecting reader as opcodes), ``frame-short``,
  ``frame-past-end``, ``frame-straddles-string``, ``frame-inside-frame``, ``frame-stop-inside``;
* expansion / resource exhaustion - ``memo-fanout`` (billion laughs from memo re-use), ``dup-tuple-chain``,
  ``bytearray-3e9``, ``bytes-huge``, ``list-of-huge-range``, ``sum-of-huge-range``, ``binbytes8-declared``,
  ``legacy-storage-huge``;
* headerless protocol 0/1 pickles - ``p0-stack-global``, ``p1-binunicode-stack-global``, ``p0-inst``;
* legacy torch whole-model checkpoints (review tier) and a legacy ``module`` record naming ``posix.system``;
* safe builtins (``builtins.len`` & co. pass) vs dangerous ones (eval, exec, getattr, ...);
* hostile containers and folders: symlink loops, FIFOs, many files, time budget on an endless opcode stream,
  a zip of many big deflated members (bounded memory), a zip declaring gigabytes over a kilobyte,
  multi-stream bz2 joblib, a torch zip calling ``bytearray(3e9)`` refused before loading.

Payloads are harmless (``os.getpid``, ``echo``) and are never executed.
"""

from __future__ import annotations

import bz2
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from probes.static_scan import scan_path

ROOT = Path(__file__).resolve().parents[2]


def _u(s: str) -> bytes:
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def _sg(module: str, name: str) -> bytes:
    return _u(module) + _u(name) + b"\x93"


def _frame(n: int) -> bytes:
    return b"\x95" + struct.pack("<Q", n)


CALL = _sg("os", "system") + _u("echo hi") + b"\x85R"  # os.system('echo hi'), one value left
P4 = b"\x80\x04"


def _scan(tmp_path: Path, name: str, data: bytes, **params) -> dict:
    p = tmp_path / name
    p.write_bytes(data)
    return scan_path(p, params=params).to_dict()


def _rules(r: dict) -> set[str]:
    return {f["rule"] for f in r["findings"]}


def _names(r: dict) -> set[str]:
    return {f"{f['module']}.{f['name']}" for f in r["findings"] if f["module"] and f["name"]}


# ------------------------------------------------------------------ frames
def _straddle_hidden() -> bytes:
    hidden = CALL + b"0"
    head = b"B" + struct.pack("<I", len(hidden))  # BINBYTES header is the last thing inside the frame
    return P4 + _frame(2 + len(head)) + b"N0" + head + hidden + b"N."


FRAMES = {
    "frame-straddle-hides-payload": _straddle_hidden(),
    "frame-short": P4 + _frame(3) + CALL + b".",
    "frame-past-end": P4 + _frame(1000) + CALL + b".",
    "frame-straddles-string": P4 + _frame(len(_u("os")) + 1) + CALL + b".",
    "frame-inside-frame": P4 + _frame(40) + _frame(len(CALL) + 1) + CALL + b".",
    "frame-stop-inside": P4 + _frame(2 + 4) + b"N." + b"\x00\x00\x00\x00" + P4 + CALL + b".",
}


@pytest.mark.parametrize("data", list(FRAMES.values()), ids=list(FRAMES))
def test_frame_divergence_is_reported_and_both_readings_scanned(tmp_path, data):
    r = _scan(tmp_path, "framed.pkl", data)
    assert "frame-divergence" in _rules(r), r["summary"]
    assert r["verdict"] == "malicious", r["summary"]
    assert "os.system" in _names(r)
    fr = next(f for f in r["findings"] if f["rule"] == "frame-divergence")
    assert fr["opcode"] == "FRAME" and isinstance(fr["offset"], int)


def test_payload_hidden_behind_a_frame_is_found_in_the_frame_respecting_reading(tmp_path):
    r = _scan(tmp_path, "hidden.pkl", FRAMES["frame-straddle-hides-payload"])
    hit = next(f for f in r["findings"] if f["name"] == "system")
    assert "frame-respecting reader" in hit["explanation"] and hit["severity"] == "critical"


def test_consistent_frames_of_real_pickles_are_silent(tmp_path):
    obj = {"w": list(range(40_000)), "s": "x" * 100_000, "b": bytes(200_000), "n": [{"k": i} for i in range(3000)]}
    for proto in (4, 5):
        r = _scan(tmp_path, f"p{proto}.pkl", pickle.dumps(obj, protocol=proto))
        assert r["verdict"] == "clean", r["summary"]


# ------------------------------------------------------------------ expansion / resource exhaustion
def _memo_fanout(levels: int = 12, width: int = 10) -> bytes:
    out = P4 + b"]\x94"  # memo 0: an empty list
    for i in range(levels):  # memo i+1: a list holding memo i `width` times
        out += b"(" + (b"h" + bytes([i])) * width + b"l\x94"
    return out + b"."


def _legacy_huge_storage() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    at = raw.find(b"\x06K\x04N")  # ... 'cpu' BINPUT 6, numel BININT1 4, NONE
    assert at > 0
    return raw[:at + 1] + b"J" + struct.pack("<i", 1_000_000_000) + raw[at + 3:]


BOMBS = {
    "memo-fanout": lambda: _memo_fanout(),
    "dup-tuple-chain": lambda: P4 + b"N" + b"2\x86" * 40 + b".",
    "bytearray-3e9": lambda: P4 + _sg("builtins", "bytearray") + b"\x8a\x05" + (3 * 10 ** 9).to_bytes(5, "little")
    + b"\x85R.",
    "bytes-huge": lambda: b"\x80\x02c__builtin__\nbytes\nJ" + struct.pack("<i", 2 ** 31 - 1) + b"\x85R.",
    "list-of-huge-range": lambda: P4 + _sg("builtins", "list") + _sg("builtins", "range") + b"J"
    + struct.pack("<i", 10 ** 9) + b"\x85R\x85R.",
    "sum-of-huge-range": lambda: P4 + _sg("builtins", "sum") + _sg("builtins", "range") + b"J"
    + struct.pack("<i", 10 ** 9) + b"\x85R\x85R.",
    "legacy-storage-huge": _legacy_huge_storage,
}


@pytest.mark.parametrize("build", list(BOMBS.values()), ids=list(BOMBS))
def test_resource_exhaustion_is_a_high_finding(tmp_path, build):
    data = build()
    assert len(data) < 4096
    r = _scan(tmp_path, "bomb.pkl", data)
    assert r["verdict"] == "malicious", r["summary"]
    f = next(f for f in r["findings"] if f["rule"] == "resource-exhaustion")
    assert f["severity"] == "high"


def test_expansion_names_its_fan_out(tmp_path):
    r = _scan(tmp_path, "laughs.pkl", _memo_fanout())
    f = next(f for f in r["findings"] if f["rule"] == "resource-exhaustion")
    assert "10^12" in f["explanation"] and "13 containers" in f["explanation"]


def test_declared_size_past_the_end_is_reported_and_inconclusive(tmp_path):
    r = _scan(tmp_path, "declared.pkl", P4 + b"\x8e" + struct.pack("<Q", 3 << 30) + b"abc")
    assert r["verdict"] == "inconclusive"
    assert any(f["rule"] == "resource-exhaustion" and "declares" in f["explanation"] for f in r["findings"])


def test_shared_references_in_benign_data_are_not_an_expansion(tmp_path):
    shared = list(range(1000))
    obj = {"a": [shared] * 5000, "t": [(shared, shared)] * 2000, "r": list(range(10_000))}
    r = _scan(tmp_path, "shared.pkl", pickle.dumps(obj, protocol=4))
    assert r["verdict"] == "clean", r["summary"]


# ------------------------------------------------------------------ headerless protocol 0/1
HEADERLESS = {
    "p0-stack-global": b"S'os'\nS'system'\n\x93S'echo hi'\n\x85R.",
    "p1-binunicode-stack-global": b"X\x02\x00\x00\x00osX\x06\x00\x00\x00system\x93X\x02\x00\x00\x00hi\x85R.",
    "p0-inst": b"(S'echo hi'\nios\nsystem\n.",
}


@pytest.mark.parametrize("data", list(HEADERLESS.values()), ids=list(HEADERLESS))
def test_headerless_pickles_are_recognised_by_content(tmp_path, data):
    r = _scan(tmp_path, "noheader", data)
    assert r["verdict"] == "malicious", r["summary"]
    assert "os.system" in _names(r)
    assert list(r["formats"].values()) == ["pickle"]


def test_headerless_benign_pickle_is_clean(tmp_path):
    r = _scan(tmp_path, "p0.bin", b"S'weights'\np0\n(lp1\nI1\naI2\na\x86p2\n.")
    assert r["verdict"] == "clean", r["summary"]


# ------------------------------------------------------------------ legacy whole-model checkpoints
def _net():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


def test_legacy_whole_model_checkpoint_is_review_tier(tmp_path):
    import torch

    torch.set_num_threads(1)
    p = tmp_path / "legacy_model.pt"
    torch.save(_net(), p, _use_new_zipfile_serialization=False)
    r = scan_path(p).to_dict()
    assert r["verdict"] == "suspicious", r["summary"]
    assert {f["severity"] for f in r["findings"]} == {"low"}
    assert "torch.nn.modules.conv.Conv2d" in _names(r)


def test_legacy_module_record_naming_a_dangerous_callable_stays_malicious(tmp_path):
    import torch

    buf = io.BytesIO()
    torch.save(_net(), buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    old = b"ctorch.nn.modules.activation\nReLU\n"
    assert old in raw
    r = _scan(tmp_path, "evil_legacy.pt", raw.replace(old, b"cposix\nsystem\n", 1))
    assert r["verdict"] == "malicious" and "posix.system" in _names(r)


# ------------------------------------------------------------------ builtins
@pytest.mark.parametrize("name", ["len", "abs", "min", "max", "isinstance", "ValueError"])
def test_pure_builtins_are_not_a_finding(tmp_path, name):
    r = _scan(tmp_path, "b.pkl", P4 + _sg("builtins", name) + _u("abc") + b"\x85R.")
    assert r["verdict"] == "clean", r["summary"]


@pytest.mark.parametrize("name", ["eval", "exec", "getattr", "__import__", "open", "compile", "breakpoint", "setattr",
                                  "globals", "vars", "memoryview", "type"])
def test_dangerous_builtins_stay_critical(tmp_path, name):
    r = _scan(tmp_path, "b.pkl", P4 + _sg("builtins", name) + _u("abc") + b"\x85R.")
    assert r["verdict"] == "malicious", r["summary"]
    assert any(f["severity"] == "critical" for f in r["findings"])


# ------------------------------------------------------------------ hostile folders and containers
EVIL = pickle.dumps(type("R", (), {"__reduce__": lambda self: (os.system, ("echo hi",))})(), protocol=2)


def _hf_folder(d: Path) -> Path:
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    (d / "pytorch_model.bin").write_bytes(EVIL)
    return d


def test_symlink_loop_folder_is_malicious_end_to_end(tmp_path):
    d = _hf_folder(tmp_path / "hf")
    os.symlink("loop_b", d / "loop_a")
    os.symlink("loop_a", d / "loop_b")
    r = scan_path(d).to_dict()
    assert r["verdict"] == "malicious" and "symlink-unresolved" in _rules(r)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORKBENCH_THREADS": "1", "WORKBENCH_DB": str(tmp_path / "c.db")}
    out = subprocess.run([sys.executable, "-m", "workbench", "scan", str(d), "--json"], capture_output=True, text=True,
                         env=env, timeout=300, cwd=tmp_path)
    rep = json.loads(out.stdout)
    assert rep["verdict"] == "malicious", out.stdout[-2000:]
    assert any(e["probe"] == "load" and e["status"] == "refused" for e in rep["errors"])


def test_a_static_scan_that_crashes_never_gives_clean_nor_loads(tmp_path, monkeypatch):
    from probes.static_scan import scanner
    from workbench.scan import ScanOptions, prepare, run_scan

    d = _hf_folder(tmp_path / "hf")
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"w": [1.0]}))

    def boom(self, path):
        raise RuntimeError("scanner bug")

    monkeypatch.setattr(scanner.Scanner, "scan_path", boom)
    rep = run_scan(prepare(str(d), ScanOptions()))
    assert rep.verdict["verdict"] != "clean"
    assert any(e["probe"] == "load" and e["status"] == "refused" for e in rep.errors)


def test_fifo_in_a_folder_does_not_block(tmp_path):
    d = _hf_folder(tmp_path / "hf")
    os.mkfifo(d / "pipe.bin")
    t0 = time.monotonic()
    r = scan_path(d).to_dict()
    assert time.monotonic() - t0 < 30
    assert r["verdict"] == "malicious" and "not-regular-file" in _rules(r)
    assert any("FIFO" in n["reason"] for n in r["not_read"])


def test_a_fifo_given_as_the_path_is_inconclusive(tmp_path):
    os.mkfifo(tmp_path / "pipe.pkl")
    r = scan_path(tmp_path / "pipe.pkl").to_dict()
    assert r["verdict"] == "inconclusive" and r["not_read"]


def test_many_files_are_bounded_and_the_rest_reported(tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(300):
        (d / f"{i:04d}.pkl").write_bytes(pickle.dumps(i))
    r = scan_path(d, params={"max_files": 100}).to_dict()
    assert r["files_scanned"] == 100
    assert r["verdict"] == "inconclusive" and "200 not scanned" in r["not_read"][0]["reason"]


def test_endless_opcode_stream_stops_at_the_time_budget(tmp_path):
    data = zlib.compress(b"\x80\x02" + b"N0" * (32 << 20) + b"N.", 9)  # 64 MiB of opcodes in ~70 KB
    t0 = time.monotonic()
    r = _scan(tmp_path, "stream.joblib", data, max_seconds=0.5)
    assert time.monotonic() - t0 < 20
    assert r["verdict"] == "inconclusive"
    assert any("not fully read" in p["reason"] for p in r["inconclusive_parts"])


def _zip_of_zeros(n_members: int, member_mb: int) -> bytes:
    """A zip of ``n_members`` deflated members of ``member_mb`` MiB of zeros each (compressed once, reused)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    body = b"".join(comp.compress(chunk) for _ in range(member_mb)) + comp.flush()
    crc = 0
    for _ in range(member_mb):
        crc = zlib.crc32(chunk, crc)
    out, central = io.BytesIO(), io.BytesIO()
    for i in range(n_members):
        name = f"m{i}.bin".encode()
        off = out.tell()
        out.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(body), member_mb << 20,
                              len(name), 0) + name + body)
        central.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(body),
                                  member_mb << 20, len(name), 0, 0, 0, 0, 0, off) + name)
    cd = central.getvalue()
    return out.getvalue() + cd + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n_members, n_members, len(cd),
                                             out.tell(), 0)


def test_zip_of_big_deflated_members_is_bounded_in_bytes_and_memory(tmp_path):
    data = _zip_of_zeros(8, 64)
    assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    tracemalloc.start()
    r = _scan(tmp_path, "zeros.zip", data, max_total_decompressed_mb=128)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 << 20, peak  # streamed: never a whole 64 MiB member (or the 512 MiB total) in memory
    assert r["verdict"] == "inconclusive"
    assert any("decompression budget" in n["reason"] for n in r["not_read"])


def test_zip_declaring_gigabytes_over_a_kilobyte_is_reported(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(4):
            z.writestr(f"w{i}.bin", b"\x01" * 200)
    raw = bytearray(buf.getvalue())
    big = 2_684_354_560  # 2.5 GiB each: 10 GiB declared in about 1 KiB
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = 0
        while (pos := raw.find(sig, pos)) >= 0:
            struct.pack_into("<I", raw, pos + off, big)
            pos += 4
    r = _scan(tmp_path, "declared.zip", bytes(raw))
    assert len(raw) < 2048
    assert r["verdict"] != "clean"
    hits = [f for f in r["findings"] if f["rule"] == "archive-declared-size"]
    assert hits and any(f["member"] is None and "10,737,418,240" in f["explanation"] for f in hits)


def test_multistream_bz2_joblib_is_read_to_the_end(tmp_path):
    pk = pickle.dumps({"w": list(range(100))}, protocol=2) + EVIL  # a benign pickle, then a payload after STOP
    data = bz2.compress(pk[:40]) + bz2.compress(pk[40:])  # split over two streams, as appended writes leave it
    assert bz2.BZ2File(io.BytesIO(data)).read() == pk
    r = _scan(tmp_path, "multi.joblib", data)
    assert r["verdict"] == "malicious", r["summary"]
    assert "posix.system" in _names(r)


def test_torch_zip_calling_bytearray_3e9_is_refused_before_loading(tmp_path):
    from probes.errors import UnsafeModelError
    from probes.subjects.loader import load_subject

    pk = b"\x80\x02c__builtin__\nbytearray\n\x8a\x05" + (3 * 10 ** 9).to_bytes(5, "little") + b"\x85R."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pk)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/byteorder", "little")
    assert len(buf.getvalue()) < 500
    p = tmp_path / "bomb.pt"
    p.write_bytes(buf.getvalue())
    r = scan_path(p).to_dict()
    assert r["verdict"] == "malicious" and "resource-exhaustion" in _rules(r)
    with pytest.raises(UnsafeModelError, match="refused before loading"):
        load_subject(p)


def test_invalid_utf8_in_one_member_does_not_stop_the_scan_of_the_next(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.bin", b"\x00\x01junk" + b"\x8c\x05A\xff\xfe\xfd\xfc" + b"\x00" * 8)  # a SHORT_BINUNICODE start
        z.writestr("b.pkl", EVIL)
    r = _scan(tmp_path, "two.zip", buf.getvalue())
    assert r["verdict"] == "malicious" and "posix.system" in _names(r), r["summary"]


def test_self_referencing_structures_are_sized_once_and_clean(tmp_path):
    loop: list = []
    loop.append(loop)
    d: dict = {"a": loop}
    d["self"] = d
    r = _scan(tmp_path, "cycles.pkl", pickle.dumps([d] * 40 + [loop] * 40, protocol=4))
    assert r["verdict"] == "clean", r["summary"]


def test_symlinked_folder_is_reported_not_entered(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.pkl").write_bytes(EVIL)
    d = _hf_folder(tmp_path / "hf")
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"w": [1.0]}))
    os.symlink(outside, d / "extra")
    r = scan_path(d).to_dict()
    assert "symlink-folder" in _rules(r) and r["verdict"] == "suspicious", r["summary"]


def test_compressed_npz_data_is_streamed_not_held(tmp_path):
    import numpy as np

    p = tmp_path / "big.npz"
    np.savez_compressed(p, w=np.zeros(16 << 20, dtype=np.float32), b=np.arange(10))  # 64 MiB of zeros, ~70 KB
    tracemalloc.start()
    r = scan_path(p).to_dict()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert r["verdict"] == "clean", r["summary"]
    assert peak < 24 << 20, peak
    evil = tmp_path / "evil.npz"
    np.savez_compressed(evil, w=np.zeros(1000, dtype=np.float32),
                        o=np.array([type("R", (), {"__reduce__": lambda self: (os.system, ("echo hi",))})()],
                                   dtype=object))
    r = scan_path(evil).to_dict()
    assert r["verdict"] == "malicious" and "posix.system" in _names(r)


def test_the_tail_of_a_big_deflated_member_is_read(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("model/data.pkl", pickle.dumps(bytes(64 << 20), protocol=4) + EVIL)  # payload in the last bytes
    r = _scan(tmp_path, "tail.zip", buf.getvalue())
    assert r["verdict"] == "malicious" and "posix.system" in _names(r), r["summary"]


def test_a_pickle_wearing_a_gguf_magic_in_a_model_folder_is_read(tmp_path):
    d = _hf_folder(tmp_path / "hf")
    # 'G' is BINFLOAT: 'GGUF' + 5 bytes is a float, then a protocol-0 payload torch.load's legacy path would run
    (d / "pytorch_model.bin").write_bytes(b"GGUF\x03\x00\x00\x00\x00" + b"0" + b"cposix\nsystem\n(S'echo hi'\ntR.")
    r = scan_path(d).to_dict()
    assert r["verdict"] == "malicious" and "posix.system" in _names(r), r["summary"]
    import gguf  # a real GGUF file beside it stays an inert side file

    w = gguf.GGUFWriter(str(d / "model.gguf"), "llama")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    r = scan_path(d / "model.gguf").to_dict()
    assert not any(f["severity"] in ("critical", "high") for f in r["findings"]), r["summary"]
