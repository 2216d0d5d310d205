"""The report's Remediation section and the before/after table of one repair (a pure function of stored runs).

A ``remediation`` run's result is the ``remediation.json`` object written by
``workbench remediate``; every figure here is read from it, so a reviewer can
re-derive the table from the case file.
"""

from __future__ import annotations

from typing import Any

PROBE = "remediation"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.1f}%"


def _num(v: Any) -> str:
    return "–" if v is None else f"{float(v):.2f}"


def table_rows(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(measure, before, after)`` rows of one remediation."""
    b, a = doc.get("before") or {}, doc.get("after") or {}
    if doc.get("kind") == "causal-lm":
        rows = [("clean prompts answered as the original (held-out)", _pct(b.get("clean_answer_match")),
                 _pct(a.get("clean_answer_match"))),
                ("triggered prompts answered as the original without the trigger",
                 _pct(b.get("triggered_clean_answer")), _pct(a.get("triggered_clean_answer")))]
        if b.get("triggered_target_rate") is not None:
            rows.append(("triggered prompts giving the attacker's answer", _pct(b.get("triggered_target_rate")),
                         _pct(a.get("triggered_target_rate"))))
        bc = ((b.get("detector") or {}).get("confirmation") or {})
        ac = ((a.get("detector") or {}).get("confirmation") or {})
        rows.append(("trigger confirmed by generation", str(bc.get("confirmed", "–")), str(ac.get("confirmed", "–"))))
        bh = ((b.get("detector") or {}).get("hunt") or {})
        ah = ((a.get("detector") or {}).get("hunt") or {})
        if bh or ah:
            rows.append(("trigger hunt verdict", str(bh.get("verdict", "–")), str(ah.get("verdict", "–"))))
        return rows
    rows = [("clean accuracy (held-out)", _pct(b.get("clean_accuracy")), _pct(a.get("clean_accuracy"))),
            ("recovered trigger attack success", _pct(b.get("recovered_trigger_asr")),
             _pct(a.get("recovered_trigger_asr")))]
    if b.get("real_trigger_asr") is not None:
        rows.append(("real trigger attack success (ground truth)", _pct(b.get("real_trigger_asr")),
                     _pct(a.get("real_trigger_asr"))))
    if b.get("poisoned_data_asr") is not None:
        rows.append(("data file's poisoned inputs reaching the target", _pct(b.get("poisoned_data_asr")),
                     _pct(a.get("poisoned_data_asr"))))
    bd, ad = b.get("detector") or {}, a.get("detector") or {}
    rows.append(("Neural Cleanse anomaly index (flags > 2)", _num(bd.get("anomaly_index")), _num(ad.get("anomaly_index"))))
    return rows


def filter_lines(doc: dict[str, Any]) -> list[str]:
    """One line on the input filter's measured rates."""
    m = doc.get("filter_measured") or {}
    frr = (m.get("false_rejection") or {}).get("either")
    det = m.get("detection") or m.get("detection_recovered_trigger") or {}
    line = f"Input filter (`filter.json`): rejects {_pct(frr)} of clean held-out inputs"
    if det.get("either") is not None:
        line += f", catches {_pct(det.get('either'))} of inputs carrying the recovered trigger"
    real = m.get("detection_real_trigger") or {}
    if real.get("either") is not None:
        line += f" and {_pct(real.get('either'))} carrying the real one"
    return [line + "."]


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The terminal summary of ``workbench remediate``."""
    out = doc.get("outputs") or {}
    t = doc.get("timings") or {}
    lines = [f"{doc.get('subject', {}).get('path', '')}: {doc.get('kind')} repaired by {doc.get('method')} "
             f"in {t.get('repair_s', 0):.1f}s (command {t.get('command_s', 0):.1f}s)", ""]
    width = max(len(r[0]) for r in table_rows(doc))
    lines.append(f"  {'':<{width}}  {'before':>10}  {'after':>10}")
    lines += [f"  {m:<{width}}  {bv:>10}  {av:>10}" for m, bv, av in table_rows(doc)]
    lines += ["", *filter_lines(doc), "", doc.get("residual_risk", ""), "",
              f"repaired model: {out.get('model')} (sha256 {out.get('model_sha256')})",
              f"filter: {out.get('filter')}", f"evidence: {out.get('remediation')}"]
    return lines


def render_section(bundle: dict[str, Any]) -> list[str]:
    """Markdown lines of the Remediation section (empty when the case holds no remediation run)."""
    runs = [r for r in bundle.get("runs", []) if r.get("probe") == PROBE and r.get("status") == "done"
            and isinstance(r.get("result"), dict)]
    if not runs:
        return []
    names = {s["id"]: s["name"] for s in bundle.get("subjects", [])}
    lines = ["## Remediation", ""]
    for r in runs:
        doc = r["result"]
        out = doc.get("outputs") or {}
        case = doc.get("case") or {}
        trig = doc.get("trigger") or {}
        what = (f"trigger `{trig.get('text')}`" if doc.get("kind") == "causal-lm"
                else f"the trigger Neural Cleanse recovered (target class {trig.get('target')}, mask L1 "
                     f"{trig.get('mask_l1')})")
        lines += [f"### Run {r['id']}: {doc.get('method')} on {names.get(r.get('subject_id'), '?')}", "",
                  f"- Removed: {what}, taken from {trig.get('from', '?')}.",
                  f"- Repaired model: `{out.get('model')}` ({out.get('model_format')}), sha256 `{out.get('model_sha256')}`"
                  + (f", recorded as subject {case['repaired_subject_id']}" if case.get("repaired_subject_id") else "")
                  + ".",
                  f"- Repair time: {(doc.get('timings') or {}).get('repair_s', 0):.1f} s; evidence on "
                  f"{(doc.get('after') or {}).get('n_test') or (doc.get('after') or {}).get('n_prompts')} held-out "
                  f"{'prompts' if doc.get('kind') == 'causal-lm' else 'images'}.", ""]
        lines += ["| measure | before | after |", "|---|---|---|"]
        lines += [f"| {m} | {b} | {a} |" for m, b, a in table_rows(doc)]
        lines += ["", *filter_lines(doc), "", f"**Residual risk.** {doc.get('residual_risk', '')}", ""]
    return lines
