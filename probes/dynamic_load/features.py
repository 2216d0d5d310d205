"""From a load trace (plain dicts from the sandbox) to a fixed-length feature vector.

Counts are log-scaled; sizes of the model (how many tensors) do not enter, only
*distinct* names, so a big benign checkpoint looks like a small one. Three
features compare the trace with the vocabulary of benign loads (packages of the
globals a pickle resolves, packages imported during the load, callables the
pickle stream calls); they are what lets the One-Class SVM notice a payload
that no rule names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

FEATURES = (
    "find_class_distinct", "find_class_pkgs", "find_class_pkgs_novel",
    "calls_distinct", "calls_function_distinct", "calls_novel",
    "imports", "imports_pkgs_novel",
    "reads_outside_libs", "writes",
    "exec_compile_nonfile", "exec_compile_unpickling",
    "refused", "other_events", "putenv",
    "load_failed", "abnormal_exit",
)
# Python 2 / old-numpy spellings of the same globals.
_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg", "numpy.core": "numpy._core"}

KNOWN_STREAMED = {"pickle.find_class", "pickle.call", "import", "open", "exec", "compile"}
# A function the stream calls counts as familiar if its package is familiar and its
# name says it rebuilds an object (reconstructors follow these conventions across versions).
_RECONSTRUCTOR = re.compile(r"(^|\.)_*(rebuild|reconstruct|unpickle|restore|from_|load_|_?[a-z_]*ctor)", re.I)


def _pkg(name: str) -> str:
    return (name or "").split(".")[0]


def canonical_module(module: str) -> str:
    for old, new in _ALIASES.items():
        if module == old or module.startswith(old + "."):
            return new + module[len(old):]
    return module


def summarize(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The sets a feature vector (and the vocabulary) is built from."""
    find_class, calls, fcalls, imports = set(), set(), set(), set()
    for ev in events:
        e, a = ev.get("e"), ev.get("a") or []
        if e == "pickle.find_class" and len(a) >= 2:
            find_class.add(f"{canonical_module(str(a[0]))}.{a[1]}")
        elif e == "pickle.call" and a:
            calls.add(a[0])
            if len(a) > 1 and a[1] != "class":
                fcalls.add(a[0])
        elif e == "import" and a and (len(a) < 2 or a[1] in ("None", None)):
            imports.add(a[0])
    return {"find_class": sorted(find_class), "calls": sorted(calls), "function_calls": sorted(fcalls),
            "imports": sorted(imports)}


def empty_vocab() -> dict[str, list[str]]:
    return {"find_class_pkgs": [], "import_pkgs": [], "calls": []}


def build_vocab(summaries: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    fc, imp, calls = set(), set(), set()
    for s in summaries:
        fc.update(_pkg(x) for x in s["find_class"])
        imp.update(_pkg(x) for x in s["imports"])
        calls.update(s["calls"])
    return {"find_class_pkgs": sorted(fc), "import_pkgs": sorted(imp), "calls": sorted(calls)}


def familiar_call(name: str, vocab: dict[str, list[str]]) -> bool:
    if name in set(vocab.get("calls", ())):
        return True
    pkgs = set(vocab.get("find_class_pkgs", ()))
    return _pkg(name) in pkgs and bool(_RECONSTRUCTOR.search(name.split(".")[-1]))


def unfamiliar_calls(summary: dict[str, Any], vocab: dict[str, list[str]]) -> list[str]:
    """Callables the pickle stream called that no benign load calls: functions by name,
    classes by package (a class from a package no benign pickle references)."""
    pkgs = set(vocab.get("find_class_pkgs", ()))
    out = [c for c in summary["function_calls"] if not familiar_call(c, vocab)]
    fcalls = set(summary["function_calls"])
    out += [c for c in summary["calls"] if c not in fcalls and _pkg(c) not in pkgs and c not in set(vocab.get("calls", ()))]
    return out


def vector(trace: dict[str, Any], vocab: dict[str, list[str]], summary: dict[str, Any] | None = None) -> dict[str, float]:
    """Named features of one trace (``trace``: events, counts, load_ok, abnormal)."""
    events = trace.get("events") or []
    counts = trace.get("counts") or {}
    s = summary or summarize(events)
    fc_pkgs = {_pkg(x) for x in s["find_class"]}
    imp_pkgs = {_pkg(x) for x in s["imports"]}
    known_fc, known_imp = set(vocab.get("find_class_pkgs", ())), set(vocab.get("import_pkgs", ()))
    calls_novel = [c for c in s["calls"] if not familiar_call(c, vocab)]
    nonpyc = writes = ex_nonfile = ex_unpick = refused = other = 0
    for ev in events:
        e, info = ev.get("e"), ev.get("i") or {}
        if ev.get("r"):
            refused += 1
        if e == "open":
            if info.get("write"):
                writes += 1
            elif not info.get("lib"):  # library files read by the import machinery are like imports
                nonpyc += 1
        elif e in ("exec", "compile"):
            if not info.get("from_file") and not info.get("importing"):
                ex_nonfile += 1
            if info.get("unpickler_active"):
                ex_unpick += 1
        elif e not in KNOWN_STREAMED:
            other += 1
    raw = {
        "find_class_distinct": len(s["find_class"]),
        "find_class_pkgs": len(fc_pkgs),
        "find_class_pkgs_novel": len(fc_pkgs - known_fc) if known_fc else 0,
        "calls_distinct": len(s["calls"]),
        "calls_function_distinct": len(s["function_calls"]),
        "calls_novel": len(calls_novel) if vocab.get("calls") else 0,
        "imports": len(s["imports"]),
        "imports_pkgs_novel": len(imp_pkgs - known_imp) if known_imp or vocab.get("calls") else 0,
        "reads_outside_libs": nonpyc,
        "writes": writes,
        "exec_compile_nonfile": ex_nonfile,
        "exec_compile_unpickling": ex_unpick,
        "refused": refused,
        "other_events": other,
        "putenv": counts.get("os.putenv", 0) + counts.get("os.unsetenv", 0),
        "load_failed": 0 if trace.get("load_ok") else 1,
        "abnormal_exit": 1 if trace.get("abnormal") else 0,
    }
    return {k: round(math.log1p(float(raw[k])), 6) for k in FEATURES}
