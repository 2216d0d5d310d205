"""The markdown report: a golden file for a realistic case, and the pure-function contract."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

import casefiles.store as store_mod
from casefiles import CaseStore
from casefiles.export import render_markdown

GOLDEN = Path(__file__).parent / "golden" / "report.md"


@pytest.fixture
def fixed_clock(monkeypatch):
    ticks = itertools.count()
    monkeypatch.setattr(store_mod, "now", lambda: f"2026-11-22T09:{next(ticks) // 60:02d}:{next(ticks) % 60:02d}.000Z")


def build_case(path: Path) -> CaseStore:
    s = CaseStore(path, actor="examiner@lab")
    cid = s.new_case("Vendor model 2026-11", "Image classifier delivered by a third-party vendor for the checkout kiosk.")
    sid = s.add_subject(cid, path="/evidence/vendor/model.pt", sha256="5" * 64, size=2_345_678, format="torchscript",
                        kind="image-classifier", files=[{"path": "model.pt", "sha256": "5" * 64, "size": 2_345_678}])
    lm = s.add_subject(cid, path="/evidence/vendor/assistant", sha256="7" * 64, size=9_000_000, format="hf-folder",
                       kind="causal-lm", files=[{"path": "config.json", "sha256": "1" * 64, "size": 700},
                                                {"path": "model.safetensors", "sha256": "2" * 64, "size": 8_999_300}])
    r = s.start_run(cid, sid, "static", {"seed": 0})
    s.finish_run(r, status="done", duration_s=0.12, result={
        "probe": "static", "verdict": "clean", "score": 0.0, "summary": "3 pickles, no calls outside the allowlist",
        "findings": []})
    r = s.start_run(cid, sid, "neural-cleanse", {"seed": 0, "data": {"source": "clean.npz", "n": 500}})
    s.finish_run(r, status="done", duration_s=3.4, result={
        "probe": "neural-cleanse", "verdict": "backdoored", "score": 0.86,
        "summary": "anomaly index 4.31: class 0 needs a far smaller trigger than the rest",
        "anomaly_index": 4.31, "suspected_target": 0,
        "per_class": [{"class": c, "l1_norm": n, "attack_success": 0.99, "steps": 60}
                      for c, n in enumerate([6.1, 31.0, 29.5, 33.2])],
        "impact": {"clean_accuracy": 0.97, "recovered_trigger_asr": 0.98, "attack_type": "patch"}},
        artifacts={"mask.npy": b"mask-bytes", "pattern.npy": b"pattern-bytes"})
    r = s.start_run(cid, lm, "kl", {"seed": 0})
    s.finish_run(r, status="failed", duration_s=0.5, error="tokenizer files missing from /evidence/vendor/assistant")
    s.add_note(cid, "Vendor says the model was fine-tuned on **public** data only.\n\n- ask for the training set")
    s.add_note(cid, "Class 0 is *stop sign*.", subject_id=sid)
    return s


def test_report_matches_golden_file(tmp_path, fixed_clock):
    with build_case(tmp_path / "case.db") as s:
        text = render_markdown(s.case_bundle(1))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_report_has_what_a_reader_needs(tmp_path, fixed_clock):
    with build_case(tmp_path / "case.db") as s:
        bundle = s.case_bundle(1)
    text = render_markdown(bundle)
    assert "Overall verdict: **backdoored**" in text
    assert "`" + "5" * 64 + "`" in text  # subject hash
    assert "| class | attack_success | l1_norm | steps |" in text  # per-class table, class first
    assert "AML.T0018 Backdoor ML Model" in text
    assert "tokenizer files missing" in text  # failed runs are reported with their error
    assert "ask for the training set" in text
    assert bundle["verify"]["head"] in text
    assert render_markdown(bundle) == text  # pure: same data, same report


def test_report_shows_a_broken_trail(tmp_path, fixed_clock):
    with build_case(tmp_path / "case.db") as s:
        s.db.execute("DROP TRIGGER audit_no_update")
        s.db.execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 2")
        text = render_markdown(s.case_bundle(1))
    assert "Integrity: BROKEN" in text and "seq 2" in text
