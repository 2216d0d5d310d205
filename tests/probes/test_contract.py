"""The probe contract's parts: declared parameters, the run context, one vocabulary, one cache dir."""

from __future__ import annotations

import math
import threading

import pytest

from probes import registry
from probes.context import ProgressEvent, RunContext, context_for
from probes.errors import ProbeError
from probes.params import Param, resolve, split_for_probes
from vocabulary import Band, Severity, Verdict
from vocabulary.layered import case_verdict, layered_verdict, subject_verdict


def test_every_probe_declares_its_parameters_once_and_they_resolve():
    for spec in registry.PROBES.values():
        names = [p.name for p in spec.all_params]
        assert len(names) == len(set(names)), spec.name
        assert names[0] == "seed"
        defaults = spec.defaults()
        assert set(defaults) == set(names)
        for p in spec.all_params:
            assert p.help and p.type_text()
            assert p.coerce(p.default, spec.name) == defaults[p.name]  # every default passes its own check
        for u in spec.uses:
            assert u in registry.PROBES
        spec.load()  # the target exists


def test_declared_choices_match_the_code_that_uses_them():
    from probes.dynamic_load import LOADERS
    from probes.fingerprint.ensemble import DETECTORS

    assert registry.get("fingerprint").param("detectors").choices == DETECTORS
    assert LOADERS == registry.get("dynamic").param("loader").choices


@pytest.mark.parametrize("param,value,expected", [
    (Param("n", 3, "h", "int", 1, 10), "7", 7),
    (Param("n", 3, "h", "int", 1, 10), 4.0, 4),
    (Param("x", 0.5, "h", "float", 0, 1), "0.25", 0.25),
    (Param("b", True, "h", "bool"), "false", False),
    (Param("b", True, "h", "bool"), 1, True),
    (Param("c", "a", "h", "choice", choices=("a", "b")), "B", "b"),
    (Param("l", ["a"], "h", "list", choices=("a", "b")), "a, b", ["a", "b"]),
    (Param("o", None, "h", "int", 1), None, None),
])
def test_coercion_accepts_what_a_command_line_or_a_dialog_types(param, value, expected):
    assert param.coerce(value, "p") == expected


@pytest.mark.parametrize("param,value,needle", [
    (Param("n", 3, "h", "int", 1, 10), 11, "out of range"),
    (Param("n", 3, "h", "int", 1, 10), 2.5, "integer"),
    (Param("n", 3, "h", "int", 1, 10), True, "number"),
    (Param("x", 0.5, "h", "float", 0, 1), math.nan, "finite"),
    (Param("x", 0.5, "h", "float", 0, 1), math.inf, "finite"),
    (Param("x", 0.5, "h", "float"), None, "null"),
    (Param("b", True, "h", "bool"), "maybe", "true or false"),
    (Param("c", "a", "h", "choice", choices=("a", "b")), "z", "one of a, b"),
    (Param("l", ["a"], "h", "list", choices=("a", "b")), [], "at least one"),
    (Param("f", None, "h", "path"), "/nonexistent/file", "no such file"),
])
def test_coercion_refuses_with_one_line_naming_probe_and_param(param, value, needle):
    with pytest.raises(ProbeError, match=needle) as err:
        param.coerce(value, "probe-x")
    assert str(err.value).startswith(f"probe-x: param {param.name}") and "\n" not in str(err.value)


def test_unknown_keys_are_refused_and_shared_keys_reach_every_taker():
    with pytest.raises(ProbeError, match="takes no parameter 'nope'"):
        resolve((Param("a", 1, "h", "int"),), {"nope": 1}, probe="p")
    split = split_for_probes({"seed": 3, "steps": 5, "strip.alpha": 0.2},
                             [(n, registry.get(n).all_params) for n in ("neural-cleanse", "strip")])
    assert split == {"neural-cleanse": {"seed": 3, "steps": 5}, "strip": {"seed": 3, "alpha": 0.2}}


def test_applicable_leaves_out_probes_whose_required_data_is_missing():
    img = registry.applicable("image-classifier")
    assert "neural-cleanse" in img and "strip" not in img and "spectral" not in img
    assert "strip" in registry.applicable("image-classifier", have_data=True)
    assert {"spectral", "activation-clustering"} <= set(registry.applicable("image-classifier", have_audit=True))
    assert registry.applicable(None) == ["static"]
    assert "kl" in registry.applicable("causal-lm") and "neural-cleanse" not in registry.applicable("causal-lm")


def test_progress_events_carry_counts_unit_and_a_measured_rate():
    seen: list[ProgressEvent] = []
    ctx = RunContext("kl", {}, on_progress=seen.append)
    ctx.progress(0, 100, stage="sweep", unit="candidates")
    threading.Event().wait(0.08)
    ctx.progress(50, 100, "half", stage="sweep", unit="candidates")
    ctx.progress(1, 3, stage="confirmation")
    assert [e.stage for e in seen] == ["sweep", "sweep", "confirmation"]
    assert seen[0].rate is None and 100 < seen[1].rate < 50 / 0.08 + 1
    assert seen[2].rate is None  # a new stage starts its own clock
    assert seen[1].text().startswith("sweep: 50/100 candidates (") and seen[1].fraction == 0.5
    inner = []
    outer = RunContext("strip", {}, on_progress=inner.append)
    outer.child("neural-cleanse", {}, stage_prefix="quick ").progress(2, 4)
    assert inner[0].probe == "strip" and inner[0].stage == "quick neural-cleanse"


def test_context_for_resolves_and_checks():
    ctx = context_for("spectral", {"n_directions": "3"})
    assert ctx.params["n_directions"] == 3 and ctx.params["min_r2"] == 0.5 and ctx.seed == 0
    with pytest.raises(ProbeError, match="spectral: param n_directions"):
        context_for("spectral", {"n_directions": 99})


def test_one_ordered_vocabulary():
    assert Verdict.worst(["clean", "suspicious", "inconclusive"]) is Verdict.SUSPICIOUS
    assert Verdict.MALICIOUS > Verdict.BACKDOORED > Verdict.SUSPICIOUS > Verdict.INCONCLUSIVE > Verdict.CLEAN
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW > Severity.INFO
    assert [Band.of(s) for s in (0, 30, 31, 60, 61, 100)] == [Band.LOW, Band.LOW, Band.MEDIUM, Band.MEDIUM,
                                                              Band.HIGH, Band.HIGH]
    assert Band.MEDIUM.floor == 31 and Band.HIGH.floor == 61 and Verdict("clean") == "clean"


def _run(rid, probe, status, verdict=None, score=0.0, error=None):
    result = {"probe": probe, "verdict": verdict, "score": score, "summary": ""} if status == "done" else None
    return {"id": rid, "probe": probe, "status": status, "result": result, "error": error}


def test_subject_verdict_reads_the_latest_run_of_each_probe():
    runs = [_run(1, "neural-cleanse", "done", "backdoored", 0.7), _run(2, "static", "done", "clean"),
            _run(3, "neural-cleanse", "done", "clean", 0.3)]
    assert subject_verdict(runs)["verdict"] == "clean"
    assert subject_verdict(runs[:2])["verdict"] == "backdoored"
    # a failed newer attempt does not erase the older finished result
    assert subject_verdict(runs[:2] + [_run(4, "neural-cleanse", "failed", error="boom")])["verdict"] == "backdoored"
    assert layered_verdict([{"probe": "static", "verdict": "clean", "score": 0},
                            {"probe": "kl", "verdict": "inconclusive", "score": 0}])["verdict"] == "clean"


def test_a_failed_static_scan_never_leaves_a_clean_verdict():
    runs = [_run(1, "static", "failed", error="RuntimeError: Symlink loop"),
            _run(2, "neural-cleanse", "done", "clean", 0.2)]
    v = subject_verdict(runs)
    assert v["verdict"] == "inconclusive" and v["band"] == "medium"
    assert v["evidence"].startswith("static scan failed (RuntimeError: Symlink loop)")


def test_case_verdict_is_the_worst_subject():
    c = case_verdict([{"verdict": "clean", "score": 10}, {"verdict": "inconclusive", "score": None},
                      {"verdict": "suspicious", "score": 45}])
    assert c["verdict"] == "suspicious" and c["score"] == 45 and c["band"] == "medium"
    assert case_verdict([{"verdict": "inconclusive", "score": None}])["verdict"] == "inconclusive"


def test_one_cache_dir_and_it_is_not_tmp(monkeypatch, tmp_path):
    import tempfile

    from probes.cache import cache_dir
    from probes.dynamic_load import model
    from probes.fingerprint import default_cache_dir
    from workbench import paths

    monkeypatch.delenv("WORKBENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = cache_dir()
    assert root == tmp_path / "xdg" / "trojan-workbench"
    assert not str(root).startswith(tempfile.gettempdir() + "/trojan")
    assert paths.cache_dir() == root and default_cache_dir() == root and model.cache_dir() == root / "dynamic-load"
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "mine"))
    assert paths.cache_dir() == default_cache_dir() == tmp_path / "mine"
    assert model.cache_dir() == tmp_path / "mine" / "dynamic-load"


def test_thread_policy(monkeypatch):
    import os

    from workbench import threads

    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.9, 1.0, 1.0))
    assert threads.resolve_threads() == 1  # the other core is busy
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert threads.resolve_threads() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert threads.resolve_threads() == 1
    assert threads.resolve_threads(3) == 3
    monkeypatch.setenv(threads.ENV, "1")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert threads.resolve_threads() == 1
    with pytest.raises(ValueError):
        threads.resolve_threads(0)


def test_one_kind_rule_for_subject_add_and_the_loader():
    # formats.guess_kind (subject add, no imports) and the loader used to carry two kind rules that disagreed
    # (e.g. "GPT2LMHeadModel" vs a model_type list); both now read formats.hf_kind.
    from probes import formats

    cases = {
        ("GPT2LMHeadModel",): "causal-lm", ("LlamaForCausalLM",): "causal-lm",
        ("ViTForImageClassification",): "image-classifier", ("BertModel",): None,
    }
    for archs, kind in cases.items():
        cfg = {"architectures": list(archs), "model_type": "vit"}
        assert formats.hf_kind(cfg) == formats.hf_kind(cfg, full_mapping=True) == kind, archs
    assert formats.hf_kind({"model_type": "llama"}) == formats.hf_kind({"model_type": "llama"}, full_mapping=True) == "causal-lm"
    assert formats.hf_kind({"model_type": "resnet"}, full_mapping=True) == "image-classifier"
    assert formats.hf_kind({"model_type": "wav2vec2"}, full_mapping=True) is None
