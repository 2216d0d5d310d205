"""The numeric core of language-model trigger hunting: next-token divergence under an inserted candidate.

:class:`KLEngine` holds one causal LM, a set of formatted prompts and the clean
next-token distribution at each prompt's answer position. It inserts candidate
token sequences at named positions (``prefix`` after BOS, ``marker`` right after
the instruction marker, ``suffix`` at the end of the instruction) and computes
KL(P_clean ‖ P_triggered) over the **full** vocabulary at the answer position.

Sequences are batched with left padding, an attention mask and explicit
``position_ids = cumsum(mask) - 1`` (transformers 5 does not derive positions
from the mask in a plain forward). Only the last position's logits are
materialised (``logits_to_keep=1`` where the model supports it), so memory is
``batch_size × vocab`` floats per batch whatever the sweep size.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from probes.errors import ProbeError
from probes.lm_prompts import format_prompt
from probes.progress import check_cancel

POSITIONS = ("prefix", "system", "marker", "suffix")


class BrokenModelError(ProbeError):
    """The model itself cannot be hunted (e.g. NaN logits), whatever the prompt format."""


@dataclass
class PreparedPrompt:
    instruction: str
    text: str
    ids: list[int]
    slots: dict[str, int]  # position name -> insertion index in ids
    template_unk: int = 0  # unknown tokens outside the instruction (a format the vocabulary cannot write)


def _returned_cache(out):
    """The KV cache a forward returned (``cache`` in newer transformers 5.x, ``past_key_values`` before)."""
    keys = out.keys() if hasattr(out, "keys") else ()
    if "cache" in keys:
        return out["cache"]
    return out["past_key_values"] if "past_key_values" in keys else None


@dataclass
class KLEngine:
    model: object
    tokenizer: object
    device: str
    prompts: list[PreparedPrompt]
    batch_size: int = 256
    cancel: object = None
    clean_logp: object = None  # (P, V) torch tensor
    clean_hidden: object = None  # (P, d) torch tensor
    forwards: int = 0
    share_prefix: bool = False  # reuse the KV cache of the prompt before the insertion point
    fallback_reason: str = ""
    fmt: object = None  # the lm_prompts.PromptFormat the prompts were written in (None: the legacy default)
    _keep: bool = field(default=False, repr=False)
    _cache_kw: str = field(default="past_key_values", repr=False)
    _shared_ok: bool = field(default=False, repr=False)
    _prefix_caches: dict = field(default_factory=dict, repr=False)
    _expanded: object = field(default=None, repr=False)  # (key, cache) of the last prefix expanded to a batch

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def build(cls, model, tokenizer, device: str, instructions: Sequence[str], *, batch_size: int = 256,
              cancel=None, share_prefix: bool = False, fmt=None) -> KLEngine:
        prompts = []
        unk = getattr(tokenizer, "unk_token_id", None)
        for instr in instructions:
            p = prepare_prompt(tokenizer, instr, fmt)
            body = p.ids[p.slots["marker"]:p.slots["suffix"]]
            if unk is not None and body and sum(t == unk for t in body) > len(body) // 4:
                continue  # the tokenizer does not know this prompt's words
            prompts.append(p)
        if not prompts:
            raise ProbeError("no usable prompt: the tokenizer maps the prompts to unknown tokens; "
                             "give in-distribution prompts with prompts_file")
        eng = cls(model=model, tokenizer=tokenizer, device=device, prompts=prompts,
                  batch_size=max(1, int(batch_size)), cancel=cancel, share_prefix=share_prefix, fmt=fmt)
        try:
            accepted = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            accepted = {}
        eng._keep = "logits_to_keep" in accepted
        # transformers 5.x renamed the KV-cache argument from past_key_values to cache (5.2x deprecates the old one)
        eng._cache_kw = "cache" if "cache" in accepted else "past_key_values"
        logits, hidden = eng.forward_last([p.ids for p in prompts], want_hidden=True)
        import torch

        if not bool(torch.isfinite(logits).all()):
            raise BrokenModelError("the model's logits are not finite (NaN or inf) on the clean prompts; "
                             "its weights are broken or it does not run in float32 here")
        eng.clean_logp = torch.log_softmax(logits, dim=-1)
        eng.clean_hidden = hidden
        return eng

    @property
    def instructions(self) -> list[str]:
        return [p.instruction for p in self.prompts]

    @property
    def model_vocab(self) -> int:
        return int(self.clean_logp.shape[1])

    # -- forward passes ----------------------------------------------------------------------
    def pad_batch(self, seqs: Sequence[Sequence[int]]):
        """Left-padded ids, attention mask and position_ids for ``seqs``."""
        import torch

        pad = self.tokenizer.pad_token_id
        pad = 0 if pad is None else int(pad)
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    def forward_last(self, seqs: Sequence[Sequence[int]], want_hidden: bool = False):
        """Float32 logits (B, V) at the last position of each sequence (and last-layer states (B, d))."""
        import torch

        ids, mask, pos = self.pad_batch(seqs)
        captured = []
        handle = None
        if want_hidden:
            head = self.model.get_output_embeddings()
            handle = head.register_forward_hook(lambda m, i, o: captured.append(i[0][:, -1, :].detach().float()))
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "use_cache": False}
        if self._keep:
            kwargs["logits_to_keep"] = 1
        try:
            with torch.inference_mode():
                out = self.model(**kwargs)
        finally:
            if handle is not None:
                handle.remove()
        self.forwards += 1
        logits = out.logits[:, -1, :].float()
        return (logits, captured[0] if captured else None) if want_hidden else (logits, None)

    # -- divergences -------------------------------------------------------------------------
    def insert(self, prompt: PreparedPrompt, cand: Sequence[int], position: str) -> list[int]:
        i = prompt.slots[position]
        return prompt.ids[:i] + list(cand) + prompt.ids[i:]

    def kl_of_logits(self, logits, prompt_idx: Sequence[int]):
        """KL(P_clean ‖ P_triggered) per row, in nats (float64 numpy)."""
        import torch

        logq = torch.log_softmax(logits, dim=-1)
        logp = self.clean_logp[list(prompt_idx)]
        kl = (logp.exp() * (logp - logq)).sum(-1)
        return kl.clamp(min=0).double().cpu().numpy()

    def n_batches(self, n_cands: int, n_positions: int) -> int:
        """Forward passes :meth:`iter_kl` will make (an upper bound with mixed candidate lengths)."""
        if self.share_prefix:
            return -(-n_cands // self.batch_size) * n_positions * len(self.prompts)
        return -(-n_cands * n_positions * len(self.prompts) // self.batch_size)

    def iter_kl(self, cands: Sequence[Sequence[int]], positions: Sequence[str]) -> Iterator[tuple[int, np.ndarray]]:
        """Fill a (C, len(positions), P) KL array batch by batch.

        Yields ``(n_candidates_complete, array)`` after every batch (the array is
        shared and filled in place; rows below the count are final). Checks
        ``cancel`` before every batch. With ``share_prefix`` candidates
        go in chunks of ``batch_size``; each forward holds one chunk inserted
        into one prompt at one position, and the prompt's tokens before the
        insertion point come from a KV cache computed once.
        """
        if self.share_prefix:
            try:
                yield from self._iter_kl_shared(cands, positions)
                return
            except (TypeError, AttributeError, NotImplementedError, RuntimeError) as exc:
                if self._shared_ok:  # it worked before: a real error, not a missing cache feature
                    raise
                self.share_prefix = False  # this model's cache cannot be shared: plain batches
                self.fallback_reason = f"{type(exc).__name__}: {exc}"[:200]
        yield from self._iter_kl_padded(cands, positions)

    def _iter_kl_padded(self, cands, positions):
        n_p, n_pos = len(self.prompts), len(positions)
        out = np.full((len(cands), n_pos, n_p), np.nan)
        per_cand = n_pos * n_p
        total = len(cands) * per_cand
        start = 0
        while start < total:
            check_cancel(self.cancel)
            stop = min(total, start + self.batch_size)
            seqs, pidx, where = [], [], []
            for flat in range(start, stop):
                c, rem = divmod(flat, per_cand)
                k, j = divmod(rem, n_p)
                seqs.append(self.insert(self.prompts[j], cands[c], positions[k]))
                pidx.append(j)
                where.append((c, k, j))
            logits, _ = self.forward_last(seqs)
            kl = self.kl_of_logits(logits, pidx)
            for (c, k, j), v in zip(where, kl):
                out[c, k, j] = v
            start = stop
            yield stop // per_cand, out

    def _iter_kl_shared(self, cands, positions):
        n_p, n_pos = len(self.prompts), len(positions)
        out = np.full((len(cands), n_pos, n_p), np.nan)
        for c0 in range(0, len(cands), self.batch_size):
            chunk = [list(c) for c in cands[c0:c0 + self.batch_size]]
            by_len: dict[int, list[int]] = {}
            for r, c in enumerate(chunk):
                by_len.setdefault(len(c), []).append(r)
            for k, pos in enumerate(positions):
                for j, p in enumerate(self.prompts):
                    slot = p.slots[pos]
                    for rows in by_len.values():
                        check_cancel(self.cancel)
                        logits = self.forward_after_prefix(p.ids[:slot], [chunk[r] + p.ids[slot:] for r in rows])
                        kl = self.kl_of_logits(logits, [j] * len(rows))
                        out[[c0 + r for r in rows], k, j] = kl
                    last = k == n_pos - 1 and j == n_p - 1
                    yield (c0 + len(chunk) if last else c0), out

    def prefix_cache(self, prefix: Sequence[int]):
        """KV cache of ``prefix`` (batch 1), memoised per prefix."""
        import torch

        key = tuple(prefix)
        cache = self._prefix_caches.get(key)
        if cache is None:
            ids = torch.tensor([list(prefix)], device=self.device)
            pos = torch.arange(len(prefix), device=self.device)[None]
            with torch.inference_mode():
                out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=pos,
                                 use_cache=True, **({"logits_to_keep": 1} if self._keep else {}))
            self.forwards += 1
            cache = _returned_cache(out)
            if cache is None or not hasattr(cache, "batch_repeat_interleave"):
                raise NotImplementedError("the model returns no shareable KV cache")
            self._prefix_caches[key] = cache
        return cache

    def forward_after_prefix(self, prefix: Sequence[int], rows: Sequence[Sequence[int]]):
        """Last-position float32 logits of ``prefix + row`` for equal-length ``rows``, the prefix from cache."""
        import copy

        import torch

        if not prefix:
            return self.forward_last(rows)[0]
        n, width = len(prefix), len(rows[0])
        key = (tuple(prefix), len(rows))
        if self._expanded is not None and self._expanded[0] == key and hasattr(self._expanded[1], "crop"):
            cache = self._expanded[1]  # the last expanded cache, cut back to the prefix after its forward
        else:
            self._expanded = None
            cache = copy.deepcopy(self.prefix_cache(prefix))
            cache.batch_repeat_interleave(len(rows))
        ids = torch.tensor([list(r) for r in rows], dtype=torch.long, device=self.device)
        pos = torch.arange(n, n + width, device=self.device)[None].expand(len(rows), -1)
        mask = torch.ones((len(rows), n + width), dtype=torch.long, device=self.device)
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, self._cache_kw: cache,
                  "use_cache": True}
        if self._keep:
            kwargs["logits_to_keep"] = 1
        with torch.inference_mode():
            out = self.model(**kwargs)
        self.forwards += 1
        self._shared_ok = True
        if hasattr(cache, "crop"):
            cache.crop(-width)  # drop the rows' own tokens: the cache holds the prefix again
            self._expanded = (key, cache)
        return out.logits[:, -1, :].float()

    def kl_matrix(self, cands, positions) -> np.ndarray:
        out = np.zeros((0, len(positions), len(self.prompts)))
        for _, out in self.iter_kl(cands, positions):  # noqa: B007 - the last yield is the full matrix
            pass
        return out

    def kl_matrix_unbatched(self, cands, positions, per_candidate: bool = False) -> np.ndarray:
        """Baselines: one forward per sequence (textbook), or per candidate (its prompts batched)."""
        out = np.zeros((len(cands), len(positions), len(self.prompts)))
        for c, cand in enumerate(cands):
            for k, pos in enumerate(positions):
                check_cancel(self.cancel)
                if per_candidate:
                    seqs = [self.insert(p, cand, pos) for p in self.prompts]
                    logits, _ = self.forward_last(seqs)
                    out[c, k] = self.kl_of_logits(logits, range(len(self.prompts)))
                else:
                    for j, p in enumerate(self.prompts):
                        logits, _ = self.forward_last([self.insert(p, cand, pos)])
                        out[c, k, j] = self.kl_of_logits(logits, [j])[0]
        return out

    # -- continuations, hidden states, generation ------------------------------------------
    def next_token_scores(self, cands: Sequence[Sequence[int]], positions: Sequence[str]):
        """Sum over prompts of log P(next token | prompt up to and including the candidate): (C, V)."""
        import torch

        rows = []
        for cand, pos in zip(cands, positions):
            check_cancel(self.cancel)
            seqs = [p.ids[:p.slots[pos]] + list(cand) for p in self.prompts]
            acc = None
            for s in range(0, len(seqs), self.batch_size):
                logits, _ = self.forward_last(seqs[s:s + self.batch_size])
                lp = torch.log_softmax(logits, dim=-1).sum(0)
                acc = lp if acc is None else acc + lp
            rows.append(acc)
        return torch.stack(rows) if rows else None

    def context_continuations(self, tokens: Sequence[int], position: str = "marker"):
        """For each single token: (confidence, next id) of the model's most likely next token
        right after it, in the first prompt's context at ``position`` (one short forward per token)."""
        import torch

        p = self.prompts[0]
        ctx = p.ids[:p.slots[position]]
        conf = np.zeros(len(tokens))
        nxt = np.zeros(len(tokens), dtype=np.int64)
        for s in range(0, len(tokens), self.batch_size):
            check_cancel(self.cancel)
            chunk = tokens[s:s + self.batch_size]
            logits, _ = self.forward_last([ctx + [int(t)] for t in chunk])
            prob = torch.softmax(logits, dim=-1)
            prob[:, list(self.special_ids())] = 0
            prob[:, len(self.tokenizer):] = 0  # padded embedding rows the tokenizer never produces
            v, i = prob.max(-1)
            conf[s:s + len(chunk)] = v.double().cpu().numpy()
            nxt[s:s + len(chunk)] = i.cpu().numpy()
        return conf, nxt

    def special_ids(self) -> set[int]:
        ids = set(int(i) for i in (getattr(self.tokenizer, "all_special_ids", None) or []))
        return {i for i in ids if 0 <= i < self.model_vocab}

    def hidden_states(self, cand: Sequence[int], position: str):
        """Last-layer states (P, d) at the answer position with ``cand`` inserted."""
        import torch

        outs = []
        seqs = [self.insert(p, cand, position) for p in self.prompts]
        for s in range(0, len(seqs), self.batch_size):
            check_cancel(self.cancel)
            _, h = self.forward_last(seqs[s:s + self.batch_size], want_hidden=True)
            outs.append(h)
        return torch.cat(outs)

    def generate(self, seqs: Sequence[Sequence[int]], max_new_tokens: int = 12, return_probs: bool = False):
        """Greedy continuations of left-padded ``seqs`` with a KV cache and correct positions
        (with ``return_probs``, also each chosen token's probability)."""
        import torch

        eos = self.tokenizer.eos_token_id
        results: list[list[int]] = []
        chosen_p: list[list[float]] = []
        for s in range(0, len(seqs), self.batch_size):
            check_cancel(self.cancel)
            ids, mask, pos = self.pad_batch(seqs[s:s + self.batch_size])
            done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
            gen = []
            gen_p = []
            past = None
            step_ids, step_pos = ids, pos
            with torch.inference_mode():
                for _ in range(max_new_tokens):
                    kwargs = {"input_ids": step_ids, "attention_mask": mask, "position_ids": step_pos,
                              "use_cache": True}
                    if past is not None:
                        kwargs[self._cache_kw] = past
                    if self._keep:
                        kwargs["logits_to_keep"] = 1
                    out = self.model(**kwargs)
                    self.forwards += 1
                    past = _returned_cache(out)
                    last = out.logits[:, -1, :].float()
                    nxt = last.argmax(-1)
                    if return_probs:
                        gen_p.append(torch.softmax(last, -1).gather(1, nxt[:, None])[:, 0])
                    gen.append(torch.where(done, torch.full_like(nxt, -1), nxt))
                    if eos is not None:
                        done |= nxt == eos
                    if bool(done.all()):
                        break
                    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                    ids = torch.cat([ids, nxt[:, None]], dim=1)
                    pos = torch.cat([pos, pos[:, -1:] + 1], dim=1)
                    # with a KV cache only the new token goes in; a model that returns none sees it all again
                    step_ids, step_pos = (ids[:, -1:], pos[:, -1:]) if past is not None else (ids, pos)
            g = torch.stack(gen, dim=1).cpu().tolist()
            gp = torch.stack(gen_p, dim=1).cpu().tolist() if return_probs else [[]] * len(g)
            for row, prow in zip(g, gp):
                results.append([t for t in row if t >= 0 and t != eos])
                chosen_p.append([float(q) for t, q in zip(row, prow) if t >= 0])
        return (results, chosen_p) if return_probs else results


def prepare_prompt(tokenizer, instruction: str, fmt=None) -> PreparedPrompt:
    """Token ids of the formatted prompt and its insertion slots (``system`` only with a system turn)."""
    text, start, end, add_special, sys_at = format_prompt(tokenizer, instruction, fmt)
    bos = getattr(tokenizer, "bos_token_id", None)
    system = None
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offs = [tuple(o) for o in enc["offset_mapping"]]
        specials = set(getattr(tokenizer, "all_special_ids", []) or [])
        real = [i for i in range(len(ids)) if not (ids[i] in specials and offs[i][0] == offs[i][1])]
        marker = next((i for i in real if offs[i][1] > start), len(ids))
        suffix = next((i for i in real if offs[i][0] >= end and i >= marker), len(ids))
        if sys_at is not None:
            system = next((i for i in real if offs[i][1] > sys_at), None)
    else:
        head = list(tokenizer(text[:start], add_special_tokens=add_special)["input_ids"])
        body = list(tokenizer(text[start:end], add_special_tokens=False)["input_ids"])
        tail = list(tokenizer(text[end:], add_special_tokens=False)["input_ids"])
        ids = head + body + tail
        marker, suffix = len(head), len(head) + len(body)
    prefix = 0
    while prefix < len(ids) and bos is not None and ids[prefix] == bos:
        prefix += 1
    if suffix >= len(ids):
        raise ProbeError(f"prompt {instruction!r} leaves no answer position after the instruction")
    slots = {"prefix": prefix, "marker": marker, "suffix": suffix}
    if system is not None and system < marker:
        slots["system"] = system
    unk = getattr(tokenizer, "unk_token_id", None)
    n_unk = sum(1 for i, t in enumerate(ids) if unk is not None and t == unk and not marker <= i < suffix)
    return PreparedPrompt(instruction=instruction, text=text, ids=ids, slots=slots, template_unk=n_unk)


def candidate_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a text candidate as it reads mid-sentence (space-prefixed where the tokenizer cares)."""
    ids = list(tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"])
    while ids and not tokenizer.decode([ids[0]]).strip():
        ids = ids[1:]
    if not ids:
        ids = list(tokenizer(text.strip(), add_special_tokens=False)["input_ids"])
    return ids
