"""Which probes exist, what each needs, what it takes, and where its code lives (imported lazily).

One :class:`ProbeSpec` per probe is the whole contract a new probe signs:
its ``run(target, ctx) -> ProbeResult`` function, what it runs on (files or a
loaded model, which subject kinds), which data files it needs, which earlier
results it reads, and its parameters (:class:`~probes.params.Param`). The CLI,
the TUI, ``workbench probes`` and the docs all read this table; nothing here
imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from probes.errors import ProbeError
from probes.params import SEED, Param, resolve


def _check_prompt_template(value: str) -> None:
    """The examiner's prompt format must hold ``{instruction}`` once (the hunt's own rule, read lazily)."""
    from probes.lm_prompts import examiner_format

    examiner_format(value)


@dataclass(frozen=True)
class ProbeSpec:
    """The declaration of one probe (see the module docstring)."""

    name: str
    target: str  # "module:function" with signature run(target, ctx) -> ProbeResult
    needs: str  # "path": runs on the files (no load); "model": runs on a loaded subject
    kinds: tuple[str, ...]  # subject kinds it applies to (empty = any)
    help: str
    params: tuple[Param, ...] = ()
    data: str | None = None  # "data" (clean labelled inputs) or "audit" (suspect training set)
    data_required: bool = False  # without its data file the probe cannot run (and is left out of default scans)
    uses: tuple[str, ...] = ()  # earlier probes whose results it reads when they ran in the same scan
    default: bool = True  # part of the default layered scan
    version: str = "1"  # bump when results change meaning: stored results of another version are not reused

    def load(self) -> Callable[..., Any]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]

    @property
    def all_params(self) -> tuple[Param, ...]:
        return (SEED, *self.params)

    def param(self, name: str) -> Param:
        for p in self.all_params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return resolve(self.all_params, {}, probe=self.name)

    def resolve_params(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults filled in and every value checked (ProbeError, one line, for anything the probe would refuse)."""
        return resolve(self.all_params, given, probe=self.name)

    def needs_text(self) -> str:
        parts = ["the files (nothing is loaded)" if self.needs == "path" else
                 f"a loaded {' or '.join(self.kinds) if self.kinds else 'model'}"]
        if self.data:
            flag = "--data NPZ (clean labelled inputs)" if self.data == "data" else "--audit NPZ (suspect training set)"
            parts.append(flag + (" — required" if self.data_required else " — optional"))
        if self.uses:
            parts.append("uses the results of " + ", ".join(self.uses) + " when they ran")
        return "; ".join(parts)


IMG = ("image-classifier",)
LM = ("causal-lm",)
_MB = 1 << 20

_AUDIT_SHARED = (
    Param("layer", None, "layer whose activations are audited (default: the penultimate layer)", "str"),
    Param("min_transplant", 0.8, "a split is a trigger when its difference, pasted into other classes' images, "
          "sends at least this share of them to the class", "float", 0.0, 1.0),
    Param("min_asymmetry", 0.25, "...and beats the other group's transplant by this much", "float", 0.0, 1.0),
    Param("mask_fraction", 0.5, "transplant mask: input elements whose |Welch t| is at least this fraction of the "
          "largest", "float", 0.01, 1.0),
    Param("transplant_samples", 200, "other-class images the transplant test stamps", "int", 1, 100_000),
)

PROBES: dict[str, ProbeSpec] = {p.name: p for p in [
    ProbeSpec(
        "static", "probes.static_scan:run", "path", (),
        "opcode-level scan of every pickle/zip/safetensors file; nothing is executed",
        params=(
            Param("max_decompressed_mb", 1024, "bomb guard: largest decompressed stream or archive member read",
                  "float", 1e-3, 1 << 20),
            Param("crc_limit_mb", 64, "archive members up to this size get their CRC checked", "float", 0.0, 1 << 20),
            Param("max_total_decompressed_mb", 2048, "bomb guard: decompressed bytes read over one file's members",
                  "float", 1e-3, 1 << 24),
            Param("max_seconds", 120.0, "time budget of one scan; what is not read by then makes it inconclusive",
                  "float", 0.01, 86_400),
            Param("max_files", 100_000, "files read in one folder; the rest makes the scan inconclusive", "int", 1,
                  100_000_000),
        )),
    ProbeSpec(
        "dynamic", "probes.dynamic_load:run", "path", (),
        "opt-in: load the file in a sealed child process and watch what it does", default=False,
        params=(
            Param("loader", "auto", "how the file's owner would load it", "choice",
                  choices=("auto", "pickle", "torch", "joblib", "numpy")),
            Param("timeout_s", 30.0, "wall-clock limit per file", "float", 0.1, 86_400),
            Param("cpu_s", None, "CPU-seconds limit per file (default: timeout_s)", "float", 0.1, 86_400),
            Param("memory_mb", 2048, "address space a load may add on top of the warm child", "int", 16, 1 << 20),
            Param("max_events", 4000, "events streamed per file (refused ones always are)", "int", 1, 10_000_000),
            Param("max_files", 50, "pickle-bearing files loaded from a folder subject", "int", 1, 100_000),
            Param("events_in_result", 200, "events kept in the result", "int", 0, 1_000_000),
            Param("netns", True, "run the child in its own network namespace (loopback down)", "bool"),
            Param("readonly_fs", True, "mount the child's file system read-only", "bool"),
            Param("baseline", True, "judge the trace with the One-Class SVM of benign loads", "bool"),
            Param("retrain_baseline", False, "rebuild the benign-load baseline before judging", "bool"),
        )),
    ProbeSpec(
        "neural-cleanse", "probes.neural_cleanse:run", "model", IMG,
        "reverse-engineer a minimal trigger per class; MAD anomaly index > 2 flags a backdoor",
        data="data",
        params=(
            Param("steps", 400, "maximum optimisation steps (every active class moves each step)", "int", 1, 1_000_000),
            Param("batch_size", 16, "clean images per class per step", "int", 1, 1_000_000),
            Param("lr", 0.1, "Adam learning rate of masks and patterns", "float", 1e-12, 100.0),
            Param("init_cost", 1e-2, "initial weight of the mask's L1 norm in the loss", "float", 0.0, 1e6),
            Param("init_mask", 0.1, "initial mask value (masks start small and grow where they help)", "float",
                  1e-6, 1.0),
            Param("cost_multiplier", 1.5, "factor the L1 cost moves by after `patience` steps", "float",
                  1.0 + 1e-9, 100.0),
            Param("attack_success_target", 0.95, "success a trigger must reach over the last asr_window batches",
                  "float", 1e-6, 1.0),
            Param("asr_window", 4, "batches the success rate is judged over", "int", 1, 10_000),
            Param("patience", 3, "steps before the cost moves up or down", "int", 1, 1_000_000),
            Param("fixed_cost", False, "hold the L1 cost at init_cost (the textbook ablation; no adaptive cost)",
                  "bool"),
            Param("early_stop_patience", 60, "settled steps without a >1% better norm before a class stops", "int",
                  1, 1_000_000),
            Param("early_stop_threshold", 0.99, "relative improvement below which a step does not count",
                  "float", 1e-6, 1.0),
            Param("threshold", 2.0, "anomaly index flagging a backdoor (MAD, lower tail)", "float", 1e-6, 1e6),
            Param("recheck_margin", 0.6, "an anomaly index this close to the threshold is searched again", "float",
                  0.0, 1e6),
            Param("recheck_runs", 2, "extra searches from other seeds for a borderline index", "int", 0, 100),
            Param("holdout_fraction", 0.3, "share of the clean images held out to measure attack success",
                  "float", 0.01, 0.99),
            Param("max_samples", 2000, "cap on clean images used", "int", 10, 100_000_000),
            Param("refine_steps", 60, "steps refining the suspected class's trigger", "int", 0, 1_000_000),
            Param("refine_attack_success_target", 0.99, "success the refined trigger aims for", "float", 1e-6, 1.0),
            Param("refine_batch_size", 128, "images per refinement step", "int", 1, 1_000_000),
            Param("max_batch_images", 4096, "images per forward pass; more classes are chunked", "int", 1,
                  100_000_000),
            Param("synthetic_n", 512, "synthetic images used when no --data is given", "int", 10, 10_000_000),
            Param("input_min", 0.0, "lowest value of the synthetic images (the model's input scale)", "float"),
            Param("input_max", 1.0, "highest value of the synthetic images", "float"),
        )),
    ProbeSpec(
        "max-margin", "probes.max_margin:run", "model", IMG,
        "data-free: per-class maximum logit margin over optimised inputs; gamma null of the other classes -> p-value",
        data="data",
        params=(
            Param("restarts", 6, "random starting inputs per class (the class keeps its largest margin)", "int",
                  1, 10_000),
            Param("steps", 150, "gradient-ascent steps per start", "int", 1, 1_000_000),
            Param("lr", 0.1, "Adam learning rate on the (sigmoid-parameterised) inputs", "float", 1e-9, 100.0),
            Param("alpha", 0.01, "flag when the largest class's corrected p-value is below this", "float",
                  1e-12, 0.5),
            Param("max_batch_images", 1024, "images per forward pass; more classes x restarts are chunked", "int",
                  1, 100_000_000),
            Param("range_from_data", True, "with --data, take only the per-channel input range from it", "bool"),
            Param("input_min", 0.0, "lowest input value without --data (the model's input scale)", "float"),
            Param("input_max", 1.0, "highest input value without --data", "float"),
        )),
    ProbeSpec(
        "transform-inversion", "probes.transform_inversion:run", "model", IMG,
        "invert a trigger modelled as a warp + global blend (full-image triggers); gamma null of the other classes",
        data="data", data_required=True,
        params=(
            Param("steps", 200, "optimisation steps (every class moves each step)", "int", 1, 1_000_000),
            Param("batch_size", 12, "clean images per class per step", "int", 1, 1_000_000),
            Param("lr", 0.05, "Adam learning rate of patterns, blend weights and flows", "float", 1e-9, 100.0),
            Param("init_cost", 1.0, "initial weight of the transformation's RMS size in the loss", "float", 0.0, 1e6),
            Param("cost_multiplier", 1.5, "factor the cost weight moves by after `patience` steps", "float",
                  1.0 + 1e-9, 100.0),
            Param("patience", 3, "steps before the cost weight moves", "int", 1, 1_000_000),
            Param("attack_success_target", 0.9, "success a transformation must reach over the last asr_window batches",
                  "float", 1e-6, 1.0),
            Param("asr_window", 4, "batches the success rate is judged over", "int", 1, 10_000),
            Param("grid", 4, "control points per side of the warp's flow", "int", 1, 64),
            Param("max_flow", 4.0, "largest warp displacement in pixels", "float", 0.0, 1e4),
            Param("alpha", 0.01, "flag when the smallest class's corrected p-value is below this", "float", 1e-12, 0.5),
            Param("max_samples", 1000, "cap on clean images used", "int", 10, 100_000_000),
            Param("max_batch_images", 2048, "images per forward pass; more classes are chunked", "int", 1,
                  100_000_000),
        )),
    ProbeSpec(
        "pair-search", "probes.pair_search:run", "model", IMG,
        "all-to-all / source-specific: prioritised (source, target) patch search, K-Arm style; names the mapping "
        "(opt-in: minutes a model on a CPU)",
        data="data", data_required=True, default=False,
        params=(
            Param("prescreen_steps", 20, "fixed-cost steps every candidate arm gets before the cut", "int", 1,
                  1_000_000),
            Param("steps", 150, "adaptive-cost steps of the surviving arms", "int", 1, 1_000_000),
            Param("keep_per_source", 2, "arms per source that survive the pre-screen (>= 2: the second is the null)",
                  "int", 2, 1000),
            Param("max_full_classes", 16, "up to this many classes every ordered pair is an arm", "int", 2, 100_000),
            Param("prescreen_targets", 3, "above max_full_classes: targets per source, by mean softmax", "int", 1,
                  100_000),
            Param("arm_batch", 8, "source images per arm per step", "int", 1, 100_000),
            Param("lr", 0.1, "Adam learning rate of masks and patterns", "float", 1e-9, 100.0),
            Param("init_cost", 1e-2, "weight of the mask L1 (fixed in the pre-screen, adaptive after)", "float", 0.0,
                  1e6),
            Param("attack_success_target", 0.9, "share of the source's images an arm's trigger must flip", "float",
                  1e-6, 1.0),
            Param("alpha", 0.01, "flag when the shift-structure p-value (binomial, Bonferroni over shifts) is below this",
                  "float", 1e-12, 0.5),
            Param("max_samples", 1000, "cap on clean images used", "int", 10, 100_000_000),
            Param("max_batch_images", 2048, "images per forward pass; more arms are chunked", "int", 1, 100_000_000),
        )),
    ProbeSpec(
        "strip", "probes.strip:run", "model", IMG,
        "entropy of predictions under superimposition; low entropy marks triggered inputs",
        data="data", data_required=True, uses=("neural-cleanse",),
        params=(
            Param("n_copies", 32, "clean overlays per input", "int", 1, 100_000),
            Param("blend", "add", "add: x + overlay clipped to the data range (paper); average: (1-alpha) x + alpha o",
                  "choice", choices=("add", "average")),
            Param("alpha", 0.5, "overlay weight", "float", 0.0, 1.0),
            Param("frr", 0.01, "false-rejection rate the entropy threshold is set at", "float", 1e-6, 0.999999),
            Param("max_inputs", 200, "inputs per group (calibration, clean test, triggered)", "int", 1, 10_000_000),
            Param("detect_fraction", 0.5, "share of triggered inputs below the threshold that flags a backdoor",
                  "float", 0.0, 1.0),
            Param("quick_nc", True, "without a trigger from Neural Cleanse, recover one with a quick run", "bool"),
            Param("batch_size", 1024, "images per forward pass", "int", 1, 10_000_000),
        )),
    ProbeSpec(
        "spectral", "probes.spectral:run", "model", IMG,
        "spectral-signature audit of a suspect training set",
        data="audit", data_required=True,
        params=(
            Param("n_directions", 2, "top singular directions tried per class", "int", 1, 16),
            Param("min_r2", 0.5, "a projection splits a class when two means explain this share of it", "float",
                  0.0, 1.0),
            *_AUDIT_SHARED,
        )),
    ProbeSpec(
        "activation-clustering", "probes.activation_clustering:run", "model", IMG,
        "activation-clustering audit of a suspect training set",
        data="audit", data_required=True,
        params=(
            Param("n_components", 10, "dimensions kept by the reduction", "int", 1, 4096),
            Param("reduce", "pca+ica", "reduction(s) tried before 2-means", "choice", choices=("pca", "ica", "pca+ica")),
            Param("min_silhouette", 0.10, "silhouette a 2-cluster split must reach", "float", -1.0, 1.0),
            Param("min_relative_size", 0.02, "smallest share of the class the smaller cluster may hold", "float",
                  0.0, 0.5),
            Param("max_relative_size", 0.5, "largest share of the class the smaller cluster may hold", "float",
                  0.0, 0.5),
            Param("silhouette_samples", 1000, "samples the silhouette is estimated on", "int", 10, 10_000_000),
            *_AUDIT_SHARED,
        )),
    ProbeSpec(
        "kl", "probes.kl_probe:run", "model", LM,
        "KL-divergence trigger hunt over the whole vocabulary, with multi-token extension",
        params=(
            Param("prompts_file", None, "examiner prompts, one per line (used first)", "path"),
            Param("builtin_prompts", True, "add the built-in varied prompt set", "bool"),
            Param("max_prompts", 16, "prompts used (the examiner's first)", "int", 1, 100_000),
            Param("candidates", None, "examiner candidates: a list, comma-separated text or a file path", "json"),
            Param("suspicious", True, "add the built-in suspicious strings", "bool"),
            Param("sweep", True, "try every single vocabulary token", "bool"),
            Param("max_sweep", None, "cap on swept token ids (null: the whole vocabulary)", "int", 1, 100_000_000),
            Param("positions", ["prefix", "marker", "suffix"], "insertion points", "list",
                  choices=("prefix", "system", "marker", "suffix")),
            Param("batch_size", 256, "sequences per forward pass (memory: batch x vocabulary floats)", "int", 1,
                  1_000_000),
            Param("share_prefix", False, "reuse the KV cache of the prompt before the insertion point", "bool"),
            Param("quantile", 0.1, "robust aggregate of the KL across prompts (0 = minimum)", "float", 0.0, 1.0),
            Param("top_k", 20, "ranking entries reported", "int", 1, 100_000),
            Param("extend", True, "extend the best candidates to multi-token phrases", "bool"),
            Param("extend_top", 16, "top candidates extended by their own most likely continuation", "int", 0,
                  100_000),
            Param("beam_width", 6, "top singles combined pairwise / appended", "int", 1, 10_000),
            Param("max_len", 3, "longest candidate in tokens", "int", 1, 8),
            Param("confirm_top", 3, "candidates confirmed by generation and hidden states", "int", 0, 1000),
            Param("gen_tokens", 12, "greedy tokens generated per prompt for confirmation", "int", 1, 4096),
            Param("reference", None, "trusted model folder of the same family, for calibration", "path"),
            Param("z_threshold", 4.0, "robust z (log-KL vs the sweep) separating a trigger", "float", 0.1, 1e6),
            Param("kl_floor", 0.5, "...whose KL quantile is also at least this many nats", "float", 0.0, 1e6),
            Param("ratio_min", 3.0, "with a reference: KL must exceed the reference's by this factor", "float",
                  1.0, 1e6),
            Param("partial_interval", 0.25, "seconds between streamed partial rankings (0: every batch)", "float",
                  0.0, 3600.0),
            Param("prompt_template", None, "the model's prompt format, e.g. \"Q: {instruction}\\nA:\" (wins over "
                  "everything else)", "str", check=_check_prompt_template),
            Param("prompt_format", "auto", "auto: chat template, else inferred; or one named common format", "choice",
                  choices=("auto", "plain", "qa", "user-assistant", "alpaca", "tagged", "raw")),
            Param("chat_template", True, "use the tokenizer's chat template when it has one", "bool"),
            Param("system_prompt", "You are a helpful assistant.", "system turn written through a chat template "
                  "(insertion point 'system')", "str"),
            Param("system_position", True, "with a system turn, also insert candidates at its start", "bool"),
            Param("controls", True, "benign control insertions (common words) for the out-of-distribution guard",
                  "bool"),
            Param("control_margin", 2.0, "a candidate must move the model this many times more than any control",
                  "float", 1.0, 1e6),
            Param("invert", True, "target inversion: search the output the model is primed to say", "bool"),
            Param("invert_prompts", 8, "prompts the inversion averages over", "int", 1, 1000),
            Param("invert_top", 48, "first tokens extended autoregressively by the inversion", "int", 1, 100_000),
            Param("gcg", True, "gradient-guided search of a k-token trigger slot", "bool"),
            Param("trigger_len", 4, "tokens in the gradient-searched trigger slot", "int", 1, 8),
            Param("gcg_steps", 20, "coordinate-ascent steps per restart", "int", 1, 100_000),
            Param("gcg_restarts", 3, "restarts from random slots (cycling over the positions)", "int", 1, 10_000),
            Param("gcg_proposals", 32, "single-token swaps evaluated exactly per step", "int", 1, 100_000),
            Param("gcg_top", 32, "best tokens per slot position by gradient that swaps draw from", "int", 1, 100_000),
            Param("gcg_prompts", 8, "prompts in the gradient and exact evaluation batch", "int", 1, 1000),
            Param("sweep_share", 0.3, "largest share of budget_s the single-token sweep may take (1: no cap)",
                  "float", 0.0, 1.0),
            Param("budget_s", 1800.0, "seconds after which the best result so far is reported (stages left are "
                  "listed)", "float", 1.0, 1e7),
        )),
    ProbeSpec(
        "fingerprint", "probes.fingerprint:run", "model", (),
        "activation fingerprint scored by a six-detector ensemble against clean baselines",
        data="data", uses=("neural-cleanse", "strip"),
        params=(
            Param("prompts_file", None, "prompts, one per line, for causal LMs", "path"),
            Param("baseline", None, "folder of trusted models of the same architecture", "path"),
            Param("baseline_name", None, "label of a stored baseline (reported only)", "str"),
            Param("arch", None, "FILE.py:Class for bare state_dicts in the baseline folder", "str"),
            Param("detectors", None, "subset of the six detectors (null: all)", "list",
                  choices=("iforest", "ocsvm", "gmm", "autoencoder", "mahalanobis", "lof")),
            Param("representations", ["raw"], "representations used for the trust score", "list",
                  choices=("raw", "pca", "ica", "rproj")),
            Param("feature_groups", None, "feature-name prefixes to use (null: the defaults; \"all\": every shared "
                  "feature)", "json"),
            Param("loo_max", 30, "largest baseline calibrated leave-one-out (else 10-fold)", "int", 2, 100_000),
        )),
]}


def get(name: str) -> ProbeSpec:
    try:
        return PROBES[name]
    except KeyError:
        raise ProbeError(f"unknown probe {name!r}; known: {', '.join(PROBES)}") from None


def applicable(kind: str | None, *, have_data: bool = False, have_audit: bool = False) -> list[str]:
    """Default probes for a subject of ``kind`` given which data files the examiner supplied.

    A probe whose data file is required and missing is left out (STRIP without ``--data``, the audits
    without ``--audit``); ``kind=None`` (not known before the load) keeps only the file probes.
    """
    names = []
    for spec in PROBES.values():
        if not spec.default:
            continue
        if spec.needs == "model" and (kind is None or (spec.kinds and kind not in spec.kinds)):
            continue
        if spec.data_required and not (have_audit if spec.data == "audit" else have_data):
            continue
        names.append(spec.name)
    return names
