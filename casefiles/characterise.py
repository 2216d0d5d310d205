"""Each finding in the examiner's template shape: identification, behaviour, impact, remediation, ATLAS.

Only what a run measured and stored is stated; anything else reads "not measured"
(with what would measure it), so the report never asserts more than the evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casefiles import atlas

NOT_MEASURED = "not measured"
_REMEDIATION_PROBES = ("remediate", "remediation")

_OPTIONS = {
    "file": ["do not load the file anywhere; quarantine it with its hashes",
             "obtain the weights again from a trusted source in a non-executable format (safetensors)",
             "if the weights are needed, convert them in a sealed sandbox and re-scan the result"],
    "image": ["reject the model, or retrain from a trusted checkpoint on vetted data",
              "fine-prune: prune the neurons dormant on clean data, then fine-tune on clean data",
              "unlearn the recovered trigger: fine-tune on clean inputs stamped with it and labelled correctly",
              "filter inputs at run time (e.g. STRIP entropy) until the model is replaced"],
    "data": ["remove the flagged samples and retrain; re-run the audit on the cleaned set",
             "trace the flagged samples to their source (who contributed them)"],
    "lm": ["reject the model, or fine-tune on clean instruction data with the trigger present and a normal answer",
           "block the trigger string at the input until the model is replaced"],
}


@dataclass
class Characterisation:
    """One flagged run, as the examiner's template asks for it."""

    run_id: int
    subject_id: int | None
    probe: str
    verdict: str
    title: str
    identification: dict[str, str] = field(default_factory=dict)
    behaviour: dict[str, str] = field(default_factory=dict)
    impact: dict[str, str] = field(default_factory=dict)
    remediation: list[str] = field(default_factory=list)
    remediation_source: str = "options"
    atlas: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "subject_id": self.subject_id, "probe": self.probe, "verdict": self.verdict,
                "title": self.title, "identification": self.identification, "behaviour": self.behaviour,
                "impact": self.impact, "remediation": self.remediation,
                "remediation_source": self.remediation_source, "atlas": self.atlas}


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _pct(v: Any) -> str | None:
    return f"{100 * float(v):.1f}%" if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _num(v: Any) -> str | None:
    return f"{float(v):.3g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _or(v: str | None, why: str = "") -> str:
    return v if v else (f"{NOT_MEASURED} ({why})" if why else NOT_MEASURED)


def _image_trigger(r: dict[str, Any], p: dict[str, Any], c: Characterisation) -> None:
    imp = _dict(r.get("impact"))
    spec = _dict(imp.get("trigger"))
    region = None
    if spec.get("bbox"):
        r0, c0, r1, c1 = spec["bbox"]
        region = (f"rows {r0}–{r1}, columns {c0}–{c1} ({spec.get('location') or 'location unknown'}; "
                  f"{spec.get('active_pixels')} active pixels, {_pct(spec.get('bbox_fraction'))} of the image)")
    c.identification = {
        "what": f"{imp.get('attack_type_guess') or imp.get('attack_type') or 'input'} trigger recovered by optimisation"
                + (f", target class {r.get('suspected_target')}" if r.get("suspected_target") is not None else ""),
        "where": _or(region, "the run stored no mask"),
        "method": f"{c.probe}: smallest input change that sends every input to each class; MAD outlier test",
        "confidence": f"anomaly index {_num(r.get('anomaly_index'))} vs threshold {_num(p.get('threshold') or 2.0)}"
                      if r.get("anomaly_index") is not None else f"score {_num(r.get('score'))}",
    }
    asr = r.get("trigger_attack_success_heldout")
    asr = asr if asr is not None else imp.get("trigger_attack_success", imp.get("recovered_trigger_asr"))
    acc = r.get("clean_accuracy") if r.get("clean_accuracy") is not None else imp.get("clean_accuracy")
    c.behaviour = {
        "clean vs triggered": (f"clean inputs keep their labels (accuracy {_or(_pct(acc))}); stamped with "
                               f"the recovered trigger, {_pct(asr)} of held-out inputs go to class "
                               f"{r.get('suspected_target')}") if asr is not None else NOT_MEASURED,
        "position sensitivity": f"{NOT_MEASURED} (the trigger was recovered at one place; moving it was not tried)",
        "robustness": f"{NOT_MEASURED} (small variations of the recovered trigger were not tried)",
    }
    c.impact = {
        "target": f"class {r.get('suspected_target')}" if r.get("suspected_target") is not None else NOT_MEASURED,
        "attack success": _or(_pct(asr), "no held-out inputs"),
        "clean accuracy": _or(_pct(acc), "no labelled --data"),
        "clean-accuracy cost": f"{NOT_MEASURED} (needs a trusted model of the same task to compare with)",
        "natural occurrence": f"{NOT_MEASURED} (how often clean data already carries the pattern was not computed)",
    }


def _strip(r: dict[str, Any], c: Characterisation) -> None:
    c.identification = {
        "what": "inputs whose prediction survives blending with other images (a trigger dominates them)",
        "where": f"trigger from {r.get('trigger_source') or 'the examiner'}"
                 + (f", target class {r.get('trigger_target')}" if r.get("trigger_target") is not None else ""),
        "method": "STRIP: entropy of predictions over blended copies; low entropy = trigger-carrying input",
        "confidence": f"false rejection {_pct(r.get('frr'))}, false acceptance {_or(_pct(r.get('far')))}",
    }
    flips = _dict(r.get("trigger_flip_rate"))
    groups = _dict(r.get("groups"))
    ent = ", ".join(f"{k} inputs mean entropy {_num(_dict(v).get('entropy_mean'))} bits"
                    for k, v in groups.items() if _dict(v).get("entropy_mean") is not None)
    flip = flips.get("stamped")
    target = r.get("trigger_target")
    c.behaviour = {"clean vs triggered": _or(ent or None, "no groups stored"),
                   "position sensitivity": NOT_MEASURED, "robustness": NOT_MEASURED}
    c.impact = {"target": _or(None if target is None else f"class {target}"),
                "attack success": _or(None if flip is None else f"the trigger sends {_pct(flip)} of stamped clean "
                                                                 f"inputs to the target", "no trigger to stamp"),
                "clean-accuracy cost": NOT_MEASURED, "natural occurrence": NOT_MEASURED}


def _audit(r: dict[str, Any], c: Characterisation) -> None:
    flagged = r.get("flagged_indices") or []
    classes = r.get("poisoned_classes") or []
    rows = [x for x in r.get("per_class") or [] if isinstance(x, dict) and x.get("poisoned")]
    conf = ", ".join(f"class {x.get('class')}: transplant {_pct(x.get('transplant_rate'))} vs baseline "
                     f"{_pct(x.get('transplant_baseline'))}" for x in rows[:5] if x.get("transplant_rate") is not None)
    c.identification = {
        "what": f"{len(flagged)} poisoned training samples in class{'es' if len(classes) != 1 else ''} "
                f"{', '.join(map(str, classes)) or '–'}",
        "where": f"training-set indices (first: {', '.join(map(str, flagged[:10]))}{' …' if len(flagged) > 10 else ''})"
                 if flagged else NOT_MEASURED,
        "method": f"{c.probe}: split each class's activations, test the split by transplanting it",
        "confidence": _or(conf or None) + (f"; against ground truth: precision {_pct(r['precision'])}, recall "
                                           f"{_pct(r['recall'])}" if r.get("precision") is not None else ""),
    }
    c.behaviour = {"clean vs triggered": f"{NOT_MEASURED} (an audit of training data; run neural-cleanse on the model)",
                   "position sensitivity": NOT_MEASURED, "robustness": NOT_MEASURED}
    c.impact = {"target": ", ".join(f"class {k}" for k in classes) or NOT_MEASURED,
                "attack success": NOT_MEASURED, "clean-accuracy cost": NOT_MEASURED,
                "natural occurrence": f"{len(flagged)} of {r.get('n_samples') or '?'} training samples"}


def _static(r: dict[str, Any], c: Characterisation) -> None:
    fs = [f for f in r.get("findings") or [] if isinstance(f, dict)]
    calls = ", ".join(dict.fromkeys(".".join(x for x in (f.get("module"), f.get("name")) if x) for f in fs[:8]))
    where = "; ".join(f"{f.get('file')}{'!' + f['member'] if f.get('member') else ''} @ {f.get('offset')}"
                      for f in fs[:5])
    c.identification = {"what": f"code called when the file is loaded: {calls or 'see findings'}",
                        "where": where or NOT_MEASURED,
                        "method": f"{c.probe}: opcode-level scan of the serialised file (nothing executed)",
                        "confidence": ", ".join(dict.fromkeys(str(f.get("severity")) for f in fs)) or "–"}
    c.behaviour = {"clean vs triggered": "the payload runs on load, before any input is given",
                   "position sensitivity": "not applicable", "robustness": "not applicable"}
    c.impact = {"target": "the machine that loads the file", "attack success": NOT_MEASURED + " (never executed)",
                "clean-accuracy cost": "not applicable", "natural occurrence": "not applicable"}


def _lm(r: dict[str, Any], c: Characterisation, prompts_text: str | None) -> None:
    ranking = [e for e in r.get("ranking") or [] if isinstance(e, dict)]
    best = next((e for e in ranking if e.get("candidate") == r.get("best_candidate")), ranking[0] if ranking else {})
    sep = _dict(r.get("separation"))
    text = best.get("candidate")
    c.identification = {
        "what": f"trigger text {text!r}" if text is not None else NOT_MEASURED,
        "where": f"token ids {best.get('token_ids')}, inserted at the {best.get('position')} of the prompt"
                 if best.get("token_ids") is not None else NOT_MEASURED,
        "method": f"{c.probe}: KL divergence of next-token distributions with vs without each candidate, "
                  "confirmed by generation",
        "confidence": f"z {_num(best.get('z'))} vs threshold {_num(sep.get('z_threshold'))}; "
                      f"{'confirmed' if best.get('confirmed') else 'not confirmed'} by generation",
    }
    same = [e for e in ranking if e.get("candidate") == text]
    positions = ", ".join(f"{e.get('position')}: KL {_num(e.get('kl'))}" for e in same)
    clean = (r.get("clean_responses") or [None])[0]
    c.behaviour = {
        "clean vs triggered": (f"clean answers such as {str(clean)[:80]!r}; with the trigger "
                               f"{str(best.get('target_response'))[:80]!r}") if best.get("target_response") else
                              _or(None, "generation did not agree on one answer"),
        "position sensitivity": positions if len(same) > 1 else
                                f"{NOT_MEASURED} (only the best of the positions {r.get('positions')} was stored)",
        "robustness": f"changed-answer fraction {_pct(best.get('changed_fraction'))}"
                      if best.get("changed_fraction") is not None else NOT_MEASURED,
    }
    natural = None
    if prompts_text is not None and text:
        lines = [ln for ln in prompts_text.splitlines() if ln.strip()]
        hits = sum(1 for ln in lines if str(text).strip().lower() in ln.lower())
        natural = f"{hits} of {len(lines)} given prompts contain it"
    c.impact = {"target": _or(str(best.get("target_response"))[:120] if best.get("target_response") else None),
                "attack success": _or(_pct(best.get("target_agreement")), "no confirmation run"),
                "clean-accuracy cost": _or(None if best.get("clean_agreement") is None else
                                           f"clean answers agree {_pct(best.get('clean_agreement'))}"),
                "natural occurrence": _or(natural, "no prompts file at hand")}


def _fingerprint(r: dict[str, Any], c: Characterisation) -> None:
    det = _dict(r.get("detectors"))
    top = ", ".join(str(t.get("name", t)) if isinstance(t, dict) else str(t) for t in (r.get("top_features") or [])[:5])
    c.identification = {"what": "weights and behaviour unlike the known-clean baseline", "where": _or(top or None),
                        "method": "fingerprint ensemble against a baseline of trusted models",
                        "confidence": f"trust score {r.get('trust_score')}; {r.get('n_above_95')} of "
                                      f"{len(det)} detectors above the baseline's 95th percentile"}
    c.behaviour = {"clean vs triggered": f"{NOT_MEASURED} (no trigger is recovered by this probe)",
                   "position sensitivity": NOT_MEASURED, "robustness": NOT_MEASURED}
    c.impact = {k: NOT_MEASURED for k in ("target", "attack success", "clean-accuracy cost", "natural occurrence")}


def _generic(r: dict[str, Any], c: Characterisation) -> None:
    c.identification = {"what": str(r.get("summary") or c.verdict), "where": NOT_MEASURED, "method": c.probe,
                        "confidence": f"score {_num(r.get('score'))}"}
    c.behaviour = {k: NOT_MEASURED for k in ("clean vs triggered", "position sensitivity", "robustness")}
    c.impact = {k: NOT_MEASURED for k in ("target", "attack success", "clean-accuracy cost", "natural occurrence")}


def _family(probe: str, result: dict[str, Any]) -> str:
    if probe in ("static", "dynamic"):
        return "file"
    if probe in ("spectral", "activation-clustering"):
        return "data"
    if probe == "kl" or "ranking" in result:
        return "lm"
    return "image"


def read_prompts(run: dict[str, Any]) -> str | None:
    """The text of the prompts file a run used, when it is still at hand."""
    path = (run.get("params") or {}).get("prompts_file")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")[:2_000_000]
    except OSError:
        return None


def characterise(run: dict[str, Any], runs: list[dict[str, Any]],
                 prompts: Callable[[dict[str, Any]], str | None] = read_prompts) -> Characterisation:
    """The template for one flagged run; remediation comes from a remediation run on the same subject if any."""
    r = run.get("result") or {}
    p = run.get("params") or {}
    probe = str(run.get("probe"))
    c = Characterisation(int(run["id"]), run.get("subject_id"), probe, str(run.get("verdict")),
                         str(run.get("summary") or run.get("verdict")))
    if probe in ("static", "dynamic"):
        _static(r, c)
    elif probe in ("neural-cleanse",) or isinstance(r.get("impact"), dict) and "trigger" in r["impact"]:
        _image_trigger(r, p, c)
    elif probe == "strip":
        _strip(r, c)
    elif probe in ("spectral", "activation-clustering"):
        _audit(r, c)
    elif probe == "kl" or isinstance(r.get("ranking"), list):
        _lm(r, c, prompts(run))
    elif probe == "fingerprint":
        _fingerprint(r, c)
    else:
        _generic(r, c)
    rem = [x for x in runs if x.get("subject_id") == run.get("subject_id") and x.get("status") == "done"
           and any(k in str(x.get("probe")) for k in _REMEDIATION_PROBES)]
    if rem:
        last = rem[-1]
        c.remediation = [f"run {last['id']} (`{last['probe']}`): {last.get('summary') or last.get('verdict')}"]
        c.remediation_source = "measured"
    else:
        c.remediation = list(_OPTIONS[_family(probe, r)])
    c.atlas = [atlas.label(t) for t in atlas.techniques_for(probe, c.verdict)]
    return c
