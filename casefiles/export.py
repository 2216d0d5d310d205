"""Markdown report of a case: a pure function of :meth:`CaseStore.case_bundle`'s data.

Written for a reader who never opens the tool: what was examined, what ran,
what it found, what it means (MITRE ATLAS), and how to check the trail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from casefiles import atlas, remediation_section
from casefiles.characterise import Characterisation, characterise, read_prompts
from vocabulary.layered import case_verdict, subject_verdict

_MAX_TABLE_ROWS = 50
LARGE_CASE = 100  # above this many subjects: a summary first, details of flagged subjects only
_MAX_AUDIT_ROWS_LARGE = 200


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`[]<>|"})


def md_text(value: Any) -> str:
    """Text from a subject or a probe (file names, trigger candidates) as inert markdown: no links, images,
    code spans or HTML can be smuggled into the report through it."""
    return " ".join(str(value).split()).translate(_MD_SPECIAL)


class Md(str):
    """Markdown already made safe (a code span, a composed cell): table cells pass it through unescaped."""


def _code(value: Any) -> Md:
    """A code span that holds any text, backticks included (its fence is longer than any run inside)."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    runs = [len(r) for r in re.findall("`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if runs else ""
    return Md(f"{fence}{pad}{text}{pad}{fence}")


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Md):
        return str(value)
    return md_text(value)


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
    return ", ".join(_code(f"{k}={json.dumps(v, sort_keys=True, default=str)}") for k, v in sorted(params.items()))


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
            out.append(f"- {label}: {_cell(value) if not isinstance(value, str) else _code(value)}")
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
        out += ["", *_table(["rank", "candidate", "KL"], ([i + 1, _code(r.get("candidate")), r.get("kl")]
                                                            for i, r in enumerate(ranking[:10])))]
    impact = result.get("impact")
    if isinstance(impact, dict):
        for k, v in impact.items():
            if not isinstance(v, (dict, list)):
                out.append(f"- Impact, {k.replace('_', ' ')}: {_cell(v)}")
    return out


def subject_verdicts(runs: list[dict[str, Any]], subjects: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each subject's verdict from its latest run per probe (the same function every view uses)."""
    by_subject = _runs_by_subject(runs)
    return {s["id"]: subject_verdict(by_subject.get(s["id"], [])) for s in subjects}


def _runs_by_subject(runs: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    """Runs grouped by subject id, in their order (one pass: large cases have tens of thousands of runs)."""
    out: dict[Any, list[dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(r.get("subject_id"), []).append(r)
    return out


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
    for mine in _runs_by_subject(runs).values():
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


@dataclass
class ReportImage:
    """A figure as the report cites it: where the renderer finds it, and what it shows."""

    run_id: int
    name: str
    caption: str
    src: str  # a relative path (markdown folder) or a data: URI (HTML)


@dataclass
class ReportOptions:
    """What the report adds beyond the bundle: images, and where text of a run's inputs is read from."""

    images: dict[int, list[ReportImage]] = field(default_factory=dict)  # by run id
    prompts: Callable[[dict[str, Any]], str | None] = read_prompts
    large_case: int = LARGE_CASE
    note: str = ""  # a line under the summary (e.g. which subjects have figures in a large case)


# Per-subject sections rendered under each subject's heading, in order: (subject, bundle) -> markdown lines.
# Another feature adds its section by appending one function here (e.g. remediation).
SUBJECT_SECTIONS: list[Callable[[dict[str, Any], dict[str, Any]], list[str]]] = []


def _custody_lines(s: dict[str, Any], bundle: dict[str, Any]) -> list[str]:
    out = []
    cust = (s.get("metadata") or {}).get("custody") or {}
    labels = {"source": "Source", "acquired_by": "Acquired by", "acquired_at": "Acquired at",
              "claimed_origin": "Claimed origin / vendor", "provenance": "Provenance"}
    out += [f"- {labels[k]}: {_cell(cust[k])}" for k in labels if cust.get(k)]
    for a in bundle.get("audit", []):
        if a.get("action") != "custody.changed":
            continue
        try:
            d = json.loads(a.get("detail") or "{}")
        except ValueError:
            continue
        if d.get("subject_id") == s["id"]:
            out.append(f"- **Custody warning** ({a['ts']}, audit #{a['seq']}): {_cell(d.get('message'))}")
    return out


def _triage_lines(s: dict[str, Any], bundle: dict[str, Any]) -> list[str]:
    t = (bundle.get("triage") or {}).get(s["id"])
    if not isinstance(t, dict) or not t.get("per_class"):
        return []
    src = (t.get("data") or {}).get("source")
    lines = ["", f"Triage on the clean data ({t.get('n')} inputs{', ' + src if src else ''}): "
                 f"accuracy {100 * float(t.get('accuracy') or 0):.1f}%.", ""]
    rows = t["per_class"][:_MAX_TABLE_ROWS]
    lines += _table(["class", "n", "accuracy", "most confused with", "share"],
                    ([r.get("class"), r.get("n"), r.get("accuracy"), r.get("most_confused_with"),
                      r.get("confused_fraction")] for r in rows))
    conf, classes = t.get("confusion"), t.get("classes") or []
    if isinstance(conf, list) and conf and len(conf) <= 20 and len(classes) == len(conf):
        lines += ["", "Confusion (rows: true class, columns: predicted):", ""]
        lines += _table(["true \\ predicted", *map(str, classes)], ([c, *row] for c, row in zip(classes, conf, strict=False)))
    worst = min(t["per_class"], key=lambda r: float(r.get("accuracy") or 0.0))
    if float(worst.get("accuracy") or 0.0) < 0.8:
        lines += ["", f"Class {worst['class']} is consistently misclassified (as {worst.get('most_confused_with')}): "
                      "look at what these inputs share."]
    return lines


def _image_lines(images: list[ReportImage]) -> list[str]:
    out = []
    for im in images:
        out += ["", f"![{im.caption}]({im.src})", "", f"*{im.caption}*"]
    return out


def _finding_lines(c: Characterisation, subject_names: dict[int, str], images: list[ReportImage]) -> list[str]:
    who = subject_names.get(c.subject_id or -1, "case")
    out = [f"### Finding: {who}, run {c.run_id} ({_code(c.probe)}, {c.verdict})", "", md_text(c.title)]
    out += _image_lines(images) + [""]
    for head, part in (("Trigger identification", c.identification), ("Behaviour", c.behaviour),
                       ("Impact", c.impact)):
        out += [f"**{head}**", ""] + [f"- {k}: {_cell(v)}" for k, v in part.items()] + [""]
    src = "measured by a remediation run" if c.remediation_source == "measured" else "options; none has run yet"
    out += [f"**Remediation** ({src})", ""] + [f"- {x}" for x in c.remediation] + [""]
    out += [f"**MITRE ATLAS**: {', '.join(c.atlas) if c.atlas else 'no technique'}", ""]
    return out


def _run_lines(r: dict[str, Any], subject_names: dict[int, str], artifacts: list[dict[str, Any]],
               images: list[ReportImage]) -> list[str]:
    result = r.get("result") or {}
    dur = f"{r['duration_s']:.2f} s" if r.get("duration_s") is not None else "–"
    lines = [f"### Run {r['id']}: {_code(r['probe'])} on {subject_names.get(r['subject_id'], 'case')}", "",
             f"- Status: {r['status']}; verdict: **{r.get('verdict') or '–'}**; "
             f"score: {_cell(r.get('score'))}; duration: {dur}",
             f"- Started: {r['started']}; finished: {r.get('finished') or '–'}",
             f"- Parameters: {_params_text(r.get('params') or {})}"]
    if r.get("summary"):
        lines.append(f"- Result: {md_text(r['summary'])}")
    if r.get("error"):
        lines.append(f"- Error: {md_text(r['error'])}")
    lines += _result_extras(result)
    lines += _per_class_table(result)
    arts = [a for a in artifacts if a.get("run_id") == r["id"]]
    if arts:
        lines += ["", "Evidence stored in the case file:", ""]
        lines += [f"- {_code(a['name'])} ({_human_size(a['size'])}, sha256 {_code(a['sha256'])})" for a in arts]
    lines += _image_lines(images)
    lines.append("")
    return lines


def render_markdown(bundle: dict[str, Any], options: ReportOptions | None = None) -> str:  # noqa: C901 - one report, section after section; each section is a few lines
    """The case report as markdown text (deterministic for the same bundle and options)."""
    opts = options or ReportOptions()
    case, subjects, runs = bundle["case"], bundle["subjects"], bundle["runs"]
    notes, audit, verify = bundle["notes"], bundle["audit"], bundle["verify"]
    artifacts = bundle.get("artifacts", [])
    subject_names = {s["id"]: md_text(s["name"]) for s in subjects}
    large = len(subjects) > opts.large_case
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
    flagged_subjects = {r["subject_id"] for r in flagged}
    if large:
        counts: dict[str, int] = {}
        for s in subjects:
            key = _subject_verdict_text(verdicts.get(s["id"])).split(" (")[0]
            counts[key] = counts.get(key, 0) + 1
        lines += _table(["subject verdict", "subjects"], ([k, v] for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))) + [""]
        lines.append(f"Large case: details follow for the {len(flagged_subjects)} flagged subject(s) only; "
                     "every subject is listed in the index at the end." + (f" {opts.note}" if opts.note else ""))
        lines.append("")
    if flagged:
        for r in flagged[:_MAX_TABLE_ROWS * 20 if large else None]:
            lines.append(f"- **{r['verdict']}** — {subject_names.get(r['subject_id'], '?')}, "
                         f"{_code(r['probe'])}: {md_text(r.get('summary') or '')}")
    elif runs:
        lines.append("No probe flagged any subject.")
    else:
        lines.append("No probe has run yet.")
    if superseded:
        lines.append("")
        lines.append("Superseded by newer runs of the same probe (history, not counted): "
                     + ", ".join(f"run {r['id']} ({_code(r['probe'])} {r['verdict']})" for r in superseded) + ".")
    lines.append("")

    if flagged:
        lines += ["## Findings", ""]
        for r in flagged:
            lines += _finding_lines(characterise(r, runs, opts.prompts), subject_names, opts.images.get(r["id"], []))

    lines += ["## Subjects", ""]
    if not subjects:
        lines += ["None added.", ""]
    shown = [s for s in subjects if s["id"] in flagged_subjects] if large else subjects
    for s in shown:
        lines += [f"### Subject {s['id']}: {md_text(s['name'])}", "",
                  f"- Path: {_code(s['path'])}", f"- SHA-256: {_code(s['sha256'])}",
                  f"- Format: {s['format']}; kind: {s['kind']}; size: {_human_size(s['size'])}",
                  f"- Verdict: **{_subject_verdict_text(verdicts.get(s['id']))}**"]
        lines += _custody_lines(s, bundle)
        lines.append("")
        files = s.get("files") or []
        if len(files) > 1:
            lines += _table(["file", "size", "sha256"], ([_code(f["path"]), _human_size(f.get("size")), _code(f["sha256"])]
                                                         for f in files[:_MAX_TABLE_ROWS]))
            lines.append("")
        tri = _triage_lines(s, bundle)
        if tri:
            lines += tri[1:] + [""]
        for section in SUBJECT_SECTIONS:
            lines += section(s, bundle)

    lines += ["## Probe runs", ""]
    shown_runs = [r for r in runs if r.get("subject_id") in flagged_subjects] if large else runs
    if large:
        lines += [f"Runs of flagged subjects only ({len(shown_runs)} of {len(runs)}); the JSON-lines export "
                  "has every run.", ""]
    if not shown_runs:
        lines += ["None.", ""]
    flagged_ids = {r["id"] for r in flagged}
    for r in shown_runs:
        lines += _run_lines(r, subject_names, artifacts, [] if r["id"] in flagged_ids else opts.images.get(r["id"], []))
        if r["id"] in flagged_ids and opts.images.get(r["id"]):
            lines[-1:] = ["", f"Figures: with the finding of run {r['id']} above.", ""]

    lines += remediation_section.render_section(bundle)

    lines += ["## MITRE ATLAS mapping", ""]
    mapped: dict[str, list[str]] = {}
    for r in flagged:
        for t in atlas.techniques_for(r["probe"], r["verdict"]):
            mapped.setdefault(t, []).append(f"run {r['id']} ({_code(r['probe'])})")
    for f in bundle.get("findings", []) if not large else []:
        if f.get("atlas"):
            mapped.setdefault(f["atlas"], []).append(f"finding: {md_text(f.get('title') or f.get('severity'))}")
    if mapped:
        lines += _table(["technique", "evidence"], ([atlas.label(t), Md("; ".join(dict.fromkeys(ev)))]
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
    shown_audit = audit[-_MAX_AUDIT_ROWS_LARGE:] if large else audit
    if len(shown_audit) < len(audit):
        lines += ["", f"The newest {len(shown_audit)} of {len(audit)} rows; the JSON-lines export has all of them."]
    lines += ["", *_table(["#", "time", "actor", "action"], ([a["seq"], a["ts"], a["actor"], a["action"]]
                                                             for a in shown_audit)), ""]
    lines.append("To check this report against the case file: `workbench case verify "
                 f"{case['id']} --head {verify['head']}` must say the trail is intact.")
    if large:
        lines += ["", "## Subject index", ""]
        lines += _table(["id", "name", "format", "kind", "verdict", "sha256"],
                        ([s["id"], s["name"], s["format"], s["kind"], _subject_verdict_text(verdicts.get(s["id"])),
                          s["sha256"][:16]] for s in subjects))
    return "\n".join(lines) + "\n"
