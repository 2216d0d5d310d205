"""The whole repair of one causal LM: answers before, unlearning on a copy, answers after, the hunt again, filter, save.

The trigger is a confirmed ``kl`` hunt result's candidate (:func:`trigger_from_result`)
or the examiner's text. The prompts are split (seeded) into training and
held-out ones; the evidence compares, on held-out prompts only, each model's
greedy answers with the *original* model's answers to the same prompts
without the trigger: clean answer match (clean prompts unchanged) and
triggered-clean-answer rate (the trigger at every insertion point no longer
changes the answer).
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probes.context import RunContext
from probes.errors import ProbeError, explain
from probes.remediation.evidence import LMEvidence
from probes.result import jsonable

POSITIONS = ("prefix", "marker", "suffix")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "chat_template.jinja")


@dataclass
class LMRemediation:
    """Everything ``remediation.json`` holds for a causal LM."""

    trigger: dict[str, Any]
    params: dict[str, Any]
    prompts: dict[str, int]
    before: LMEvidence
    after: LMEvidence
    repair: dict[str, Any]
    filter: dict[str, Any]
    residual_risk: str
    timings: dict[str, float] = field(default_factory=dict)
    saved: dict[str, Any] | None = None
    detector_after: Any = field(default=None, repr=False)  # the re-run hunt's ProbeResult

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"kind": "causal-lm", "method": "unlearn", "params": self.params, "trigger": self.trigger,
                         "prompts": self.prompts, "before": self.before.to_dict(), "after": self.after.to_dict(),
                         "repair": self.repair, "filter_measured": self.filter.get("measured"),
                         "residual_risk": self.residual_risk,
                         "timings": {k: round(v, 3) for k, v in self.timings.items()}, "model": self.saved})


def trigger_from_result(result: dict[str, Any]) -> str:
    """The trigger text of a ``kl`` result: its first candidate confirmed by generation; ProbeError when none."""
    if result.get("probe") not in (None, "kl"):
        raise ProbeError(f"a {result.get('probe')} result holds no language-model trigger")
    for e in result.get("ranking") or []:
        if isinstance(e, dict) and e.get("confirmed") and e.get("candidate"):
            return str(e["candidate"])
    raise ProbeError("no flagged result: the trigger hunt confirmed no trigger; give one with --trigger TEXT")


def prompt_split(prompts: Sequence[str], *, seed: int, holdout_fraction: float) -> tuple[list[str], list[str]]:
    """Seeded split of the prompts into training and held-out ones (each keeps at least one)."""
    uniq = list(dict.fromkeys(p for p in prompts if p.strip()))
    if len(uniq) < 4:
        raise ProbeError(f"remediation needs at least 4 distinct prompts, got {len(uniq)}")
    perm = np.random.default_rng(seed).permutation(len(uniq))
    n_hold = min(len(uniq) - 2, max(2, int(round(len(uniq) * holdout_fraction))))
    return [uniq[i] for i in perm[n_hold:]], [uniq[i] for i in perm[:n_hold]]


def _matches(a: Sequence[tuple[int, ...]], b: Sequence[tuple[int, ...]]) -> float:
    return float(np.mean([x == y for x, y in zip(a, b)])) if len(a) else float("nan")


def measure_lm(engine, reference: Sequence[tuple[int, ...]], trig: Sequence[int], gen_tokens: int, *,
               target_text: str | None = None, examples: int = 3) -> LMEvidence:
    """One side of the table on ``engine``'s prompts (held-out ones), against the original's clean answers."""
    from probes.remediation.lm_unlearn import answers

    tok = engine.tokenizer
    clean = answers(engine, [p.ids for p in engine.prompts], gen_tokens)
    trig_ans: list[tuple[int, ...]] = []
    want: list[tuple[int, ...]] = []
    for pos in POSITIONS:
        trig_ans += answers(engine, [engine.insert(p, trig, pos) for p in engine.prompts], gen_tokens)
        want += list(reference)
    target_rate = None
    if target_text:
        head = " ".join(target_text.split()[:4]).lower()
        target_rate = float(np.mean([tok.decode(list(a), skip_special_tokens=True).strip().lower().startswith(head)
                                     for a in trig_ans]))
    ex = [{"prompt": p.instruction, "original_clean": tok.decode(list(r), skip_special_tokens=True),
           "triggered": tok.decode(list(t), skip_special_tokens=True)}
          for p, r, t in zip(engine.prompts[:examples], reference, trig_ans)]
    return LMEvidence(_matches(clean, reference), _matches(trig_ans, want), target_rate, len(engine.prompts),
                      list(POSITIONS), None, ex)


def confirm_trigger(engine, trig: Sequence[int], gen_tokens: int) -> dict[str, Any]:
    """The hunt's confirmation test of ``trig`` on ``engine``'s model (does it still force one answer?)."""
    from probes import lm_confirm

    clean = lm_confirm.clean_responses(engine, gen_tokens)
    triggered = lm_confirm.triggered_responses(engine, trig, "marker", gen_tokens)
    j = lm_confirm.judge(triggered, clean)
    return {k: j[k] for k in ("confirmed", "target_agreement", "clean_similarity", "changed_fraction")}


def run_hunt(subject, ctx: RunContext, prompts_file: str | None = None):
    """The ``kl`` trigger hunt (default settings) on ``subject``; its :class:`~probes.result.ProbeResult`."""
    from probes import registry
    from probes.lm_hunt import HuntSession

    params = registry.get("kl").resolve_params({"seed": int(ctx.params.get("seed", 0)), "prompts_file": prompts_file})
    inner = ctx.child("kl", params, stage_prefix="hunt: ")
    return HuntSession(subject, params, inner.cancel).hunt(inner)


def hunt_summary(result: dict[str, Any], trigger: str) -> dict[str, Any]:
    """The few hunt figures the table shows, and whether the hunt still names the trigger."""
    ranking = result.get("ranking") or []
    top = ranking[0] if ranking else {}
    still = [e.get("candidate") for e in ranking if e.get("confirmed")]
    return {"verdict": result.get("verdict"), "best_candidate": result.get("best_candidate"),
            "best_z": top.get("z"), "confirmed_candidates": still,
            "trigger_still_confirmed": any(trigger.strip().lower() == str(c).strip().lower() for c in still)}


def save_lm(model, source: Path, out_dir: Path) -> dict[str, Any]:
    """Write the repaired LM as a Hugging Face folder: ``save_pretrained`` (safetensors) + the source's tokenizer files."""
    from probes.remediation.image_model import _sha256

    dest = out_dir / "repaired"
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
    return {"path": str(dest), "format": "hf-folder", "sha256": _sha256(dest)}


def check_saved_lm(model, saved: dict[str, Any], ids: Sequence[int]) -> float:
    """Load the written folder with the safe loader; the largest logit difference to ``model`` on ``ids``."""
    import torch

    from probes.subjects.hf_lm import load_causal_lm

    back = load_causal_lm(saved["path"], device=str(next(model.parameters()).device))
    x = torch.tensor([list(ids)], device=next(model.parameters()).device)
    with torch.inference_mode():
        diff = float((model(input_ids=x).logits - back.model(input_ids=x).logits).abs().max())
    if diff > 1e-4:
        raise ProbeError(f"the written model does not reproduce the repaired one (logits differ by {diff:.2g})")
    return diff


def residual_risk_lm(before: LMEvidence, after: LMEvidence) -> str:
    """The residual risk in plain words."""
    det = after.detector or {}
    parts = [f"triggered prompts answer as the clean model on {100 * after.triggered_clean_answer:.0f}% "
             f"(before: {100 * before.triggered_clean_answer:.0f}%)",
             f"clean prompts unchanged on {100 * after.clean_answer_match:.0f}%"]
    if after.triggered_target_rate is not None:
        parts.append(f"the attacker's answer appears on {100 * after.triggered_target_rate:.0f}% of triggered prompts "
                     f"(before: {100 * (before.triggered_target_rate or 0):.0f}%)")
    if det.get("confirmation"):
        parts.append(f"the trigger is {'STILL' if det['confirmation']['confirmed'] else 'no longer'} confirmed by "
                     "generation")
    if det.get("hunt"):
        h = det["hunt"]
        parts.append(f"the re-run hunt says {h['verdict']}" + (f" (confirms {', '.join(map(repr, h['confirmed_candidates']))})"
                                                                if h["confirmed_candidates"] else ""))
    bad = after.triggered_clean_answer < 0.9 or (det.get("confirmation") or {}).get("confirmed")
    hunt = det.get("hunt") or {}
    if bad:
        head = "High residual risk: the trigger still changes answers. Do not deploy; replace the model."
    elif hunt.get("verdict") == "backdoored" or hunt.get("trigger_still_confirmed"):
        head = ("Medium residual risk: this trigger is neutralised, but the re-run hunt still flags the model; examine "
                "its new candidates (another trigger, or a false alarm) before any use.")
    elif after.clean_answer_match < 0.95:
        head = "Medium residual risk: the trigger is neutralised but clean answers changed. Review before use."
    else:
        head = ("Low measured residual risk for this trigger: other triggers the hunt did not find may remain; "
                "deploy behind the input filter and monitor.")
    return head + " Measured on held-out prompts: " + "; ".join(parts) + "."


def remediate_lm(subject, trigger: str, ctx: RunContext, *, train_prompts: Sequence[str],
                 eval_prompts: Sequence[str], target_text: str | None = None, out_dir: Path | None = None,
                 before_detector: dict[str, Any] | None = None) -> tuple[LMRemediation, Any]:
    """Repair a copy of the causal LM ``subject``; returns the figures and the repaired model."""
    from probes.lm_engine import KLEngine, candidate_ids, prepare_prompt
    from probes.remediation.input_filter import lm_filter
    from probes.remediation.lm_unlearn import answers, sample_prompts, unlearn

    p = ctx.params
    t0 = time.perf_counter()
    tok = subject.tokenizer
    trig = candidate_ids(tok, trigger)
    unk = getattr(tok, "unk_token_id", None)
    if not trig or (unk is not None and unk in trig):
        raise ProbeError(f"trigger {trigger!r} is not in this model's vocabulary")
    gen_tokens = int(p["gen_tokens"])
    held = set(eval_prompts)
    train_prompts = [q for q in train_prompts if q not in held]
    n_given = len(train_prompts)
    if int(p["self_prompts"]) > 0:
        ctx.progress(0, 1, "sampling instructions from the model itself", stage="prompts")
        sampled = sample_prompts(subject.model, tok, subject.device, int(p["self_prompts"]), seed=int(p["seed"]),
                                 exclude_ids=trig, cancel=ctx.cancel)
        train_prompts += [q for q in sampled if q not in held and q not in train_prompts]
    if not train_prompts:
        raise ProbeError("no training prompt left once the held-out ones are set aside")
    ctx.progress(0, 1, "clean answers of the original model", stage="answers")
    orig_train = KLEngine.build(subject.model, tok, subject.device, list(train_prompts), cancel=ctx.cancel)
    orig_eval = KLEngine.build(subject.model, tok, subject.device, list(eval_prompts), cancel=ctx.cancel)
    ref_train = answers(orig_train, [q.ids for q in orig_train.prompts], gen_tokens)
    ref_eval = answers(orig_eval, [q.ids for q in orig_eval.prompts], gen_tokens)
    before = measure_lm(orig_eval, ref_eval, trig, gen_tokens, target_text=target_text)
    before.detector = dict(before_detector or {})
    before.detector["confirmation"] = confirm_trigger(orig_eval, trig, gen_tokens)
    try:
        model = copy.deepcopy(subject.model)
    except Exception as exc:  # noqa: BLE001
        raise ProbeError(f"the language model cannot be copied for repair: {explain(exc, 120)}") from None
    if not any(q.dtype.is_floating_point for q in model.parameters()):
        raise ProbeError("the language model has no trainable floating-point parameters")
    work_train = KLEngine.build(model, tok, subject.device, list(train_prompts), cancel=ctx.cancel)
    t_rep = time.perf_counter()
    report = unlearn(model, subject.model, work_train, orig_train, work_train.prompts, trig, ref_train, ctx).to_dict()
    repair_s = time.perf_counter() - t_rep
    work_eval = KLEngine.build(model, tok, subject.device, list(eval_prompts), cancel=ctx.cancel)
    after = measure_lm(work_eval, ref_eval, trig, gen_tokens, target_text=target_text)
    after.detector = {"confirmation": confirm_trigger(work_eval, trig, gen_tokens)}
    det_s = 0.0
    repaired_subject = None
    after_result = None
    if p["rerun_detector"]:
        from probes.subjects.base import CAUSAL_LM, CausalLM

        repaired_subject = CausalLM(kind=CAUSAL_LM, path=subject.path, format=subject.format, model=model,
                                    tokenizer=tok, device=subject.device)
        t_det = time.perf_counter()
        after_result = run_hunt(repaired_subject, ctx)
        after.detector["hunt"] = hunt_summary(after_result.to_dict(), trigger)
        det_s = time.perf_counter() - t_det
    words = [w for q in eval_prompts for w in [q]]
    trig_texts = [f"{trigger} {q}" for q in words] + [f"{q} {trigger}" for q in words] + [
        " ".join(q.split()[:max(1, len(q.split()) // 2)] + [trigger] + q.split()[max(1, len(q.split()) // 2):])
        for q in words]
    filt = lm_filter(tok, trigger, trig, clean_texts=list(train_prompts) + list(eval_prompts),
                     triggered_texts=trig_texts)
    saved = None
    if out_dir is not None:
        saved = save_lm(model, Path(subject.path), Path(out_dir))
        saved["reload_max_logit_diff"] = check_saved_lm(model, saved, prepare_prompt(tok, eval_prompts[0]).ids)
    timings = {"repair_s": repair_s, "detector_rerun_s": det_s, "total_s": time.perf_counter() - t0}
    result = LMRemediation({"text": trigger, "token_ids": list(trig)}, dict(p),
                           {"train": len(orig_train.prompts), "train_given": n_given,
                            "train_sampled": len(orig_train.prompts) - n_given, "heldout": len(orig_eval.prompts)}, before, after,
                           report, filt, residual_risk_lm(before, after), timings, saved)
    result.detector_after = after_result
    return result, model
