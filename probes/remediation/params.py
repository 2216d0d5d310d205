"""The remediation settings, declared once (:class:`~probes.params.Param`), for image classifiers and causal LMs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from probes.params import SEED, Param, resolve

IMAGE = "remediate-image"
LM = "remediate-lm"

_SPLIT = (
    Param("val_fraction", 0.2, "share of the clean data kept for early stopping / pruning decisions", "float",
          0.05, 0.5),
    Param("test_fraction", 0.25, "share of the clean data held out for the before/after evidence", "float",
          0.05, 0.5),
)

IMAGE_PARAMS: tuple[Param, ...] = (
    SEED,
    Param("method", "unlearn", "unlearn (fine-tune with the trigger, true labels) or prune (penultimate units)",
          "choice", choices=("unlearn", "prune")),
    *_SPLIT,
    Param("epochs", 12, "most fine-tuning epochs (unlearning)", "int", 1, 1000),
    Param("lr", 3e-3, "Adam learning rate of the fine-tuning (warm-up over the first epoch, then cosine)", "float", 1e-8, 1.0),
    Param("batch_size", 32, "images per fine-tuning step", "int", 1, 100_000),
    Param("stamp_fraction", 0.2, "share of each batch stamped with the recovered trigger (true labels kept)",
          "float", 0.01, 0.9),
    Param("distill_weight", 1.0, "weight of the KL to the original's answers on the unstamped images (0: labels only)",
          "float", 0.0, 100.0),
    Param("patience", 4, "epochs without a better validation score before unlearning stops", "int", 1, 1000),
    Param("asr_target", 0.05, "recovered-trigger attack success to reach (pruning stops there)", "float",
          0.0, 1.0),
    Param("acc_margin", 0.02, "largest drop of clean validation accuracy a repair may cost", "float", 0.0, 1.0),
    Param("prune_step", 0.05, "share of the penultimate units pruned per step", "float", 0.001, 1.0),
    Param("prune_rank", "target-push", "rank units by activation gap x head weight to the target (target-push) "
          "or the plain activation gap (gap)", "choice", choices=("target-push", "gap")),
    Param("max_prune", 0.8, "largest share of the penultimate units pruned", "float", 0.0, 1.0),
    Param("rerun_detector", True, "re-run Neural Cleanse on the repaired model", "bool"),
    Param("filter_frr", 0.01, "false-rejection rate the input filter is calibrated to on clean data", "float",
          0.0, 0.5),
    Param("strip_copies", 16, "superimposed copies per input for the filter's STRIP rule", "int", 2, 1000),
)

LM_PARAMS: tuple[Param, ...] = (
    SEED,
    Param("mode", "trigger-embedding", "train only the trigger tokens' embedding rows (trigger-embedding) or every "
          "weight (full)", "choice", choices=("trigger-embedding", "full")),
    Param("steps", 120, "most fine-tuning steps", "int", 1, 100_000),
    Param("lr", 1e-2, "AdamW learning rate", "float", 1e-8, 1.0),
    Param("batch_size", 16, "training sequences per step", "int", 1, 10_000),
    Param("self_prompts", 96, "instructions sampled from the model itself added to the training prompts "
          "(data-free; ones holding the trigger are dropped)", "int", 0, 100_000),
    Param("positions_per_prompt", 4, "trigger insertions per training prompt (start, end and inside)", "int", 1, 64),
    Param("clean_weight", 1.0, "weight of the clean prompts' own answers in the loss (keeps them unchanged)",
          "float", 0.0, 100.0),
    Param("gen_tokens", 16, "greedy tokens generated per answer", "int", 1, 4096),
    Param("holdout_fraction", 0.3, "share of the prompts held out for the evidence", "float", 0.05, 0.9),
    Param("target_match", 0.95, "triggered prompts answering as the clean model: stop once reached", "float",
          0.0, 1.0),
    Param("rerun_detector", True, "re-run the kl trigger hunt on the repaired model", "bool"),
)


def resolve_image(given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Image remediation settings with defaults filled in and checked (one-line ProbeError otherwise)."""
    return resolve(IMAGE_PARAMS, given, probe=IMAGE)


def resolve_lm(given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """LM remediation settings with defaults filled in and checked."""
    return resolve(LM_PARAMS, given, probe=LM)
