"""Which probes exist, what each needs, and where its code lives (imported lazily).

The CLI and the TUI read this table to offer only the probes that apply to a
subject; nothing here imports torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from probes.errors import ProbeError


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    target: str  # "module:function" with signature run(subject, params, *, progress, cancel)
    needs: str  # "path": runs on the files (no load); "model": runs on a loaded subject
    kinds: tuple[str, ...]  # subject kinds it applies to (empty = any)
    data: str | None = None  # "data" (clean labelled inputs) or "audit" (suspect training set)
    default: bool = True  # part of the default layered scan
    help: str = ""
    check: str | None = None  # "module:function" that validates the examiner's parameters before any work

    def load(self) -> Callable:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)

    def check_params(self, params: dict) -> None:
        """Raise ProbeError for a parameter this probe would refuse (no-op for probes without a checker)."""
        if self.check:
            module, func = self.check.split(":")
            getattr(importlib.import_module(module), func)(params)


IMG = ("image-classifier",)
LM = ("causal-lm",)

PROBES: dict[str, ProbeSpec] = {p.name: p for p in [
    ProbeSpec("static", "probes.static_scan:run", "path", (), help="opcode-level scan of every pickle/zip/safetensors file; nothing is executed"),
    ProbeSpec("dynamic", "probes.dynamic_load:run", "path", (), default=False,
              help="opt-in: load the file in a sealed child process and watch what it does"),
    ProbeSpec("neural-cleanse", "probes.neural_cleanse:run", "model", IMG, data="data",
              help="reverse-engineer a minimal trigger per class; MAD anomaly index > 2 flags a backdoor",
              check="probes.neural_cleanse:check_params"),
    ProbeSpec("strip", "probes.strip:run", "model", IMG, data="data",
              help="entropy of predictions under superimposition; low entropy marks triggered inputs"),
    ProbeSpec("spectral", "probes.spectral:run", "model", IMG, data="audit",
              help="spectral-signature audit of a suspect training set", check="probes.spectral:check_params"),
    ProbeSpec("activation-clustering", "probes.activation_clustering:run", "model", IMG, data="audit",
              help="activation-clustering audit of a suspect training set",
              check="probes.activation_clustering:check_params"),
    ProbeSpec("kl", "probes.kl_probe:run", "model", LM,
              help="KL-divergence trigger hunt over the whole vocabulary, with multi-token extension"),
    ProbeSpec("fingerprint", "probes.fingerprint:run", "model", (),
              help="activation fingerprint scored by a six-detector ensemble against clean baselines"),
]}


def get(name: str) -> ProbeSpec:
    try:
        return PROBES[name]
    except KeyError:
        raise ProbeError(f"unknown probe {name!r}; known: {', '.join(PROBES)}") from None


def applicable(kind: str | None, *, have_data: bool = False, have_audit: bool = False) -> list[str]:
    """Default probes for a subject of ``kind`` given which data files the examiner supplied."""
    names = []
    for spec in PROBES.values():
        if not spec.default:
            continue
        if spec.needs == "model" and (kind is None or (spec.kinds and kind not in spec.kinds)):
            continue
        if spec.data == "audit" and not have_audit:
            continue
        names.append(spec.name)
    return names
