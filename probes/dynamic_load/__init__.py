"""Probe ``dynamic``: load a suspect file in a sealed child process and watch what the load does.

Opt-in (it deliberately lets the suspect's own loader start). The parent never
unpickles anything: the load happens in a grandchild forked from a warm,
sealed zygote (see ``sandbox.py`` and ``_child.py``); audit hooks installed
before the load record every event and refuse the dangerous ones; the trace
comes back as JSON lines.

Verdicts:
- ``malicious``: the hook refused an operation (process spawn, network, write
  outside the sandbox, code execution called by the pickle stream, ctypes,
  sandbox tampering...), or the trace channel was forged.
- ``suspicious``: the child hung, crashed or hit a resource limit; or the
  pickle stream called a function no benign load calls; or the One-Class SVM
  trained on benign loads calls the trace anomalous.
- ``inconclusive``: nothing loadable (no pickle inside), or the load only
  failed to resolve a class the owner's code would provide.
- ``clean``: none of the above.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from probes import registry
from probes.context import RunContext
from probes.errors import Cancelled, ProbeError
from probes.progress import check_cancel
from probes.result import ProbeResult
from vocabulary import Verdict

PROBE = "dynamic"
LOADERS = registry.get(PROBE).param("loader").choices  # "auto" and the loaders a file's owner may use
SIGNALS = {6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV", 24: "SIGXCPU", 25: "SIGXFSZ"}


def _resolution_error(err: str | None) -> bool:
    return bool(err) and err.split(":")[0].rsplit(".", 1)[-1] in ("ModuleNotFoundError", "ImportError", "AttributeError") \
        and ("No module named" in err or "Can't get attribute" in err or "cannot import name" in err)


def choose_loader(path: Path, requested: str = "auto") -> str | None:
    """How the file's owner would load it, from its content. None: no pickle path to watch."""
    if requested != "auto":
        return requested
    from probes import formats

    fmt = formats.detect_file(path)
    if fmt in (formats.TORCH_ZIP, formats.TORCH_LEGACY, formats.TORCH_TAR, formats.TORCHSCRIPT):
        return "torch"
    if fmt == formats.JOBLIB_COMPRESSED:
        return "joblib"
    if fmt in (formats.NUMPY, formats.NPZ):
        return "numpy"
    if fmt == formats.PICKLE:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
        return "joblib" if b"joblib.numpy_pickle" in head or b"NumpyArrayWrapper" in head else "pickle"
    if fmt == formats.ZIP:
        return "torch"  # a zip torch.load would still try (odd names/flags); content decides the rest
    return None


_PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".sav", ".ckpt", ".dat", ".model", ".p"}


def _loaders_for(path: Path, requested: str) -> list[str]:
    """Every way the owner might load it: a plain pickle that carries joblib wrappers is tried with
    joblib.load *and* pickle.load (an array/opcode polyglot means different things to each)."""
    first = choose_loader(path, requested)
    if not first:
        return []
    if requested == "auto" and first == "joblib":
        from probes import formats

        if formats.detect_file(path) == formats.PICKLE:
            return ["joblib", "pickle"]
    return [first]


def _files_of(path: Path, max_files: int) -> tuple[list[Path], list[dict[str, str]]]:
    """The pickle-bearing files of ``path`` to load (at most ``max_files``) and every one not loaded, with why."""
    if path.is_file():
        return [path], []
    from probes import formats

    out: list[Path] = []
    skipped: list[dict[str, str]] = []
    for p in sorted(path.rglob("*")):
        if p.is_symlink():
            if p.is_file():
                skipped.append({"file": str(p), "why": "a symbolic link (not followed)"})
            continue
        if not p.is_file():
            if not p.is_dir():
                skipped.append({"file": str(p), "why": "not a regular file (FIFO, socket or device)"})
            continue
        fmt = formats.detect_file(p)
        if fmt == formats.PICKLE and p.suffix.lower() not in _PICKLE_SUFFIXES:
            with open(p, "rb") as fh:
                if fh.read(1) != b"\x80":  # protocol 0/1 guesses on text files (config.json, README) are noise
                    continue
        if fmt in formats.PICKLE_FORMATS | {formats.ZIP}:
            if len(out) >= max_files:
                skipped.append({"file": str(p), "why": f"over the max_files limit ({max_files})"})
            else:
                out.append(p)
    return out, skipped


def _name_skipped(skipped: list[dict[str, str]], root: Path) -> str:
    """The files not loaded, relative to the subject, grouped by why (every name, up to the summary's room)."""
    by_why: dict[str, list[str]] = {}
    for s in skipped:
        try:
            name = str(Path(s["file"]).relative_to(root))
        except ValueError:
            name = s["file"]
        by_why.setdefault(s["why"], []).append(name)
    return "; ".join(f"{', '.join(names)} ({why})" for why, names in by_why.items())


def _partial(verdict: str, why: str, skipped: list[dict[str, str]], root: Path, loaded: int) -> tuple[str, str]:
    """A folder only partly loaded is never clean: every file not loaded is named, in the summary too."""
    if not skipped:
        return verdict, why
    if verdict == "clean":
        return "inconclusive", (f"loaded {loaded} file(s), nothing refused, but {len(skipped)} not loaded: "
                                + _name_skipped(skipped, root))
    return verdict, why + f"; {len(skipped)} not loaded: " + _name_skipped(skipped, root)


def _trim_events(events: list[dict], limit: int) -> list[dict]:
    """Keep refused events, calls, globals and odd events first; imports and reads fill the rest."""
    def slim(ev):
        d = {"event": ev.get("e"), "args": ev.get("a"), "t": ev.get("ts")}
        if ev.get("r"):
            d["refused"] = ev["r"]
        info = ev.get("i") or {}
        if info.get("caller"):
            d["caller"] = info["caller"]
        return d

    pri = [e for e in events if e.get("r") or e.get("e") not in ("import", "open", "exec", "compile")]
    rest = [e for e in events if e not in pri]
    keep = set(map(id, (pri + rest)[:limit]))
    return [slim(e) for e in events if id(e) in keep]


def _analyse_one(zygote, baseline, path: Path, loader: str, p: dict, cancel) -> dict[str, Any]:  # noqa: C901 - one file's verdict from the child's trace, rule after rule
    from probes.dynamic_load import features as F

    timeout = float(p["timeout_s"])
    cpu = float(p["cpu_s"] or timeout)
    with zygote.lock:
        tr = zygote.run_job(str(path), loader, timeout_s=timeout, cpu_s=cpu, memory_mb=int(p["memory_mb"]),
                            max_events=int(p["max_events"]), cancel=cancel)
    done, ex = tr.done or {}, tr.exit or {}
    sig = ex.get("signal")
    err = done.get("error")
    refused = [{"event": e.get("e"), "args": e.get("a"), "reason": e.get("r"),
                "caller": (e.get("i") or {}).get("caller")} for e in tr.events if e.get("r")]
    child = {
        "exit_code": ex.get("code"), "signal": SIGNALS.get(sig, sig) if sig else None,
        "duration_s": round(tr.wall_s, 4), "load_s": done.get("load_s"), "cpu_s": ex.get("cpu_s"),
        "maxrss_kb": ex.get("maxrss_kb"), "timed_out": tr.timed_out, "child_lost": tr.zygote_died,
        "load_ok": bool(done.get("ok")), "load_error": err, "loaded_type": done.get("type"),
        "forged_trace_lines": tr.forged_lines, "hook_errors": tr.hook_errors[:5],
        "log_tail": (ex.get("log_tail") or "")[-600:],
    }
    limits = []
    if tr.timed_out:
        limits.append(f"hung: killed after the {timeout:g} s wall-clock timeout")
    if sig == 24 or (err or "").startswith("builtins.MemoryError") or sig == 25:
        limits.append({24: "CPU-time limit exceeded (SIGXCPU)", 25: "file-size limit exceeded (SIGXFSZ)"}.get(
            sig, f"memory limit exceeded ({int(p['memory_mb'])} MB address space)"))
    elif sig and not tr.timed_out:
        limits.append(f"crashed: killed by {SIGNALS.get(sig, sig)}")
    if tr.zygote_died and not tr.timed_out:
        limits.append("the sandbox child was lost during the load")
    if not done and not limits:
        limits.append("the load ended without reporting")

    summary = F.summarize(tr.events)
    trace = {"events": tr.events, "counts": done.get("counts") or {}, "load_ok": bool(done.get("ok")),
             "abnormal": bool(limits)}
    vocab = baseline.vocab if baseline is not None else F.empty_vocab()
    feats = F.vector(trace, vocab, summary)
    unfamiliar = F.unfamiliar_calls(summary, vocab) if baseline is not None else []
    ocsvm = None
    if baseline is not None:
        d = baseline.decision(feats)
        ocsvm = {"decision": round(d, 5), "threshold": round(baseline.threshold, 5),
                 "anomalous": d < baseline.threshold, "score": round(baseline.score(d), 5),
                 "training_loads": len(baseline.X)}

    reasons: list[str] = []
    if refused or tr.forged_lines:
        verdict, score = "malicious", 1.0
        if refused:
            r0 = refused[0]
            arg = (r0["args"] or [""])[0]
            reasons.append(f"refused {r0['event']}({str(arg)[:80]}): {r0['reason']}")
        if tr.forged_lines:
            reasons.append(f"{tr.forged_lines} forged line(s) on the trace channel")
    else:
        verdict, score = "clean", (ocsvm["score"] * 0.5 if ocsvm else 0.0)
        if limits:
            reasons += limits
        if unfamiliar:
            reasons.append("the pickle stream called " + ", ".join(unfamiliar[:3]) + " (never called by a benign load)")
        only_resolution = not done.get("ok") and _resolution_error(err) and not limits and not unfamiliar \
            and _quiet_trace(feats)
        if ocsvm and ocsvm["anomalous"] and not only_resolution:
            reasons.append(f"trace unlike benign loads (One-Class SVM decision {ocsvm['decision']:.3f} "
                           f"< {ocsvm['threshold']:.3f})")
        if reasons:
            verdict, score = "suspicious", max(0.6, ocsvm["score"] if ocsvm else 0.6)
        elif not done.get("ok") and _resolution_error(err):
            verdict = "inconclusive"
            reasons.append(f"the load needs the owner's code: {err[:160]}")
    if verdict == "suspicious" and not limits and not unfamiliar and _not_a_pickle(err):
        verdict, score = "inconclusive", 0.3
        reasons = [f"not loadable as {loader} (the loader rejected the bytes): {err[:160]}"]
    elif verdict == "clean" and not done.get("ok"):
        verdict = "inconclusive"
        reasons = [f"the {loader} load failed without any refused operation: {(err or '?')[:160]}"]
    return {
        "file": str(path), "loader": loader, "verdict": verdict, "score": score, "reasons": reasons,
        "refused": refused, "unfamiliar_calls": unfamiliar, "child": child, "limits": limits,
        "events": _trim_events(tr.events, int(p["events_in_result"])), "events_total": len(tr.events),
        "event_counts": done.get("counts") or {}, "features": feats, "ocsvm": ocsvm,
        "globals": summary["find_class"][:100], "calls": summary["calls"][:100],
    }


def _quiet_trace(feats: dict[str, float]) -> bool:
    """Nothing happened but imports and class look-ups: a load that stopped at a missing module did nothing else.

    Such a trace is short and odd for the One-Class SVM, yet it says nothing about the owner's code, which
    never ran here; the verdict is then ``inconclusive``, not ``suspicious``.
    """
    busy = ("calls_distinct", "calls_novel", "reads_outside_libs", "writes", "exec_compile_nonfile",
            "exec_compile_unpickling", "refused", "other_events", "putenv", "abnormal_exit")
    return not any(feats.get(k) for k in busy)


def _not_a_pickle(err: str | None) -> bool:
    """The loader rejected the bytes before running anything (no call was made by the stream)."""
    return bool(err) and any(x in err for x in ("UnpicklingError", "EOFError", "BadZipFile", "invalid load key",
                                                 "not a zip file", "could not find", "pickle data was truncated",
                                                 "central directory", "PytorchStreamReader", "Ran out of input", "is not installed"))


_BASELINE_FAILED: dict[str, str] = {}  # one failed training per environment and process, not one per file


def run(path: str, ctx: RunContext) -> ProbeResult:
    """Load ``path`` (a file or a folder's pickle-bearing files) in the sandbox and judge the trace."""
    t0 = time.perf_counter()
    progress = ctx.progress_callback(unit="loads")
    cancel = ctx.cancel
    p = dict(ctx.params)
    subject = Path(path)
    if not subject.exists():
        raise ProbeError(f"no such file or folder: {path}")
    check_cancel(cancel)
    files, skipped = _files_of(subject, int(p["max_files"]))
    plan = [(f, ld) for f in files for ld in _loaders_for(f, p["loader"])]
    params_out = dict(ctx.params)
    if not plan:
        why = "nothing to load: no pickle-bearing file"
        if skipped:
            why += "; not loaded: " + _name_skipped(skipped, subject)
        return ProbeResult(PROBE, "inconclusive", 0.0, why[:300],
                           params_out, time.perf_counter() - t0,
                           {"files": [], "events": [], "refused": [], "isolation": {}, "child": {},
                            "skipped": skipped})

    from probes.dynamic_load import model, sandbox

    preload = sandbox.DEFAULT_PRELOAD
    progress(0, len(plan) + 1, "starting the sandbox child")
    try:
        zygote = sandbox.get_zygote(preload=preload, netns=bool(p["netns"]), readonly_fs=bool(p["readonly_fs"]))
    except OSError as exc:
        raise ProbeError(f"could not start the sandbox child: {exc}") from exc
    baseline = None
    failed = _BASELINE_FAILED.get(model.environment_key(preload + sandbox.SKLEARN_PRELOAD))
    if failed and not p["retrain_baseline"]:
        p = {**p, "baseline": False}
    if p["baseline"]:
        def sub(done, total, msg):
            progress(0, len(plan) + 1, msg)

        try:
            baseline = model.get_baseline(zygote, preload=preload + sandbox.SKLEARN_PRELOAD, progress=sub, cancel=cancel,
                                          retrain=bool(p["retrain_baseline"]))
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001  (the hard rules still work without the baseline)
            baseline = None
            baseline_error = f"{type(exc).__name__}: {exc}"[:300]
            _BASELINE_FAILED[model.environment_key(preload + sandbox.SKLEARN_PRELOAD)] = baseline_error
        else:
            baseline_error = None
    else:
        baseline_error = failed or "disabled"
    results = []
    for i, (f, loader) in enumerate(plan):
        check_cancel(cancel)
        if any(r["file"] == str(f) and r["verdict"] == "malicious" for r in results):
            continue  # already decided for this file by another loader
        progress(i + 1, len(plan) + 1, f"loading {f.name} ({loader}) in the sandbox")
        if not zygote.alive():
            zygote = sandbox.get_zygote(preload=preload, netns=bool(p["netns"]), readonly_fs=bool(p["readonly_fs"]))
        results.append(_analyse_one(zygote, baseline, f, loader, p, cancel))
    progress(len(plan) + 1, len(plan) + 1, "done")

    # One file tried with two loaders: a loader that merely rejects the bytes does not make it inconclusive
    # when the other loaded it cleanly; anything suspicious or malicious always counts.
    decisive = [r for r in results if not (r["verdict"] == "inconclusive" and any(
        o["file"] == r["file"] and o is not r and o["verdict"] != "inconclusive" for o in results))]
    worst = max(decisive, key=lambda r: (Verdict(r["verdict"]).rank, r["score"]))
    verdict = worst["verdict"]
    score = max(r["score"] for r in decisive)
    if verdict == "clean" and all(r["verdict"] == "clean" for r in decisive):
        why = f"loaded {len({r['file'] for r in results})} file(s) in the sandbox; nothing refused, trace like benign loads"
    else:
        tag = f"{Path(worst['file']).name}: " if len({r["file"] for r in results}) > 1 else ""
        tag += f"[{worst['loader']}] " if len(results) > 1 else ""
        why = tag + ("; ".join(worst["reasons"]) or verdict)
    verdict, why = _partial(verdict, why, skipped, subject, len({r["file"] for r in results}))
    refused = [{**r, "file": res["file"]} for res in results for r in res["refused"]]
    events = [{**e, "file": res["file"]} if len(results) > 1 else e for res in results for e in res["events"]]
    details = {
        "refused": refused,
        "events": events[: int(p["events_in_result"])],
        "isolation": {**zygote.isolation, "zygote_startup_s": round(zygote.startup_s, 3)},
        "child": worst["child"],
        "files": [{k: v for k, v in r.items() if k != "events"} for r in results],
        "skipped": skipped,
        "baseline": {"loads": len(baseline.X) if baseline else 0, "key": baseline.key if baseline else None,
                     "error": baseline_error, "skipped": (baseline.skipped or []) if baseline else []},
    }
    return ProbeResult(PROBE, verdict, score, why[:300], params_out, time.perf_counter() - t0, details)


def offer_after_static(static_result: dict | None) -> bool:
    """Should the layered scan offer ``dynamic`` after this static result (a ``to_dict()`` mapping)?

    Yes when the static scan is inconclusive, or only found review-tier (medium/low) imports; no when it
    is clean (nothing to learn) or already malicious (the file is refused anyway).
    """
    if not static_result:
        return False
    verdict = static_result.get("verdict")
    if verdict == "inconclusive":
        return True
    if verdict == "suspicious":
        sev = {f.get("severity") for f in static_result.get("findings") or []}
        return not (sev & {"critical", "high"})
    return False


def warm_up(background: bool = True):
    """Start the sealed zygote ahead of time (optional)."""
    from probes.dynamic_load import sandbox

    return sandbox.warm_up(background=background)


__all__ = ["run", "warm_up", "offer_after_static", "choose_loader", "LOADERS"]
