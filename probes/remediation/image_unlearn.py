"""Unlearning (Neural Cleanse, section VI-C): fine-tune a copy on clean data where a share carries the trigger, true labels.

Each batch is clean training images; ``stamp_fraction`` of them are stamped
with the recovered trigger but keep their true label, so the model learns that
the trigger means nothing. With ``distill_weight`` > 0 the loss also asks the
copy to give each (stamped or clean) image the class distribution the
original gives the *unstamped* image (KL to the original's soft answers): the
clean decision boundary carries over from the original, not only from the
few labels an examiner has. After every epoch the validation split scores the
copy: clean accuracy must stay within ``acc_margin`` of the original's, and
among epochs that do, the one with the lowest recovered-trigger success is
kept (``patience`` epochs without improvement stop it early). When no epoch
stays within the margin (a small validation split makes two images two
points), the epoch with the best trade of success against accuracy lost is
kept instead of the backdoored original, and the report says the margin was
exceeded. The model is
trained in place (give it a working copy).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probes.context import RunContext
from probes.remediation.evidence import ImageTrigger, Split, accuracy, attack_success


@dataclass
class UnlearnReport:
    """What the fine-tuning did: epochs run, the one kept, and the validation figures of each."""

    epochs_run: int
    best_epoch: int  # 0 = the original weights were kept
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""
    duration_s: float = 0.0
    margin_exceeded: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"method": "unlearn", "epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                "history": self.history, "stopped": self.stopped, "duration_s": round(self.duration_s, 3),
                "accuracy_margin_exceeded": self.margin_exceeded}


def _score(subject, s: Split, trig: ImageTrigger, base_acc: float, margin: float) -> tuple[float, float, float]:
    acc = accuracy(subject, s.x_val, s.y_val)
    asr = attack_success(subject, s.x_val, s.y_val, trig) or 0.0
    # lower is better: an epoch over the accuracy margin ranks below every epoch within it
    penalty = 0.0 if base_acc - acc <= margin else 1.0 + (base_acc - acc)
    return penalty + asr, acc, asr


def unlearn(subject, trig: ImageTrigger, s: Split, ctx: RunContext, teacher=None) -> UnlearnReport:
    """Fine-tune ``subject.module`` in place (see the module docstring); ``ctx.params`` are the image settings.

    ``teacher`` (the original module, frozen) adds the distillation term.
    """
    import torch

    p = ctx.params
    t0 = time.perf_counter()
    dev = subject.device
    module = subject.module
    gen = torch.Generator().manual_seed(int(p["seed"]))
    rng = np.random.default_rng(int(p["seed"]))
    x = torch.from_numpy(np.ascontiguousarray(s.x_train, np.float32)).to(dev)
    y = torch.from_numpy(np.asarray(s.y_train, np.int64)).to(dev)
    mask = torch.as_tensor(np.asarray(trig.mask, np.float32), device=dev)[None, None]
    pattern = torch.as_tensor(np.asarray(trig.pattern, np.float32), device=dev)[None]
    epochs, bs = int(p["epochs"]), int(p["batch_size"])
    dw = float(p["distill_weight"])
    margin = float(p["acc_margin"])
    base_score, base_acc, base_asr = _score(subject, s, trig, accuracy(subject, s.x_val, s.y_val), margin)
    history = [{"epoch": 0, "val_accuracy": round(base_acc, 4), "val_recovered_asr": round(base_asr, 4)}]
    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    best, best_epoch, since = base_score, 0, 0
    params = [q for q in module.parameters() if q.dtype.is_floating_point]
    opt = torch.optim.Adam(params, lr=float(p["lr"]))
    steps_per_epoch = max(1, (len(x) + bs - 1) // bs)
    total = epochs * steps_per_epoch
    warm = steps_per_epoch  # a fresh Adam on a converged model jolts it: warm up over the first epoch, then cosine

    def schedule(i: int) -> float:
        import math

        return (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    stopped = f"ran all {epochs} epochs"
    epoch = 0
    fallback: tuple[float, int, dict] | None = None
    margin_exceeded = False
    for epoch in range(1, epochs + 1):
        module.train()
        perm = torch.randperm(len(x), generator=gen).to(dev)
        for i in range(steps_per_epoch):
            ctx.check_cancel()
            idx = perm[i * bs:(i + 1) * bs]
            xb, yb = x[idx], y[idx]
            stamp = torch.from_numpy(rng.random(len(idx)) < float(p["stamp_fraction"])).to(dev)
            x_in = xb
            if bool(stamp.any()):
                x_in = xb.clone()
                x_in[stamp] = (1 - mask) * xb[stamp] + mask * pattern
            logits = module(x_in)
            loss = torch.nn.functional.cross_entropy(logits, yb)
            if teacher is not None and dw > 0:
                # the copy should answer a stamped image as the original answers it *unstamped*
                with torch.no_grad():
                    soft = torch.log_softmax(teacher(xb), dim=1)
                logp = torch.log_softmax(logits, dim=1)
                loss = loss + dw * (soft.exp() * (soft - logp)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ctx.progress((epoch - 1) * steps_per_epoch + i + 1, epochs * steps_per_epoch,
                         f"unlearning epoch {epoch}/{epochs}", stage="unlearn")
        module.eval()
        score, acc, asr = _score(subject, s, trig, base_acc, margin)
        history.append({"epoch": epoch, "val_accuracy": round(acc, 4), "val_recovered_asr": round(asr, 4)})
        if score < best - 1e-9:
            best, best_epoch, since = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        elif best_epoch:  # patience runs once an epoch within the accuracy margin has been kept
            since += 1
        # the fallback if no epoch stays within the margin: the best trade-off of success and accuracy lost
        trade = asr + 2.0 * max(0.0, base_acc - acc)
        if asr <= base_asr / 2 and (fallback is None or trade < fallback[0]):
            fallback = (trade, epoch, {k: v.detach().clone() for k, v in module.state_dict().items()})
        if best_epoch and best < 1.0 and history[best_epoch]["val_recovered_asr"] <= float(p["asr_target"]) \
                and since >= 1:
            stopped = f"recovered trigger below {p['asr_target']:g} on validation and no better epoch since"
            break
        if since >= int(p["patience"]):
            stopped = f"no better validation score for {since} epochs"
            break
    if best_epoch == 0 and fallback is not None:
        _, best_epoch, best_state = fallback
        margin_exceeded = True
        stopped += (f"; no epoch kept validation accuracy within {100 * margin:.1f} points, so epoch {best_epoch} "
                    "(the best trade of trigger success against accuracy) is kept: the margin is EXCEEDED")
    module.load_state_dict(best_state)
    module.eval()
    return UnlearnReport(epoch, best_epoch, history, stopped, time.perf_counter() - t0, margin_exceeded)
