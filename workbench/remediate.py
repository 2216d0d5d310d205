"""``workbench remediate``, headless: find (or run) the detector, repair a copy, write it, record everything in the case.

``prepare`` checks everything the examiner typed before anything is written
(bad input is exit 2 with nothing in the case file or the output folder);
``run_remediation`` loads the subject, takes the trigger from the case's
latest flagged Neural Cleanse / ``kl`` result (or runs the detector when there
is none), repairs a copy (:mod:`probes.remediation`), writes the repaired
model, ``filter.json`` and ``remediation.json`` into a temporary sibling of the
output folder that is renamed into place at the end, and records the runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes.context import ProgressEvent, RunContext
from probes.data import LabelledData, load_npz
from probes.errors import ProbeError
from probes.result import jsonable
from workbench.subject_files import SubjectInfo, describe

Progress = Callable[[ProgressEvent], None]
PROBE = "remediation"


@dataclass
class RemediateOptions:
    out: str
    data: str | None = None
    method: str = "unlearn"
    arch: str | None = None
    trigger: str | None = None
    prompts: str | None = None
    input_shape: tuple[int, ...] | None = None
    seed: int = 0
    device: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedRemediation:
    subject: SubjectInfo
    options: RemediateOptions
    out: Path
    data: LabelledData | None
    params: dict[str, Any]


def prepare(path: str | Path, options: RemediateOptions) -> PreparedRemediation:
    """Validate the inputs; nothing is loaded or written. ProbeError (one line) for anything wrong."""
    from probes.remediation.params import resolve_image, resolve_lm

    info = describe(path)
    out = Path(options.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ProbeError(f"output folder {out} already exists and is not empty; give a new folder")
    if options.arch and ":" not in options.arch:
        raise ProbeError(f"--arch must be FILE.py:ClassName, got {options.arch!r}")
    if options.arch and not Path(options.arch.rsplit(":", 1)[0]).is_file():
        raise ProbeError(f"architecture file not found: {options.arch.rsplit(':', 1)[0]}")
    if options.prompts and not Path(options.prompts).is_file():
        raise ProbeError(f"prompts file not found: {options.prompts}")
    lm = info.kind == "causal-lm"
    data = None
    if options.data:
        data = load_npz(options.data)
    if lm:
        if options.data:
            raise ProbeError("--data is for image classifiers; a language model is repaired from its own prompts")
        params = resolve_lm({"seed": options.seed, **options.params})
    else:
        if data is None:
            raise ProbeError("remediation of an image classifier needs clean labelled data: give --data NPZ")
        if options.trigger:
            raise ProbeError("--trigger TEXT is for language models; an image trigger comes from Neural Cleanse")
        params = resolve_image({"seed": options.seed, "method": options.method, **options.params})
    return PreparedRemediation(info, options, out, data, params)


def _latest_done(store, subject_id: int, probe: str) -> dict[str, Any] | None:
    runs = [r for r in store.list_runs(subject_id=subject_id) if r["probe"] == probe and r["status"] == "done"
            and isinstance(r.get("result"), dict)]
    return runs[-1] if runs else None


def _record_subject(store, case_id: int, info: SubjectInfo) -> int:
    existing = store.find_subject(case_id, info.sha256)
    if existing:
        return int(existing["id"])
    return int(store.add_subject(case_id, path=info.path, sha256=info.sha256, size=info.size, format=info.format,
                                 kind=info.kind, files=info.files, name=info.name))


def _record_run(store, case_id: int, subject_id: int, probe: str, result: dict[str, Any], *,
                artifacts: dict[str, bytes] | None = None, duration_s: float | None = None) -> int:
    from workbench.jobs import findings_from

    rid = store.start_run(case_id, subject_id, probe, result.get("params") or {})
    store.finish_run(rid, status="done", result=result, duration_s=duration_s, artifacts=artifacts,
                     findings=findings_from(result) if result.get("verdict") else None)
    return rid


def _load(prepared: PreparedRemediation):
    from probes.subjects.loader import load_subject

    shape = prepared.options.input_shape
    if shape is None and prepared.data is not None:
        shape = tuple(prepared.data.x.shape[1:])
    return load_subject(prepared.subject.path, arch=prepared.options.arch, input_shape=shape,
                        device=prepared.options.device)


def run_remediation(prepared: PreparedRemediation, *, store=None, case_id: int | None = None,  # noqa: C901 - one pipeline, stage after stage
                    progress: Progress | None = None, cancel: threading.Event | None = None) -> dict[str, Any]:
    """Detect (if needed), repair, write and record; returns the ``remediation.json`` object."""
    from probes.remediation.image import check_trainable, detector_summary, remediate_image, run_detector
    from probes.remediation.image import trigger_from_result as image_trigger
    from probes.remediation.lm import remediate_lm, run_hunt
    from probes.remediation.lm import trigger_from_result as lm_trigger
    from workbench.threads import apply_threads

    t0 = time.perf_counter()
    cancel = cancel or threading.Event()
    ctx = RunContext(PROBE, dict(prepared.params), data=prepared.data, cancel=cancel, on_progress=progress)
    apply_threads(None)
    ctx.progress(0, 1, "loading the model", stage="load")
    subject = _load(prepared)
    lm = subject.kind == "causal-lm"
    if lm:
        if not any(q.dtype.is_floating_point for q in subject.model.parameters()):
            raise ProbeError("the language model has no trainable floating-point parameters")
    else:
        check_trainable(subject)
    known_sid = None
    if store is not None and case_id is not None:
        store.get_case(case_id)
        found = store.find_subject(case_id, prepared.subject.sha256)
        known_sid = int(found["id"]) if found else None
    detector_probe = "kl" if lm else "neural-cleanse"
    flagged: dict[str, Any] | None = None
    source = "given"
    if known_sid is not None and not (lm and prepared.options.trigger):
        row = _latest_done(store, known_sid, detector_probe)
        if row is not None:
            flagged, source = row["result"], f"case run {row['id']}"
    new_detector = None  # a detector run made here, recorded only once it flagged something
    detector_s = 0.0
    if lm:
        trigger = prepared.options.trigger
        if trigger is None:
            try:
                trigger = lm_trigger(flagged) if flagged else None
            except ProbeError:
                trigger = None
            if trigger is None:
                t_det = time.perf_counter()
                res = run_hunt(subject, ctx, prepared.options.prompts)
                detector_s = time.perf_counter() - t_det
                new_detector = res
                trigger = lm_trigger(res.to_dict())  # ProbeError "no flagged result" when nothing is confirmed
                flagged, source = res.to_dict(), "kl run made by remediate"
        before_det = None
        if flagged:
            from probes.remediation.lm import hunt_summary

            before_det = {"hunt": hunt_summary(flagged, trigger)}
    else:
        data = prepared.data
        assert data is not None  # prepare() refuses an image classifier without --data
        trig = None
        if flagged is not None and flagged.get("suspected_target") is not None:
            trig = image_trigger(flagged, subject.input_shape)
        if trig is None:
            t_det = time.perf_counter()
            xs, ys = data.x, data.y
            if data.is_poison is not None:
                keep = ~data.is_poison
                xs, ys = xs[keep], ys[keep]
            res = run_detector(subject, xs, ys, ctx, source=data.source)
            detector_s = time.perf_counter() - t_det
            trig = image_trigger(res.to_dict(), subject.input_shape)  # "no flagged result" when NC is clean
            new_detector, flagged, source = res, res.to_dict(), "neural-cleanse run made by remediate"
        before_det = detector_summary(flagged or {})
    # -- the repair, into a temporary sibling of the output folder ------------------------------
    out = prepared.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    result: Any
    try:
        if lm:
            assert trigger is not None
            from probes.lm_prompts import BUILTIN_PROMPTS, load_prompts_file
            from probes.remediation.lm import prompt_split

            prompts = (load_prompts_file(prepared.options.prompts) if prepared.options.prompts else []) \
                + list(BUILTIN_PROMPTS)
            train, held = prompt_split(prompts, seed=int(ctx.params["seed"]),
                                       holdout_fraction=float(ctx.params["holdout_fraction"]))
            result, _model = remediate_lm(subject, trigger, ctx, train_prompts=train, eval_prompts=held, out_dir=tmp,
                                          before_detector=before_det)
            filt = result.filter
        else:
            assert trig is not None and data is not None
            result, _work = remediate_image(subject, data, trig, ctx, out_dir=tmp,
                                            arch=prepared.options.arch, before_detector=before_det)
            filt = result.filter
        doc = result.to_dict()
        filt_bytes = json.dumps(jsonable(filt), indent=2).encode()
        (tmp / "filter.json").write_bytes(filt_bytes)
        saved = dict(doc["model"] or {})
        rel = Path(saved["path"]).name
        doc["subject"] = {"path": prepared.subject.path, "sha256": prepared.subject.sha256,
                          "format": prepared.subject.format, "kind": subject.kind}
        doc["trigger"]["from"] = source
        doc["outputs"] = {"model": str(out / rel), "model_format": saved.get("format"), "model_sha256": saved["sha256"],
                          "filter": str(out / "filter.json"), "filter_sha256": hashlib.sha256(filt_bytes).hexdigest(),
                          "remediation": str(out / "remediation.json")}
        if saved.get("arch"):
            doc["outputs"]["arch"] = saved["arch"]
        doc["timings"]["detector_s"] = round(detector_s, 3)
        doc["timings"]["command_s"] = round(time.perf_counter() - t0, 3)
        doc["model"] = None
        doc.pop("model")
        # -- into place, then the case file -------------------------------------------------------
        if out.exists():
            out.rmdir()  # checked empty in prepare
        os.replace(tmp, out)
        # a saved safetensors sidecar names the arch; point it at the final place
        if store is not None and case_id is not None:
            sid = _record_subject(store, case_id, prepared.subject)
            if subject.kind and subject.kind != prepared.subject.kind:
                store.set_subject_kind(sid, subject.kind)
            if new_detector is not None:
                d = new_detector.to_dict()
                d["params"] = {**d.get("params", {}), "recorded_by": "workbench remediate"}
                _record_run(store, case_id, sid, detector_probe, d, artifacts=dict(new_detector.artifacts),
                            duration_s=detector_s)
            repaired = describe(out / rel)
            rsid = _record_subject(store, case_id, repaired)
            if subject.kind:
                store.set_subject_kind(rsid, subject.kind)
            after = result.detector_after
            after_run = None
            if after is not None:
                ad = after.to_dict()
                ad["params"] = {**ad.get("params", {}), "recorded_by": "workbench remediate (repaired model)"}
                after_run = _record_run(store, case_id, rsid, detector_probe, ad, artifacts=dict(after.artifacts))
            doc["case"] = {"case_id": case_id, "subject_id": sid, "repaired_subject_id": rsid,
                           "repaired_sha256": repaired.sha256, "detector_after_run_id": after_run}
            run_doc = {**doc, "probe": PROBE, "summary": doc["residual_risk"][:300],
                       "duration_s": doc["timings"]["command_s"]}
            rid = _record_run(store, case_id, sid, PROBE, run_doc,
                              artifacts={"filter.json": filt_bytes}, duration_s=doc["timings"]["command_s"])
            doc["case"]["run_id"] = rid
        (out / "remediation.json").write_text(json.dumps(jsonable(doc), indent=2), encoding="utf-8")
        return dict(jsonable(doc))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
