"""The model's own prompt format, told or found: examiner template, chat template, or inference over common formats.

A divergence hunt in a prompt format the model never saw measures noise. The
format is, in this order: the examiner's ``prompt_template`` (or a named
``prompt_format``); the tokenizer's chat template (system + user turn); else an
inference step that writes the built-in prompts in each of
:data:`~probes.lm_prompts.COMMON_FORMATS` and keeps the one under which the
model answers most *confidently and coherently*:

* ``confidence`` – mean probability of the greedy answer tokens (the first
  ``n_tokens`` after the prompt);
* ``distinct`` – share of distinct two-token answer openings across the varied
  prompts (a model that does not recognise the format "answers" every prompt
  with the same text, typically the next turn marker of its own format);
* ``score = confidence × distinct``.

Formats whose template text the vocabulary can only write with unknown tokens
are skipped. :func:`answer_quality` is also what the out-of-distribution guard
reads for the chosen format.
"""

from __future__ import annotations

from typing import Any

from probes.errors import ProbeError
from probes.lm_prompts import COMMON_FORMATS, PromptFormat, chat_format, examiner_format

COHERENCE_MIN = 0.2
"""Below this answer-quality score the clean prompts get no coherent answer: the hunt is inconclusive."""


def answer_quality(engine, n_tokens: int = 6) -> dict[str, Any]:
    """Confidence, distinctness and their product for the engine's prompts as they stand (greedy answers)."""
    outs, probs = engine.generate([p.ids for p in engine.prompts], n_tokens, return_probs=True)
    conf = [float(sum(p) / len(p)) for p in probs if p]
    openings = [tuple(o[:2]) for o in outs]
    distinct = len(set(openings)) / max(1, len(openings))
    confidence = sum(conf) / len(conf) if conf else 0.0
    examples = [engine.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outs[:3]]
    return {"confidence": round(confidence, 4), "distinct": round(distinct, 4),
            "score": round(confidence * distinct, 4), "examples": examples}


def resolve(model, tokenizer, device: str, instructions, params: dict, cancel=None) -> tuple[PromptFormat, dict]:
    """The prompt format to hunt in and how it was chosen (``how``: told / chat template / inferred)."""
    from probes.lm_engine import BrokenModelError, KLEngine

    template = params.get("prompt_template")
    named = params.get("prompt_format") or "auto"
    if template:
        return examiner_format(template), {"how": "told (prompt_template)"}
    if named != "auto":
        return next(f for f in COMMON_FORMATS if f.name == named), {"how": "told (prompt_format)"}
    if params.get("chat_template", True):
        chat = chat_format(tokenizer, params.get("system_prompt") or "")
        if chat is not None:
            return chat, {"how": "the tokenizer's chat template"}
    scores: dict[str, Any] = {}
    best: tuple[float, PromptFormat] | None = None
    subset = list(instructions)[: params.get("format_prompts", 8)]
    for fmt in COMMON_FORMATS:
        try:
            eng = KLEngine.build(model, tokenizer, device, subset, batch_size=64, cancel=cancel, fmt=fmt)
        except BrokenModelError:
            raise
        except ProbeError as exc:
            scores[fmt.name] = {"skipped": str(exc)[:120]}
            continue
        if any(p.template_unk for p in eng.prompts) or len(eng.prompts) < max(1, len(subset) // 2):
            scores[fmt.name] = {"skipped": "the vocabulary cannot write this format (unknown tokens)"}
            continue
        q = answer_quality(eng)
        scores[fmt.name] = q
        if best is None or q["score"] > best[0] + 1e-9:
            best = (q["score"], fmt)
    if best is None:
        raise ProbeError("no prompt format fits this tokenizer; give one with prompt_template=\"...{instruction}...\"")
    return best[1], {"how": "inferred (highest answer confidence x distinctness on the built-in prompts)",
                     "scores": scores}
