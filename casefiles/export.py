"""Markdown report of a case: a pure function of :meth:`CaseStore.case_bundle`'s data.

Written for a reader who never opens the tool: what was examined, what ran,
what it found, what it means (MITRE ATLAS), and how to check the trail.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from casefiles import atlas
from vocabulary.layered import case_verdict, subject_verdict

_MAX_TABLE_ROWS = 50


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text


def _table(headers: list[str], rows: Iterable[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return out


def _human_size(n: int | None) -> str:
    if n is None:
        return "–"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _params_text(params: dict[str, Any]) -> str:
    if not params:
        return "defaults"
    return ", ".join(f"`{k}={json.dumps(v, sort_keys=True, default=str)}`" for k, v in sorted(params.items()))


def _per_class_table(result: dict[str, Any]) -> list[str]:
    rows = result.get("per_class")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return []
    headers: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in headers and not isinstance(v, (list, dict)):
                headers.append(k)
    headers.sort(key=lambda h: (h != "class", h != "n"))  # the class column first, then as stored
    lines = _table(headers, ([r.get(h) for h in headers] for r in rows[:_MAX_TABLE_ROWS]))
    if len(rows) > _MAX_TABLE_ROWS:
        lines.append(f"\n… {len(rows) - _MAX_TABLE_ROWS} more rows in the case file.")
    return ["", "Per class:", "", *lines]


def _result_extras(result: dict[str, Any]) -> list[str]:
    """Probe-specific evidence worth a line in the report."""
    out = []
    for key, label in [("anomaly_index", "Anomaly index (MAD, threshold 2.0)"), ("suspected_target", "Suspected target class"),
                       ("best_candidate", "Best trigger candidate"), ("entropy_threshold", "Entropy threshold"),
                       ("frr", "False rejection rate"), ("far", "False acceptance rate"),
                       ("trust_score", "Trust score (0–100)")]:
        if result.get(key) is not None:
            value = result[key]
            out.append(f"- {label}: {_cell(value) if not isinstance(value, str) else '`' + value + '`'}")
    flagged = result.get("flagged_indices")
    if isinstance(flagged, list):
        out.append(f"- Flagged training samples: {len(flagged)}")
    findings = result.get("findings")
    if isinstance(findings, list) and findings:
        out += ["", *_table(["file", "offset", "opcode", "call", "severity"],
                            ([f.get("file"), f.get("offset"), f.get("opcode"),
                              f"{f.get('module') or ''}.{f.get('name') or ''}".strip("."), f.get("severity")]
                             for f in findings[:_MAX_TABLE_ROWS]))]
    ranking = result.get("ranking")
    if isinstance(ranking, list) and ranking:
        out += ["", *_table(["rank", "candidate", "KL"], ([i + 1, f"`{r.get('candidate')}`", r.get("kl")]
                                                            for i, r in enumerate(ranking[:10])))]
    impact = result.get("impact")
    if isinstance(impact, dict):
        for k, v in impact.items():
            if not isinstance(v, (dict, list)):
                out.append(f"- Impact, {k.replace('_', ' ')}: {_cell(v)}")
    return out


def subject_verdicts(runs: list[dict[str, Any]], subjects: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each subject's verdict from its latest run per probe (the same function every view uses)."""
    return {s["id"]: subject_verdict([r for r in runs if r.get("subject_id") == s["id"]]) for s in subjects}


def overall_verdict(runs: list[dict[str, Any]], subjects: list[dict[str, Any]] | None = None) -> str:
    """The case's verdict: the worst of its subjects' verdicts (older runs superseded by newer ones do not count)."""
    if subjects is None:
        subjects = [{"id": sid} for sid in dict.fromkeys(r.get("subject_id") for r in runs)]
    if not any(r.get("status") == "done" for r in runs):
        return "no completed analysis"
    verdict = case_verdict(subject_verdicts(runs, subjects).values())["verdict"]
    return verdict or "no completed analysis"


def _current_run_ids(runs: list[dict[str, Any]]) -> set[int]:
    """Ids of the runs that count: the latest finished run of each probe on each subject."""
    ids: set[int] = set()
    for sid in dict.fromkeys(r.get("subject_id") for r in runs):
        mine = [r for r in runs if r.get("subject_id") == sid]
        newest: dict[str, int] = {}
        for r in mine:
            if r.get("status") == "done":
                newest[r["probe"]] = max(newest.get(r["probe"], 0), r["id"])
        ids |= set(newest.values())
    return ids


def _subject_verdict_text(v: dict[str, Any] | None) -> str:
    if not v or v.get("score") is None and v.get("evidence") == "no probe completed":
        return "not analysed"
    risk = f" (risk {v['score']}/100, {v['band']})" if v.get("score") is not None else ""
    return f"{v['verdict']}{risk}"


def render_markdown(bundle: dict[str, Any]) -> str:  # noqa: C901 - one report, section after section; each section is a few lines
    """The case report as markdown text (deterministic for the same bundle)."""
    case, subjects, runs = bundle["case"], bundle["subjects"], bundle["runs"]
    notes, audit, verify = bundle["notes"], bundle["audit"], bundle["verify"]
    artifacts = bundle.get("artifacts", [])
    subject_names = {s["id"]: s["name"] for s in subjects}
    lines = [f"# Case {case['id']}: {case['title']}", ""]
    if case.get("description"):
        lines += [case["description"], ""]
    if not verify["ok"]:
        # Never a quiet "clean": a report of a case file edited outside the tool says so before any verdict.
        lines += [f"> **WARNING: `workbench case verify {case['id']}` fails for this case file** "
                  f"({len(verify.get('problems', []))} problem(s), listed under Audit trail): its evidence was changed "
                  "outside the workbench, so the verdicts below cannot be relied on.", ""]
    overall = overall_verdict(runs, subjects)
    lines += [f"- Opened: {case['created']}", f"- Last change: {case['updated']}",
              f"- Subjects: {len(subjects)}; probe runs: {len(runs)}",
              f"- Overall verdict: **{overall}**" + ("" if verify["ok"] else " (UNVERIFIED: the case file fails verify)"),
              ""]

    lines += ["## Summary", ""]
    current = _current_run_ids(runs)
    verdicts = subject_verdicts(runs, subjects)
    flagged = [r for r in runs if r.get("verdict") in atlas.FLAGGED and r.get("status") == "done"]
    superseded = [r for r in flagged if r["id"] not in current]
    flagged = [r for r in flagged if r["id"] in current]
    if flagged:
        for r in flagged:
            lines.append(f"- **{r['verdict']}** — {subject_names.get(r['subject_id'], '?')}, "
                         f"`{r['probe']}`: {r.get('summary') or ''}")
    elif runs:
        lines.append("No probe flagged any subject.")
    else:
        lines.append("No probe has run yet.")
    if superseded:
        lines.append("")
        lines.append("Superseded by newer runs of the same probe (history, not counted): "
                     + ", ".join(f"run {r['id']} (`{r['probe']}` {r['verdict']})" for r in superseded) + ".")
    lines.append("")

    lines += ["## Subjects", ""]
    if not subjects:
        lines += ["None added.", ""]
    for s in subjects:
        lines += [f"### Subject {s['id']}: {s['name']}", "",
                  f"- Path: `{s['path']}`", f"- SHA-256: `{s['sha256']}`",
                  f"- Format: {s['format']}; kind: {s['kind']}; size: {_human_size(s['size'])}",
                  f"- Verdict: **{_subject_verdict_text(verdicts.get(s['id']))}**", ""]
        files = s.get("files") or []
        if len(files) > 1:
            lines += _table(["file", "size", "sha256"], ([f"`{f['path']}`", _human_size(f.get("size")), f"`{f['sha256']}`"]
                                                         for f in files[:_MAX_TABLE_ROWS]))
            lines.append("")

    lines += ["## Probe runs", ""]
    if not runs:
        lines += ["None.", ""]
    for r in runs:
        result = r.get("result") or {}
        dur = f"{r['duration_s']:.2f} s" if r.get("duration_s") is not None else "–"
        lines += [f"### Run {r['id']}: `{r['probe']}` on {subject_names.get(r['subject_id'], 'case')}", "",
                  f"- Status: {r['status']}; verdict: **{r.get('verdict') or '–'}**; "
                  f"score: {_cell(r.get('score'))}; duration: {dur}",
                  f"- Started: {r['started']}; finished: {r.get('finished') or '–'}",
                  f"- Parameters: {_params_text(r.get('params') or {})}"]
        if r.get("summary"):
            lines.append(f"- Result: {r['summary']}")
        if r.get("error"):
            lines.append(f"- Error: {r['error']}")
        lines += _result_extras(result)
        lines += _per_class_table(result)
        arts = [a for a in artifacts if a.get("run_id") == r["id"]]
        if arts:
            lines += ["", "Evidence stored in the case file:", ""]
            lines += [f"- `{a['name']}` ({_human_size(a['size'])}, sha256 `{a['sha256']}`)" for a in arts]
        lines.append("")

    lines += ["## MITRE ATLAS mapping", ""]
    mapped: dict[str, list[str]] = {}
    for r in flagged:
        for t in atlas.techniques_for(r["probe"], r["verdict"]):
            mapped.setdefault(t, []).append(f"run {r['id']} (`{r['probe']}`)")
    for f in bundle.get("findings", []):
        if f.get("atlas"):
            mapped.setdefault(f["atlas"], []).append(f"finding: {f.get('title') or f.get('severity')}")
    if mapped:
        lines += _table(["technique", "evidence"], ([atlas.label(t), "; ".join(dict.fromkeys(ev))]
                                                    for t, ev in sorted(mapped.items())))
    else:
        lines.append("No evidence maps to an ATLAS technique.")
    lines.append("")

    lines += ["## Notes", ""]
    if not notes:
        lines += ["None.", ""]
    for n in notes:
        where = f"subject {subject_names.get(n['subject_id'], n['subject_id'])}" if n.get("subject_id") else "case"
        lines += [f"### Note {n['id']} ({where}, {n['updated']})", "", n["body"].rstrip(), ""]

    lines += ["## Audit trail", "",
              f"- Rows: {verify['rows']}; head hash: `{verify['head']}`",
              f"- Integrity: {'verified, the hash chain is intact' if verify['ok'] else 'BROKEN'}"]
    if verify.get("coverage"):
        lines.append(f"- Evidence rows: {verify['coverage']}")
    lines += [f"  - {p}" for p in verify.get("problems", [])]
    lines += ["", *_table(["#", "time", "actor", "action"], ([a["seq"], a["ts"], a["actor"], a["action"]] for a in audit)), ""]
    lines.append("To check this report against the case file: `workbench case verify "
                 f"{case['id']} --head {verify['head']}` must say the trail is intact.")
    return "\n".join(lines) + "\n"
