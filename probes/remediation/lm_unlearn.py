"""LM unlearning: fine-tune a copy so prompts carrying the confirmed trigger get the clean model's own answers.

Training pairs are built from the original model itself: for every training
prompt its greedy answer *without* the trigger is the answer both for the
prompt with the trigger inserted (``positions_per_prompt`` places: after BOS,
at the start and end of the instruction, and inside it) and for the prompt as
it stands (weight ``clean_weight``). What is trained is ``mode``
(:func:`trainable`): by default only the trigger tokens' input-embedding rows
(an adapter of a few hundred numbers; clean prompts are untouched by
construction), or every weight. The loss is distillation, not hard labels:
KL(original on the clean prompt || copy on the training prompt) over the whole
vocabulary at every answer position, so the copy keeps the original's full
answer distribution (hard greedy labels changed its other answers) while the
trigger is made meaningless. AdamW, bounded steps; the result is saved as
the subject was (the trained rows live in the model; nothing to merge).
Full fine-tuning was tried first on the tiny LMs: with 16 + 96 prompts it
changed 50-60% of held-out clean answers (docs/remediation.md).
Every ``check_every`` steps the training prompts are re-generated; it stops
once ``target_match`` of the triggered prompts and of the clean ones answer as
the original did.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probes.context import RunContext

CHECK_EVERY = 10
PLATEAU = 3  # checks without a better triggered match before stopping


@dataclass
class LMUnlearnReport:
    """What the fine-tuning did."""

    steps_run: int
    n_examples: int
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""
    duration_s: float = 0.0
    trained: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"method": "unlearn", "steps_run": self.steps_run, "n_examples": self.n_examples,
                "history": self.history, "stopped": self.stopped, "duration_s": round(self.duration_s, 3),
                "trained": self.trained}


def sample_prompts(model, tokenizer, device: str, n: int, *, seed: int, exclude_ids: Sequence[int] = (),
                   max_tokens: int = 24, cancel=None) -> list[str]:
    """Instructions written by the model itself: sampled after the prompt template's instruction marker.

    A data-free source of in-distribution prompts (an instruction-tuned model has learned what its
    instructions look like). A sampled instruction that contains ``exclude_ids`` (the trigger) is dropped:
    its "clean" answer would be the attacker's.
    """
    import torch

    from probes.lm_prompts import format_prompt
    from probes.progress import check_cancel

    text, start, _end, add_special, _sys_at = format_prompt(tokenizer, "x")
    prefix = list(tokenizer(text[:start], add_special_tokens=add_special)["input_ids"])
    gen = torch.Generator(device="cpu").manual_seed(seed)
    stop = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
    marker = text[start + 1:].strip()[:1] or "#"  # the template's first character after the instruction
    out: list[str] = []
    tries = 0
    while len(out) < n and tries < 4 * n:
        check_cancel(cancel)
        b = min(64, 2 * (n - len(out)))
        tries += b
        ids = torch.tensor([prefix] * b, device=device)
        done = torch.zeros(b, dtype=torch.bool)
        rows: list[list[int]] = [[] for _ in range(b)]
        with torch.inference_mode():
            for _ in range(max_tokens):
                logits = model(input_ids=ids).logits[:, -1].float().cpu()
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)[:, 0]
                for i, t in enumerate(nxt.tolist()):
                    if done[i]:
                        continue
                    piece = tokenizer.decode([t])
                    if t in stop or marker in piece or "\n" in piece:
                        done[i] = True
                    else:
                        rows[i].append(t)
                if bool(done.all()):
                    break
                ids = torch.cat([ids, nxt[:, None].to(device)], dim=1)
        for i, r in enumerate(rows):
            if not done[i] or len(r) < 2:
                continue
            k = len(exclude_ids)
            if k and any(r[j:j + k] == list(exclude_ids) for j in range(len(r) - k + 1)):
                continue
            t = tokenizer.decode(r, skip_special_tokens=True).strip()
            if t and t not in out:
                out.append(t)
    return out[:n]


def insertion_points(prompt, n: int, rng: np.random.Generator) -> list[int]:
    """``n`` token indices to insert the trigger at: the named slots first, then random places inside."""
    named = [prompt.slots["prefix"], prompt.slots["marker"], prompt.slots["suffix"]]
    out = list(dict.fromkeys(named))[:n]
    lo, hi = prompt.slots["marker"], prompt.slots["suffix"]
    while len(out) < n and hi > lo:
        out.append(int(rng.integers(lo, hi + 1)))
    return out


def triggered_ids(prompt, trig: Sequence[int], at: int) -> list[int]:
    return prompt.ids[:at] + list(trig) + prompt.ids[at:]


def answers(engine, seqs: Sequence[Sequence[int]], gen_tokens: int) -> list[tuple[int, ...]]:
    """Greedy answers (token ids, end-of-sequence dropped) of ``engine``'s model to ``seqs``."""
    return [tuple(a) for a in engine.generate(list(seqs), gen_tokens)]


def _pad(seqs: Sequence[Sequence[int]], pad: int):
    import torch

    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, :len(x)] = torch.tensor(list(x))
        mask[i, :len(x)] = 1
    return ids, mask


def answer_logp(model, rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad: int, device: str, batch: int = 32):
    """Per row ``(prompt, answer)``: log-probabilities (len(answer), V) the model gives at the answer's positions."""
    import torch

    out = []
    for s in range(0, len(rows), batch):
        chunk = rows[s:s + batch]
        ids, mask = _pad([list(a) + list(b) for a, b in chunk], pad)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        lp = torch.log_softmax(logits.float(), -1)
        for i, (a, b) in enumerate(chunk):
            out.append(lp[i, len(a) - 1:len(a) - 1 + len(b)])
    return out


def trainable(model, trig: Sequence[int], mode: str):
    """The parameters to train and, for ``trigger-embedding``, the row mask of the input embedding.

    ``trigger-embedding`` (the default): only the trigger tokens' rows of the input embedding are trained;
    every other weight is frozen, so a prompt without those tokens is answered exactly as before. Tied
    output embeddings are untied first (the output layer keeps the original rows). ``full``: every weight.
    """
    import torch

    if mode == "full":
        params = [q for q in model.parameters() if q.dtype.is_floating_point]
        for q in params:
            q.requires_grad_(True)
        return params, None
    emb_in, emb_out = model.get_input_embeddings(), model.get_output_embeddings()
    for q in model.parameters():
        q.requires_grad_(False)
    if emb_out is not None and emb_out.weight is emb_in.weight:
        emb_out.weight = torch.nn.Parameter(emb_in.weight.detach().clone(), requires_grad=False)
        model.config.tie_word_embeddings = False
        if hasattr(model, "_tied_weights_keys"):
            model._tied_weights_keys = None
    emb_in.weight.requires_grad_(True)
    rows = torch.zeros((emb_in.weight.shape[0], 1), device=emb_in.weight.device)
    rows[list(dict.fromkeys(int(t) for t in trig))] = 1.0
    return [emb_in.weight], rows


def quietest_token(engine, trig: Sequence[int], *, seed: int, n: int = 128) -> int:
    """Among up to ``n`` (seeded) ordinary tokens, the one whose insertion changes the next-token distribution least.

    Mean KL over ``engine``'s first 16 prompts and the three insertion points, as the hunt measures it.
    """
    from dataclasses import replace

    k = min(16, len(engine.prompts))
    engine = replace(engine, prompts=engine.prompts[:k], clean_logp=engine.clean_logp[:k],
                     clean_hidden=engine.clean_hidden[:k])
    specials = engine.special_ids() | {int(t) for t in trig}
    vocab = [t for t in range(engine.model_vocab) if t not in specials]
    if len(vocab) > n:
        vocab = sorted(np.random.default_rng(seed).choice(vocab, size=n, replace=False).tolist())
    kl = engine.kl_matrix([(t,) for t in vocab], ["prefix", "marker", "suffix"])
    return int(vocab[int(np.argmin(kl.mean(axis=(1, 2))))])


def unlearn(model, teacher, engine, teacher_engine, prompts, trig: Sequence[int], clean_answers: Sequence[tuple[int, ...]],
            ctx: RunContext) -> LMUnlearnReport:
    """Fine-tune ``model`` in place towards ``teacher`` (the original); ``engine`` wraps ``model``."""
    import torch

    p = ctx.params
    t0 = time.perf_counter()
    rng = np.random.default_rng(int(p["seed"]))
    gen = torch.Generator().manual_seed(int(p["seed"]))
    tok = engine.tokenizer
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    trig_seqs: list[list[int]] = []
    trig_want: list[tuple[int, ...]] = []
    check_rng = np.random.default_rng(int(p["seed"]))
    for pr, ans in zip(prompts, clean_answers):
        for at in insertion_points(pr, int(p["positions_per_prompt"]), check_rng):
            trig_seqs.append(triggered_ids(pr, trig, at))
            trig_want.append(ans)
    dev = engine.device
    # the teacher: the original model's distributions over the clean answer given the clean prompt
    with torch.inference_mode():
        teach: dict[tuple[int, ...], Any] = {}
        uniq = list(dict.fromkeys((tuple(pr.ids), ans + ((eos,) if eos is not None else ()))
                                  for pr, ans in zip(prompts, clean_answers)))
        for (a, _b), lp in zip(uniq, answer_logp(teacher, uniq, pad, dev)):
            teach[a] = lp.detach()
    ans_of = {tuple(pr.ids): ans + ((eos,) if eos is not None else ()) for pr, ans in zip(prompts, clean_answers)}
    rows = []
    for pr in prompts:
        key = tuple(pr.ids)
        for seq, w in [(pr.ids, float(p["clean_weight"]))] + [
                (triggered_ids(pr, trig, at), 1.0) for at in insertion_points(pr, int(p["positions_per_prompt"]), rng)]:
            if w > 0:
                rows.append((list(seq), ans_of[key], teach[key], w))
    params, row_mask = trainable(model, trig, str(p["mode"]))
    if row_mask is not None:
        quiet = quietest_token(teacher_engine, trig, seed=int(p["seed"]))
        with torch.no_grad():  # start from a word the model already ignores
            for t in dict.fromkeys(int(t) for t in trig):
                params[0][t] = params[0][quiet].detach().clone()
        report_init = f"trigger rows started from token {quiet} ({tok.decode([quiet]).strip()!r}), the least disruptive"
    else:
        report_init = "all weights trained"
    opt = torch.optim.AdamW(params, lr=float(p["lr"]), weight_decay=0.0)
    steps, bs = int(p["steps"]), int(p["batch_size"])
    n_train = sum(int(q.numel()) for q in params) if row_mask is None else int(row_mask.sum()) * int(params[0].shape[1])
    report = LMUnlearnReport(0, len(rows), trained=f"{p['mode']}: {n_train} parameters; {report_init}")
    report.stopped = f"ran all {steps} steps"
    order = torch.randperm(len(rows), generator=gen)
    pos = 0
    for step in range(1, steps + 1):
        ctx.check_cancel()
        if pos + bs > len(order):
            order, pos = torch.randperm(len(rows), generator=gen), 0
        chunk = [rows[i] for i in order[pos:pos + bs].tolist()]
        pos += bs
        model.train()
        student = answer_logp(model, [(r[0], r[1]) for r in chunk], pad, dev, batch=len(chunk))
        # KL(teacher || student) over the whole vocabulary at every answer position
        kls = torch.stack([(r[2].exp() * (r[2] - lp)).sum(-1).mean() for r, lp in zip(chunk, student)])
        wts = torch.tensor([r[3] for r in chunk], device=kls.device)
        loss = (kls * wts).sum() / wts.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if row_mask is not None:  # only the trigger tokens' embedding rows move
            params[0].grad.mul_(row_mask)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        model.eval()
        report.steps_run = step
        ctx.progress(step, steps, f"LM unlearning, KL {float(loss.detach()):.4f}", stage="unlearn")
        if step % CHECK_EVERY == 0 or step == steps:
            got_t = answers(engine, trig_seqs, int(p["gen_tokens"]))
            got_c = answers(engine, [pr.ids for pr in prompts], int(p["gen_tokens"]))
            mt = float(np.mean([a == b for a, b in zip(got_t, trig_want)]))
            mc = float(np.mean([a == b for a, b in zip(got_c, clean_answers)]))
            report.history.append({"step": step, "kl": round(float(loss.detach()), 5), "train_triggered_match": round(mt, 4),
                                   "train_clean_match": round(mc, 4)})
            if mt >= float(p["target_match"]) and mc >= float(p["target_match"]):
                report.stopped = (f"{100 * mt:.0f}% of triggered and {100 * mc:.0f}% of clean training prompts answer "
                                  "as the original did without the trigger")
                break
            recent = [h["train_triggered_match"] for h in report.history[-PLATEAU:]]
            older = [h["train_triggered_match"] for h in report.history[:-PLATEAU]]
            if older and max(recent) <= max(older):
                report.stopped = f"no better triggered match on the training prompts for {PLATEAU} checks"
                break
    model.eval()
    report.duration_s = time.perf_counter() - t0
    return report
