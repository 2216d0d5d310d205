"""Fail-closed behaviour, hostile containers, the probe contract and SARIF output of the static scan."""

from __future__ import annotations

import io
import json
import pickle
import random
import struct
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from probes.context import context_for
from probes.errors import Cancelled, ProbeError
from probes.registry import get
from probes.static_scan import run, scan_path
from probes.static_scan.pickle_sim import PickleSim
from probes.static_scan.sarif import to_sarif

EVIL = b"\x80\x02cposix\nsystem\n(X\x04\x00\x00\x00truetR."


def _scan(tmp_path, name, data, **params):
    p = tmp_path / name
    p.write_bytes(data)
    return scan_path(p, params=params).to_dict()


def _sim(data: bytes):
    out = []
    sim = PickleSim(data, 0, len(data), emit=out.append)
    sim.run()
    return out


# ------------------------------------------------------------------ fail closed
@pytest.mark.parametrize("name,data", [
    ("random.bin", bytes(random.Random(1).getrandbits(8) for _ in range(3000)).replace(b"\x80", b"\x81")),
    ("truncated.pkl", pickle.dumps({"a": list(range(50))})[:-7]),
    ("truncated.zip", b"PK\x03\x04" + b"\x00" * 60),
    ("bad_header.safetensors", struct.pack("<Q", 20) + b"{not json at all!!!}" + b"\x00" * 8),
    ("proto9.pkl", b"\x80\x09K\x01."),
    ("empty.pt", b""),
])
def test_unparseable_is_inconclusive_never_clean(tmp_path, name, data):
    r = _scan(tmp_path, name, data)
    assert r["verdict"] == "inconclusive", r["summary"]
    assert r["inconclusive_parts"]


def test_payload_before_a_parse_error_still_counts(tmp_path):
    # the unpickler executes REDUCE before it reaches the garbage
    r = _scan(tmp_path, "half.pkl", EVIL[:-1] + b"\xff\xff")
    assert r["verdict"] == "malicious"
    assert any(f["module"] == "posix" and f["name"] == "system" for f in r["findings"])


def test_decompression_bomb_is_capped(tmp_path):
    bomb = zlib.compress(b"\x00" * (8 << 20), 9)
    r = _scan(tmp_path, "bomb.joblib", bomb, max_decompressed_mb=1)
    assert r["verdict"] == "inconclusive"
    assert any(f["rule"] == "decompression-cap" for f in r["findings"])


def test_safetensors_structure(tmp_path):
    def st(header: dict, data: bytes, extra: bytes = b"") -> bytes:
        h = json.dumps(header).encode()
        return struct.pack("<Q", len(h)) + h + data + extra

    good = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}}
    assert _scan(tmp_path, "ok.safetensors", st(good, b"\x00" * 12))["verdict"] == "clean"
    overlap = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}}
    r = _scan(tmp_path, "overlap.safetensors", st(overlap, b"\x00" * 8))
    assert r["verdict"] == "suspicious" and any("overlaps" in f["explanation"] for f in r["findings"])
    past = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    r = _scan(tmp_path, "past.safetensors", st(past, b"\x00" * 8))
    assert any("past the end" in f["explanation"] for f in r["findings"])
    r = _scan(tmp_path, "tail.safetensors", st(good, b"\x00" * 12, EVIL))
    assert r["verdict"] == "malicious" and any(f["name"] == "system" for f in r["findings"])
    assert r["formats"] and list(r["formats"].values()) == ["safetensors"]


def test_zip_encrypted_flag_and_duplicates(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
        z.writestr("archive/data.pkl", EVIL)
    raw = bytearray(buf.getvalue())
    r = _scan(tmp_path, "dup.pt", bytes(raw))
    assert r["verdict"] == "malicious"
    assert any(f["rule"] == "archive-duplicate" for f in r["findings"])
    # set the encrypted bit on every record over plaintext: a lenient reader may still load it -> read and scanned
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = 0
        while (pos := raw.find(sig, pos)) >= 0:
            raw[pos + off] |= 1
            pos += 4
    r = _scan(tmp_path, "enc.pt", bytes(raw))
    assert r["verdict"] == "malicious" and any(f["rule"] == "archive-encrypted-flag" for f in r["findings"])
    assert any(f["name"] == "system" for f in r["findings"])
    # really encrypted (the data no longer matches its CRC): content is unknowable -> inconclusive (not clean)
    for pkl in (pickle.dumps({"a": 1}), EVIL):
        at = raw.find(pkl)
        raw[at:at + len(pkl)] = bytes(c ^ 0x5A for c in pkl)
    r = _scan(tmp_path, "enc2.pt", bytes(raw))
    assert r["verdict"] == "inconclusive" and any(f["rule"] == "archive-encrypted" for f in r["findings"])


def test_getattr_through_memo_and_builtins_variants():
    # getattr(__import__('os'), 'sys' + 'tem') with the name built by operator.add and stored in the memo
    data = (b"\x80\x04\x8c\x08operator\x8c\x03add\x93\x8c\x03sys\x8c\x03tem\x86R\x94"
            b"\x8c\x08builtins\x8c\x07getattr\x93\x8c\x08builtins\x8c\n__import__\x93\x8c\x02os\x85R"
            b"h\x00\x86R\x8c\x04true\x85R.")
    found = _sim(data)
    assert any(f["module"] == "os" and f["name"] == "system" for f in found), found


def test_allowlisted_rebuild_is_clean_but_its_callable_argument_is_not():
    ok = b"\x80\x02ccollections\nOrderedDict\n)R."
    assert _sim(ok) == []
    bad = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(cmymod\nhelper\nctorch\nTensor\n)}tR."
    found = _sim(bad)
    assert [(f["module"], f["name"], f["severity"]) for f in found] == [("mymod", "helper", "high")]
    review = b"\x80\x02cmymod\nNet\n)\x81}b."
    assert [f["severity"] for f in _sim(review)] == ["medium"]


# ------------------------------------------------------------------ robustness
def test_mutated_files_never_crash_the_scanner(tmp_path):
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    legacy = io.BytesIO()
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    npy = io.BytesIO()
    np.save(npy, np.arange(5))
    seeds = [buf.getvalue(), legacy.getvalue(), npy.getvalue(), pickle.dumps({"a": [1, 2, (3, b"x")]}, protocol=4),
             zlib.compress(pickle.dumps(list(range(30)))), EVIL]
    rng = random.Random(0)
    p = tmp_path / "m.bin"
    for _ in range(240):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            k = rng.randrange(len(data))
            if rng.random() < 0.2:
                del data[k:k + rng.randint(1, 20)]
            else:
                data[k] = rng.randrange(256)
            if not data:
                data = bytearray(b"x")
        p.write_bytes(bytes(data))
        r = scan_path(p).to_dict()
        assert r["verdict"] in {"clean", "suspicious", "malicious", "inconclusive"}
        json.dumps(r)


# ------------------------------------------------------------------ probe contract
def test_registry_run_progress_cancel_and_params(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(EVIL)
    fn = get("static").load()
    assert fn is run
    seen = []
    r = fn(str(p), context_for("static", {"seed": 3}, on_progress=seen.append))
    d = r.to_dict()
    assert d["probe"] == "static" and d["verdict"] == "malicious" and d["score"] == 1.0
    assert d["params"]["seed"] == 3 and "max_decompressed_mb" in d["params"]
    assert seen and seen[-1].done == seen[-1].total and seen[-1].unit == "files"
    assert d["files_scanned"] == 1 and isinstance(d["findings"], list)
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        run(str(tmp_path), context_for("static", cancel=ev))
    with pytest.raises(ProbeError):
        run(str(tmp_path / "missing.pt"), context_for("static"))
    for bad in (-1, float("nan"), "lots"):
        with pytest.raises(ProbeError, match="max_decompressed_mb"):
            context_for("static", {"max_decompressed_mb": bad})


def test_sarif_2_1_0(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", EVIL)
    p = tmp_path / "x.pt"
    p.write_bytes(buf.getvalue())
    q = tmp_path / "junk.bin"
    q.write_bytes(b"\x00\x01garbage")
    results = [scan_path(p).to_dict(), scan_path(q).to_dict(), {"probe": "strip", "verdict": "clean"}]
    log = to_sarif(results)
    json.dumps(log)
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    run_ = log["runs"][0]
    rules = [r["id"] for r in run_["tool"]["driver"]["rules"]]
    res = [r for r in run_["results"] if r["ruleId"] == "dangerous-callable"]
    assert res and res[0]["level"] == "error"
    loc = res[0]["locations"][0]["physicalLocation"]
    art = run_["artifacts"][loc["artifactLocation"]["index"]]
    assert art["location"]["uri"] == "archive/data.pkl"
    assert run_["artifacts"][art["parentIndex"]]["location"]["uri"] == p.as_uri()
    assert loc["region"]["byteOffset"] == EVIL.index(b"cposix")
    for r in run_["results"]:
        assert rules[r["ruleIndex"]] == r["ruleId"]
    assert any(r["ruleId"] == "inconclusive" for r in run_["results"])


def test_joblib_array_bytes_are_also_read_as_plain_pickle_opcodes(tmp_path):
    # To joblib the 22 bytes after the wrapper's BUILD are a uint8 array; to plain pickle.load they are
    # an os.system call. Both readings must be checked.
    hidden = b"cposix\nsystem\n(X\x01\x00\x00\x00xtR0"
    wrapper = (b"\x80\x04}\x8c\x01w\x8c\x13joblib.numpy_pickle\x8c\x11NumpyArrayWrapper\x93)\x81}("
               b"\x8c\x05shape" + b"K" + bytes([len(hidden)]) + b"\x85"
               b"\x8c\x05dtype\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02u1\x89\x88\x87Rub")
    data = wrapper + hidden + b"s."
    r = _scan(tmp_path, "trick.joblib", data)
    assert r["verdict"] == "malicious", r["summary"]
    f = [x for x in r["findings"] if x["name"] == "system"]
    assert f and "plain pickle.load" in f[0]["explanation"] and f[0]["offset"] == len(wrapper)


def test_real_benign_files_shipped_with_installed_packages_are_not_malicious():
    """numpy's and joblib's own test pickles (Python 2 strings and longs, pre-1.0 numpy names,
    joblib 0.9/0.10 formats, compressed variants) must parse and must not be called malicious."""
    import joblib

    roots = [Path(np.__file__).parent / "lib" / "tests" / "data", Path(joblib.__file__).parent / "test" / "data"]
    files = [f for r in roots if r.is_dir() for f in sorted(r.iterdir())
             if f.suffix in (".npy", ".npz", ".pkl", ".gzip", ".bz2", ".xz", ".lzma", ".z", ".gz")]
    if len(files) < 10:
        pytest.skip("package test data not installed")
    verdicts = {f.name: scan_path(f).verdict for f in files}
    assert not [n for n, v in verdicts.items() if v == "malicious"], verdicts
    assert not [n for n, v in verdicts.items() if v == "inconclusive"], verdicts


def test_memo_amplification_and_in_pickle_cancel_are_bounded():
    import time

    # a 20,000-item list stored once in the memo, then handed to an allowlisted helper 20,000 times
    big = b"(" + b"K\x01" * 20000 + b"l\x94"
    calls = (b"ctorch._utils\n_rebuild_tensor_v2\n\x94" + b"0"
             + (b"h\x01h\x00\x85R0" * 20000))
    data = b"\x80\x04" + big + calls + b"N."
    t0 = time.perf_counter()
    assert _sim(data) == []
    assert time.perf_counter() - t0 < 10
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        PickleSim(data, 0, len(data), emit=lambda f: None, cancel=ev).run()


def test_a_safetensors_file_whose_header_is_128_bytes_is_not_read_as_a_pickle(tmp_path):
    """Its length prefix starts 0x80 0x00 (PROTO 0 to a pickle reader); the JSON header at byte 8 decides."""
    import json
    import struct

    from probes.static_scan import scan_path

    data = b"\0" * 16
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    header += b" " * (128 - len(header))
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + data)
    assert p.read_bytes()[:2] == b"\x80\x00"
    r = scan_path(p).to_dict()
    assert r["verdict"] == "clean", r["summary"]
