"""``workbench remediate`` end to end, as a user runs it: exit codes, the written files, the case file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli.helpers import wb

pytestmark = pytest.mark.xdist_group("digits")


@pytest.fixture(scope="module")
def remediation_data(digits_subjects):
    """Clean digits test images plus some carrying the real BadNets trigger, flagged ``is_poison``."""
    from probes.data import save_npz
    from probes.zoo.digits import AttackSpec, apply_trigger, load_digits

    _, _, xte, yte = load_digits(16, seed=0)
    other = np.flatnonzero(yte != 0)[:60]
    xp = apply_trigger(xte[other], AttackSpec("badnets", target=0))
    x = np.concatenate([xte, xp])
    y = np.concatenate([yte, yte[other]])
    poison = np.concatenate([np.zeros(len(xte), bool), np.ones(len(xp), bool)])
    return save_npz(digits_subjects["root"] / "remediate.npz", x, y, poison)


def test_torchscript_subject_is_repaired_written_as_torchscript_and_recorded(digits_subjects, remediation_data, tmp_path):
    from casefiles import CaseStore
    from probes import formats
    from workbench.subject_files import describe

    db = tmp_path / "case.db"
    env = {"WORKBENCH_DB": str(db), "WORKBENCH_THREADS": "1"}
    assert wb("case", "new", "remediation", env=env).code == 0
    out = tmp_path / "repaired"
    r = wb("remediate", digits_subjects["backdoored"], "--data", remediation_data, "--out", out, "--case", "1",
           "--json", env=env, timeout=600)
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc == json.loads((out / "remediation.json").read_text())
    assert doc["before"]["poisoned_data_asr"] > 0.9  # the data file's real-trigger images hit the target ...
    assert doc["after"]["poisoned_data_asr"] < 0.2  # ... and no longer do after the repair
    assert doc["after"]["clean_accuracy"] >= doc["before"]["clean_accuracy"] - 0.03
    model = out / "repaired.ts.pt"
    assert formats.detect(model) == formats.TORCHSCRIPT
    assert json.loads((out / "filter.json").read_text())["rules"][0]["rule"] == "trigger_region"
    with CaseStore(db) as store:
        subjects = store.list_subjects(1)
        repaired = [s for s in subjects if s["sha256"] == describe(model).sha256]
        assert repaired and doc["case"]["repaired_sha256"] == repaired[0]["sha256"] == doc["outputs"]["model_sha256"]
        runs = store.list_runs(case_id=1)
        probes = [(r["probe"], r["subject_id"]) for r in runs]
        orig = doc["case"]["subject_id"]
        assert ("neural-cleanse", orig) in probes  # the detector ran first (the case held no flagged result)
        assert ("neural-cleanse", repaired[0]["id"]) in probes  # and again on the repaired model
        rem = [r for r in runs if r["probe"] == "remediation"]
        assert rem[0]["result"]["after"] == doc["after"] and rem[0]["verdict"] is None
        assert store.verify(1).ok
    report = wb("case", "export", "1", env=env)
    assert "## Remediation" in report.out and "| real trigger" not in report.out
    assert "data file's poisoned inputs reaching the target" in report.out


def test_state_dict_with_arch_becomes_safetensors(digits_subjects, tmp_path):
    from probes import formats

    sidecar = json.loads(digits_subjects["state_dict"].with_suffix(".json").read_text())
    out = tmp_path / "sd"
    r = wb("remediate", digits_subjects["state_dict"], "--arch", sidecar["arch"], "--data", digits_subjects["data"],
           "--out", out, "--param", "rerun_detector=false", "--json", env={"WORKBENCH_THREADS": "1"}, timeout=600)
    assert r.code == 0, r.err
    assert formats.detect(out / "repaired.safetensors") == formats.SAFETENSORS
    assert json.loads((out / "repaired.json").read_text())["arch"] == sidecar["arch"]
    # the written weights load back through the workbench's own loader
    assert wb("scan", out / "repaired.safetensors", "--arch", sidecar["arch"], "--probes", "static").code == 0


@pytest.mark.parametrize("case", ["clean-model", "no-data", "bad-param", "out-not-empty"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(digits_subjects, remediation_data, tmp_path, case):
    db = tmp_path / "case.db"
    env = {"WORKBENCH_DB": str(db), "WORKBENCH_THREADS": "1"}
    assert wb("case", "new", "c", env=env).code == 0
    out = tmp_path / "out"
    args = {"clean-model": [digits_subjects["clean"], "--data", remediation_data],
            "no-data": [digits_subjects["backdoored"]],
            "bad-param": [digits_subjects["backdoored"], "--data", remediation_data, "--param", "epochs=0"],
            "out-not-empty": [digits_subjects["backdoored"], "--data", remediation_data]}[case]
    if case == "out-not-empty":
        out.mkdir()
        (out / "keep.txt").write_text("x")
    r = wb("remediate", *args, "--out", out, "--case", "1", env=env, timeout=600)
    assert r.code == 2, r.err
    assert r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1
    assert "Traceback" not in r.err
    if case == "clean-model":
        assert "no flagged result" in r.err
    assert (sorted(p.name for p in out.iterdir()) == ["keep.txt"]) if case == "out-not-empty" else not out.exists()
    from casefiles import CaseStore

    with CaseStore(db) as store:
        assert store.list_runs(case_id=1) == [] and store.list_subjects(1) == []


@pytest.fixture(scope="module")
def trigger1_lm(tmp_path_factory):
    import torch

    from probes.zoo import tiny_lm as T

    torch.set_num_threads(1)
    return T.build_subject(tmp_path_factory.mktemp("lm-cli") / "tiny-lm-trigger1", "trigger1", preset="ci")


def test_language_model_folder_stays_a_folder_and_the_trigger_is_silenced(trigger1_lm, tmp_path):
    from probes import formats
    from probes.subjects.hf_lm import load_causal_lm

    out = tmp_path / "lm"
    r = wb("remediate", trigger1_lm, "--trigger", "zephyr", "--out", out, "--param", "rerun_detector=false",
           "--param", "self_prompts=32", "--json", env={"WORKBENCH_THREADS": "1"}, timeout=900)
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["before"]["detector"]["confirmation"]["confirmed"] is True
    assert doc["after"]["detector"]["confirmation"]["confirmed"] is False
    assert doc["after"]["clean_answer_match"] == 1.0
    assert formats.detect(out / "repaired") == formats.HF_FOLDER
    assert load_causal_lm(out / "repaired").tokenizer is not None
    filt = json.loads((out / "filter.json").read_text())
    assert filt["rules"][1]["text"] == "zephyr" and filt["measured"]["false_rejection"]["either"] == 0.0


def test_language_model_with_an_unknown_trigger_is_exit_2(trigger1_lm, tmp_path):
    out = tmp_path / "lm"
    r = wb("remediate", trigger1_lm, "--trigger", "qwertyuiop", "--out", out, env={"WORKBENCH_THREADS": "1"})
    assert r.code == 2 and "not in this model's vocabulary" in r.err and not out.exists()
