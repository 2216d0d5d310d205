"""The probe contract end to end (issue 11): declared parameters checked before anything is written, one
verdict for every view, the default scan choosing only the probes its data allow, `workbench probes`."""

from __future__ import annotations

import json

import pytest

from casefiles import CaseStore
from tests.cli.helpers import wb

pytestmark = pytest.mark.xdist_group("digits")


@pytest.fixture
def case_db(tmp_path):
    db = tmp_path / "cases.db"
    assert wb("case", "new", "contract", "--db", db).code == 0
    return db


def _nothing_written(db) -> None:
    with CaseStore(db) as s:
        assert s.list_runs(case_id=1) == [] and s.list_subjects(1) == []


@pytest.mark.parametrize("probes,param,needle", [
    ("kl", "z_threshold=NaN", "kl: param z_threshold must be finite"),
    ("kl", "top_k=-5", "kl: param top_k=-5 is out of range"),
    ("kl", "gen_tokens=0", "kl: param gen_tokens=0 is out of range"),
    ("kl", "prompt_template=Q: no slot A:", "kl: prompt_template must contain {instruction} exactly once"),
    ("static", "max_decompressed_mb=NaN", "static: param max_decompressed_mb must be finite"),
    ("static", "max_decompressed_mb=-1", "static: param max_decompressed_mb=-1 is out of range"),
    ("neural-cleanse", "asr_window=0", "neural-cleanse: param asr_window=0 is out of range"),
    ("strip", "blend=multiply", "strip: param blend must be one of add, average"),
    ("static", "steps=10", "no probe of this scan (static) takes a parameter 'steps'"),
    ("static,neural-cleanse", "strip.alpha=0.3", "strip is not among the probes of this scan"),
])
def test_bad_parameters_exit_2_before_anything_is_written(digits_subjects, case_db, probes, param, needle):
    args = ["scan", digits_subjects["backdoored"], "--probes", probes, "--param", param, "--case", "1", "--db",
            case_db]
    if "strip" in probes.split(","):
        args += ["--data", digits_subjects["data"]]
    r = wb(*args)
    assert r.code == 2, (r.out, r.err)
    assert r.err.count("\n") == 1 and needle in r.err, r.err
    _nothing_written(case_db)


def test_scoped_parameter_reaches_only_its_probe(digits_subjects):
    r = wb("scan", digits_subjects["backdoored"], "--probes", "static,neural-cleanse", "--json", "--input-shape",
           "1,16,16", "--param", "neural-cleanse.steps=30", "--param", "refine_steps=0", "--param", "seed=4")
    assert r.code == 0, r.err
    res = {x["probe"]: x for x in json.loads(r.out)["results"]}
    nc = res["neural-cleanse"]["params"]
    assert nc["steps"] == 30 and nc["refine_steps"] == 0 and nc["seed"] == 4
    assert nc["data"] is None  # the data file is part of the one record of what the run used
    assert "steps" not in res["static"]["params"] and res["static"]["params"]["seed"] == 4  # every probe takes seed


def test_default_scan_without_data_does_not_queue_strip(digits_subjects):
    r = wb("scan", digits_subjects["clean"], "--json", "--input-shape", "1,16,16", "--param", "steps=40",
           "--param", "refine_steps=0")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    probes = [x["probe"] for x in out["results"]] + [e["probe"] for e in out["errors"]]
    assert "strip" not in probes and "neural-cleanse" in probes
    assert not [e for e in out["errors"] if e["status"] == "failed"], out["errors"]


def test_a_newer_clean_run_replaces_an_old_backdoored_one_in_every_view(case_db):
    """`case show`, the report and the TUI's model read one function over the latest run per probe."""
    from casefiles.export import render_markdown
    from vocabulary.layered import subject_verdict

    nc = {"probe": "neural-cleanse", "score": 0.6, "summary": "nc", "params": {}, "duration_s": 1.0}
    with CaseStore(case_db) as s:
        sid = s.add_subject(1, path="/x/model.pt", sha256="ab" * 32, size=1, format="torchscript",
                            kind="image-classifier", files=[], name="model.pt")
        for verdict, anomaly in (("backdoored", 3.1), ("clean", 1.2)):
            run = s.start_run(1, sid, "neural-cleanse", {})
            s.finish_run(run, status="done", result={**nc, "verdict": verdict, "anomaly_index": anomaly},
                         duration_s=1.0)
        static = s.start_run(1, sid, "static", {})
        s.finish_run(static, status="done", result={"probe": "static", "verdict": "inconclusive", "score": 0.0,
                                                    "summary": "s", "findings": []}, duration_s=0.1)
        runs = s.list_runs(subject_id=sid)
        report = render_markdown(s.case_bundle(1))
    assert subject_verdict(runs)["verdict"] == "clean"  # [clean, inconclusive] is clean, the old run is history
    assert "Overall verdict: **clean**" in report and "Superseded by newer runs" in report
    shown = wb("case", "show", "1", "--db", case_db)
    assert "overall verdict: clean" in shown.out, shown.out


def test_probes_command_lists_declared_parameters():
    r = wb("probes")
    assert r.code == 0, r.err
    for name in ("static", "dynamic", "neural-cleanse", "strip", "spectral", "activation-clustering", "kl",
                 "fingerprint"):
        assert f"\n{name}" in "\n" + r.out
    assert "z_threshold=4.0" in r.out and "--data NPZ (clean labelled inputs) — required" in r.out
    one = json.loads(wb("probes", "kl", "--json").out)
    assert len(one) == 1 and {p["name"] for p in one[0]["params"]} >= {"seed", "top_k", "z_threshold"}
    assert wb("probes", "nope").code == 2


def test_threads_option_is_checked_and_used(digits_subjects):
    r = wb("scan", digits_subjects["clean"], "--probes", "static", "--threads", "0")
    assert r.code == 2
    r = wb("scan", digits_subjects["clean"], "--probes", "static", "--json", "--threads", "1")
    assert r.code == 0, r.err


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5"])
def test_malformed_threads_setting_is_one_line_and_writes_nothing(digits_subjects, case_db, value):
    r = wb("scan", digits_subjects["clean"], "--probes", "static", "--case", "1", "--db", case_db,
           env={"WORKBENCH_THREADS": value})
    assert r.code == 2 and "Traceback" not in r.err and "WORKBENCH_THREADS" in r.err, r.err
    _nothing_written(case_db)
