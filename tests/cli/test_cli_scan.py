"""`workbench scan` end to end: JSON contract, exit codes, SARIF, case recording, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from casefiles import CaseStore
from tests.cli.helpers import wb

pytestmark = pytest.mark.xdist_group("digits")


def test_static_scan_of_a_booby_trapped_pickle(booby_trapped, tmp_path):
    r = wb("scan", booby_trapped, "--probes", "static", "--json", "--fail-on", "high", "--sarif", tmp_path / "s.sarif")
    assert r.code == 1, r.err  # the --fail-on threshold was met
    out = json.loads(r.out)
    assert set(out) >= {"subject", "results", "trust"}
    assert set(out["subject"]) >= {"path", "sha256", "format", "kind"}
    static = out["results"][0]
    assert static["probe"] == "static" and static["verdict"] == "malicious"
    assert any(f["module"] in ("os", "posix") and f["name"] == "getpid" for f in static["findings"])
    assert out["trust"]["band"] == "high"
    sarif = json.loads((tmp_path / "s.sarif").read_text())
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]


def test_static_scan_refuses_to_load_what_it_flagged(booby_trapped):
    r = wb("scan", booby_trapped, "--json")  # default layered scan: static first, then load
    out = json.loads(r.out)
    assert r.code == 0
    assert [res["probe"] for res in out["results"]] == ["static"]
    assert any(e["probe"] == "load" and "refused" in e["error"] for e in out["errors"])


def test_layered_scan_finds_the_backdoor_and_records_runs(digits_subjects, tmp_path):
    db = tmp_path / "cases.db"
    assert wb("case", "new", "vendor", "--db", db).code == 0
    r = wb("scan", digits_subjects["backdoored"], "--data", digits_subjects["data"], "--probes",
           "static,neural-cleanse,strip", "--case", "1", "--db", db, "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    by_probe = {res["probe"]: res for res in out["results"]}
    assert by_probe["static"]["verdict"] == "clean"
    nc = by_probe["neural-cleanse"]
    assert nc["verdict"] == "backdoored" and nc["anomaly_index"] > 2 and nc["suspected_target"] == 0
    assert out["subject"]["kind"] == "image-classifier"
    assert out["trust"]["band"] in ("medium", "high")
    with CaseStore(db) as s:
        runs = s.list_runs(case_id=1)
        assert [r["probe"] for r in runs] == ["static", "neural-cleanse", "strip"]
        assert all(r["status"] == "done" for r in runs)
        assert s.list_subjects(1)[0]["kind"] == "image-classifier"
        assert {a["name"] for a in s.list_artifacts(case_id=1)} >= {"mask.npy"}
        assert s.verify(1).ok


def test_clean_model_scans_clean(digits_subjects):
    r = wb("scan", digits_subjects["clean"], "--data", digits_subjects["data"], "--probes", "neural-cleanse",
           "--json", "--fail-on", "medium")
    assert r.code == 0, r.err
    assert json.loads(r.out)["results"][0]["verdict"] == "clean"


def test_state_dict_needs_its_architecture(digits_subjects):
    sd = digits_subjects["state_dict"]
    r = wb("scan", sd, "--probes", "neural-cleanse", "--data", digits_subjects["data"], "--json")
    assert r.code == 2 and "--arch" in r.err
    arch = json.loads(sd.with_suffix(".json").read_text())["arch"]
    r = wb("scan", sd, "--probes", "neural-cleanse", "--data", digits_subjects["data"], "--arch", arch, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["results"][0]["suspected_target"] == 0


# -- bad input -----------------------------------------------------------------------------------
def _bad(tmp_path, name, arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


@pytest.mark.parametrize("make_args,needle", [
    (lambda d, t: ["/no/such/model.pt"], "no such file"),
    (lambda d, t: [d["backdoored"], "--probes", "nonsense"], "unknown probe"),
    (lambda d, t: [d["backdoored"], "--data", t / "missing.npz"], "not found"),
    (lambda d, t: [d["backdoored"], "--data", _bad(t, "noy.npz", {"x": np.zeros((4, 1, 16, 16), np.float32)})], "'x' and 'y'"),
    (lambda d, t: [d["backdoored"], "--probes", "neural-cleanse", "--data",
                   _bad(t, "rgb.npz", {"x": np.zeros((8, 3, 9, 9), np.float32), "y": np.zeros(8, np.int64)})], "shape"),
    (lambda d, t: [d["backdoored"], "--fail-on", "extreme"], "--fail-on"),
    (lambda d, t: [d["backdoored"], "--arch", "nocolon"], "--arch"),
    (lambda d, t: [d["backdoored"], "--case", "99"], "no case with id 99"),
    (lambda d, t: [d["backdoored"], "--case", "1", "--param", "asr_window=0"], "asr_window=0 is out of range"),
    (lambda d, t: [d["backdoored"], "--case", "1", "--probes", "neural-cleanse", "--data", d["data"],
                   "--param", "recheck_margin=NaN"], "recheck_margin must be finite"),
    (lambda d, t: [d["backdoored"], "--case", "1", "--param", "steps=\"many\""], "steps must be an integer"),
    (lambda d, t: [d["backdoored"], "--case", "1", "--probes", "spectral", "--audit", d["audit"],
                   "--param", "n_directions=0"], "n_directions=0 is out of range"),
    (lambda d, t: [d["backdoored"], "--case", "1", "--probes", "activation-clustering", "--audit", d["audit"],
                   "--param", "reduce=tsne"], "reduce must be"),
])
def test_bad_scan_input_exits_2_and_writes_nothing(digits_subjects, tmp_path, make_args, needle):
    db = tmp_path / "cases.db"
    wb("case", "new", "x", "--db", db)
    r = wb("scan", *make_args(digits_subjects, tmp_path), "--db", db)
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1 and needle in r.err, r.err
    with CaseStore(db) as s:
        assert s.list_runs(case_id=1) == [] and s.list_subjects(1) == []


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04" + b"\x00" * 40, b"\x80\x04\x95garbage"])
def test_hostile_or_truncated_files_get_a_one_line_error(tmp_path, content):
    bad = tmp_path / "suspect.pt"
    bad.write_bytes(content)
    r = wb("scan", bad, "--json")
    assert r.code in (0, 2), r.err
    if r.code == 0:  # the static scan still reports (fail closed: never "clean")
        out = json.loads(r.out)
        assert out["results"][0]["verdict"] in ("inconclusive", "malicious", "suspicious")
        if out["results"][0]["verdict"] == "inconclusive":  # what a static read cannot settle, a watched load may
            assert [o["probe"] for o in out["offers"]] == ["dynamic"]
    else:
        assert r.err.count("\n") == 1
    assert "Traceback" not in r.err
