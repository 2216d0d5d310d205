"""The opt-in ``dynamic`` probe: suspect files are loaded only in the sealed child, never here.

One warm zygote and one benign baseline serve the whole module (started on first use).
The test process itself never unpickles a malicious file: a fixture makes every
unpickling entry point in this process raise while the probe runs.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
from pathlib import Path

import joblib.numpy_pickle  # noqa: F401  (imported before the no-unpickling guard swaps pickle's classes)
import joblib.numpy_pickle_compat  # noqa: F401
import pytest

from corpora import dynamic_payloads as payloads
from probes.context import context_for
from probes.dynamic_load import choose_loader, offer_after_static, run, sandbox
from probes.errors import Cancelled, ProbeError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("dynamic")
    markers = root / "markers"
    markers.mkdir()
    return {
        "payloads": {p.name: p for p in payloads.build_payloads(root / "payloads", markers)},
        "benign": payloads.build_benign_samples(root / "benign"),
        "root": root,
    }


@pytest.fixture(autouse=True)
def no_unpickling_here(monkeypatch):
    """Any unpickling in the test (parent) process is a test failure."""
    def boom(*a, **k):
        raise AssertionError("the parent process tried to unpickle")

    class NoUnpickler:
        def __init__(self, *a, **k):
            boom()

    for name in ("load", "loads", "_load", "_loads"):
        monkeypatch.setattr(pickle, name, boom)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    monkeypatch.setattr(pickle, "_Unpickler", NoUnpickler)
    yield


def probe(path, **params):
    return run(str(path), context_for("dynamic", params))


def refused_events(res):
    return [r["event"] for r in res.details["refused"]]


def test_benign_files_are_clean_and_isolated(files):
    for path, loader in files["benign"]:
        res = probe(path)
        assert res.verdict == "clean", (path.name, res.summary, res.details["files"][0]["ocsvm"])
        assert res.details["refused"] == []
        assert res.details["child"]["load_ok"] and res.details["child"]["exit_code"] == 0
        assert res.details["files"][0]["loader"] == loader
    iso = res.details["isolation"]
    assert iso["audit_hook"] is True and iso["python_flags"] == "-I -S -B"
    assert "network" in iso and "netns" in iso and "mountns_readonly" in iso
    json.dumps(res.to_dict())  # JSON all the way


@pytest.mark.parametrize("name", ["open-write", "logging-filehandler", "pathlib-write-text", "exec-string"])
def test_file_write_is_recorded_and_blocked(files, name):
    p = files["payloads"][name]
    res = probe(p.path)
    assert res.verdict == "malicious" and res.score == 1.0
    assert p.event in refused_events(res), res.details["refused"]
    assert any(str(p.marker) in json.dumps(r["args"]) for r in res.details["refused"])
    assert not p.marker.exists(), "the payload's marker file must not exist afterwards"


def test_socket_is_recorded_and_blocked(files):
    res = probe(files["payloads"]["socket-connect"].path)
    assert res.verdict == "malicious"
    assert any(e.startswith("socket.") for e in refused_events(res))
    assert res.details["refused"][0]["reason"] == "network"


@pytest.mark.parametrize("name", ["os-system", "subprocess-popen", "eval-getpid"])
def test_spawn_and_code_execution_refused(files, name):
    p = files["payloads"][name]
    res = probe(p.path)
    assert res.verdict == "malicious"
    assert p.event in refused_events(res)
    if p.marker is not None:
        assert not p.marker.exists()


def test_layered_scan_offers_dynamic_after_a_review_tier_static_scan(tmp_path):
    """A review-tier pickle: the static scan cannot settle it, so the scan names the next step."""
    from tests.cli.helpers import wb

    review = tmp_path / "vendor model.pkl"
    review.write_bytes(b"\x80\x02cvendorlib.models\nNet\n)\x81}b.")
    r = wb("scan", review, "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["results"][0]["verdict"] == "suspicious"
    assert [o["probe"] for o in out["offers"]] == ["dynamic"]
    assert out["offers"][0]["command"] == f"workbench scan '{review}' --probes dynamic"
    human = wb("scan", review)
    assert "Next: the static scan found imports to review" in human.out
    clean = tmp_path / "plain.pkl"
    clean.write_bytes(b"\x80\x04]\x94(K\x01K\x02e.")
    assert json.loads(wb("scan", clean, "--json").out)["offers"] == []
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"\x80\x02cos\ngetpid\n)R.")
    assert json.loads(wb("scan", evil, "--json").out)["offers"] == []  # refused outright, nothing to watch


def test_payload_on_no_denylist_caught_by_behaviour(files):
    # logging.FileHandler and pathlib.Path.write_text appear on no scanner's denylist.
    for name in ("logging-filehandler", "pathlib-write-text"):
        res = probe(files["payloads"][name].path)
        assert res.verdict == "malicious", res.summary
        assert res.details["refused"][0]["reason"] == "write outside the sandbox"


def test_import_of_a_module_shipped_beside_the_model_is_refused(files):
    p = files["payloads"]["sidecar-import"]
    res = probe(p.path)
    assert res.verdict == "malicious"
    assert res.details["refused"][0]["reason"] == "code file read from outside the trusted library paths"
    assert not p.marker.exists()


def test_harmless_getpid_payload_is_suspicious_with_the_call_as_evidence(files):
    res = probe(files["payloads"]["os-getpid"].path)
    assert res.verdict == "suspicious", res.summary
    assert "posix.getpid" in res.details["files"][0]["unfamiliar_calls"]


def test_forged_trace_lines_cannot_pose_as_the_sandbox(files):
    res = probe(files["payloads"]["forge-trace"].path)
    assert res.verdict in ("suspicious", "malicious"), res.summary
    assert "posix.write" in res.details["files"][0]["unfamiliar_calls"]
    # the parent waited for the real end of the job and is still in step with the zygote
    assert res.details["child"]["exit_code"] == 0
    assert probe(files["benign"][0][0]).verdict == "clean"


def test_hang_is_killed_at_the_timeout_and_parent_goes_on(files):
    t = time.perf_counter()
    res = probe(files["payloads"]["hang-spin"].path, timeout_s=1.5)
    took = time.perf_counter() - t
    assert res.verdict == "suspicious"
    assert res.details["child"]["timed_out"] and res.details["child"]["signal"] == "SIGKILL"
    assert took < 6
    after = probe(files["benign"][0][0])
    assert after.verdict == "clean"


def test_memory_limit_is_reported(files):
    res = probe(files["payloads"]["memory-bomb"].path, memory_mb=256)
    assert res.verdict == "suspicious"
    assert any("memory limit" in x for x in res.details["files"][0]["limits"]), res.details["files"][0]


def test_crash_is_reported_and_parent_goes_on(files):
    res = probe(files["payloads"]["crash-segv"].path)
    assert res.verdict == "suspicious"
    assert res.details["child"]["signal"] == "SIGSEGV"
    assert probe(files["benign"][1][0]).verdict == "clean"


def test_cancel_kills_the_child_and_raises(files):
    cancel = threading.Event()
    threading.Timer(0.8, cancel.set).start()
    t = time.perf_counter()
    with pytest.raises(Cancelled):
        run(str(files["payloads"]["hang-spin"].path), context_for("dynamic", {"timeout_s": 30}, cancel=cancel))
    assert time.perf_counter() - t < 6
    assert probe(files["benign"][0][0]).verdict == "clean"


def test_folder_subject_reports_the_worst_file(files, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "a.pt").write_bytes(files["benign"][0][0].read_bytes())
    (folder / "b.pkl").write_bytes(files["payloads"]["os-system"].path.read_bytes())
    (folder / "notes.txt").write_text("hello")
    res = probe(folder)
    assert res.verdict == "malicious"
    assert {Path(f["file"]).name for f in res.details["files"]} == {"a.pt", "b.pkl"}
    assert res.details["refused"][0]["file"].endswith("b.pkl")


def test_params_recorded_and_bad_params_refused(files):
    res = probe(files["benign"][0][0], timeout_s=10, seed=3)
    d = res.to_dict()
    assert d["params"]["timeout_s"] == 10 and d["params"]["seed"] == 3 and d["params"]["loader"] == "auto"
    with pytest.raises(ProbeError):
        probe(files["benign"][0][0], loader="dill")
    with pytest.raises(ProbeError):
        probe(files["root"] / "missing.pkl")


def test_offered_after_an_inconclusive_or_review_tier_static_scan():
    assert offer_after_static({"verdict": "inconclusive", "findings": []})
    assert offer_after_static({"verdict": "suspicious", "findings": [{"severity": "medium"}]})
    assert not offer_after_static({"verdict": "clean", "findings": []})
    assert not offer_after_static({"verdict": "malicious", "findings": [{"severity": "critical"}]})
    assert not offer_after_static(None)


def test_load_that_stops_at_a_missing_module_is_inconclusive_not_suspicious(tmp_path):
    # a whole-model pickle of the vendor's own class: the owner's code is not here, so nothing can be watched
    p = tmp_path / "vendor_model.pkl"
    p.write_bytes(b"\x80\x02cvendorlib_not_installed.models\nNet\n)\x81}b.")
    res = probe(p)
    assert res.verdict == "inconclusive", res.summary
    assert "owner's code" in res.summary and "vendorlib_not_installed" in res.summary


def test_loader_choice_is_by_content(files, tmp_path):
    by_name = {p.name: p for p in files["payloads"].values()}
    assert choose_loader(by_name["open-write"].path) == "torch"
    assert choose_loader(by_name["logging-filehandler"].path) == "joblib"
    assert choose_loader(by_name["os-system"].path) == "pickle"
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(by_name["open-write"].path.read_bytes())
    assert choose_loader(renamed) == "torch"
    st = tmp_path / "x.safetensors"
    st.write_bytes(b"\x0c\x00\x00\x00\x00\x00\x00\x00{\"a\":\"b\"}   ")
    assert probe(st).verdict == "inconclusive"


def test_baseline_cache_is_json_not_pickle(files):
    from probes.dynamic_load import model

    probe(files["benign"][0][0])
    cached = list(model.cache_dir().glob("baseline-*.json"))
    if cached:  # written on the first training in this process's cache dir
        data = json.loads(cached[0].read_text())
        assert data["features"] and len(data["X"]) >= 30


def test_os_layers_hold_even_without_the_audit_hook(files):
    """Defence in depth: with the hook switched off, the read-only mount namespace and the network
    namespace still stop the write and the connection (when the system allows namespaces)."""
    z = sandbox.get_zygote()
    iso = z.isolation
    if not (iso.get("mountns_readonly") and iso.get("netns")):
        pytest.skip(f"namespaces unavailable here: {iso}")
    assert iso.get("capabilities_dropped") is True
    p = files["payloads"]["open-write"]
    with z.lock:
        tr = z.run_job(str(p.path), "torch", timeout_s=20, cpu_s=20, memory_mb=1024, audit_hook=False)
    assert "Read-only file system" in (tr.done or {}).get("error", ""), tr.done
    assert not p.marker.exists()
    with z.lock:
        tr = z.run_job(str(files["payloads"]["socket-connect"].path), "pickle", timeout_s=20, cpu_s=20,
                       memory_mb=1024, audit_hook=False)
    err = (tr.done or {}).get("error", "")
    assert "unreachable" in err or "refused" in err.lower() or "Cannot assign" in err, err


def test_cli_scan_with_the_dynamic_probe(files, tmp_path):
    """`workbench scan FILE --probes dynamic --json` end to end (the baseline is handed over as JSON)."""
    from probes.dynamic_load import model
    from tests.cli.helpers import wb

    probe(files["benign"][0][0])  # make sure this process has the baseline
    base = next(iter(model._MEMO.values()))
    cache = tmp_path / "cache"
    (cache / "dynamic-load").mkdir(parents=True, exist_ok=True)
    (cache / "dynamic-load" / f"baseline-{base.key}.json").write_text(json.dumps(base.to_json()))
    p = files["payloads"]["os-system"]
    r = wb("scan", p.path, "--probes", "dynamic", "--json", "--fail-on", "high",
           env={"WORKBENCH_CACHE": str(cache), "WORKBENCH_DB": str(tmp_path / "case.db")})
    assert r.code == 1, r.err
    out = json.loads(r.out)
    dyn = out["results"][0]
    assert dyn["probe"] == "dynamic" and dyn["verdict"] == "malicious"
    assert dyn["refused"][0]["event"] == "os.system" and dyn["baseline"]["loads"] >= 30
    assert not p.marker.exists()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    mod = pytest.importorskip("corpora.payload_corpus")
    dest = tmp_path_factory.mktemp("corpus")
    return dest, mod.build_corpus(dest)


def test_static_corpus_every_load_time_payload_caught(corpus):
    dest, entries = corpus
    missed, flagged, never_ran = [], [], []
    for e in entries:
        res = probe(e.path, timeout_s=10)
        if e.label == "malicious" and e.executes_at_load and res.verdict not in ("malicious", "suspicious"):
            f = res.details["files"][0] if res.details["files"] else {}
            if res.verdict == "inconclusive" and not f.get("unfamiliar_calls") and not f["child"]["load_ok"]:
                # this environment's loader gives up before reaching the payload (e.g. torch 2.13 on a
                # hand-built pre-1.0 tar, numpy 2 without numpy.core.umath._ufunc_reconstruct)
                never_ran.append(Path(e.path).name)
            else:
                missed.append((e.family, res.summary))
        if e.label == "malicious" and e.executes_at_load and res.verdict == "malicious":
            assert res.details["refused"][0]["event"], e.family  # caught with the event that gave it away
        if e.label == "benign" and res.verdict in ("malicious", "suspicious"):
            flagged.append((Path(e.path).name, res.summary))
    assert not missed, missed
    assert not flagged, flagged
    assert len(never_ran) <= 3, never_ran
    assert not list(Path(dest).rglob("PWNED")), "a corpus payload's marker appeared"


def test_without_namespaces_the_hook_still_refuses(files):
    # A light zygote (no preloads) with both namespaces off: only the audit hook stands in the way.
    z = sandbox.Zygote(preload=(), netns=False, readonly_fs=False)
    try:
        assert z.isolation["netns"] is False and z.isolation["network"] == "audit-hook refusal only"
        with z.lock:
            tr = z.run_job(str(files["payloads"]["socket-connect"].path), "pickle", timeout_s=20, cpu_s=20,
                           memory_mb=1024, preload=())
        refused = [e for e in tr.events if e.get("r")]
        assert refused and refused[0]["e"].startswith("socket.") and refused[0]["r"] == "network"
        p = files["payloads"]["exec-string"]
        with z.lock:
            tr = z.run_job(str(p.path), "pickle", timeout_s=20, cpu_s=20, memory_mb=1024, preload=())
        assert [e["e"] for e in tr.events if e.get("r")] == ["compile"]
        assert not p.marker.exists()
    finally:
        z.close()
