"""Build a named baseline: fingerprint trusted models once, keep them in the case file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from casefiles.errors import NotFound
from probes.data import LabelledData
from workbench.subject_files import describe


def add_models(store, name: str, models: list[Path], *, data: LabelledData | None = None, arch: str | None = None,
               input_shape: tuple[int, ...] | None = None, seed: int = 0,
               progress: Callable[[int, int, str], None] | None = None) -> int:
    """Fingerprint each model (skipping ones already in the baseline) and store it; returns how many were added."""
    from probes.fingerprint import compute_fingerprint
    from probes.subjects.loader import load_subject
    from workbench.threads import apply_threads

    infos = [describe(m) for m in models]  # validate every path before writing anything
    apply_threads()
    try:
        existing = {m["sha256"] for m in store.baseline_fingerprints(name)}
    except NotFound:  # a new baseline
        existing = set()
    shape = input_shape or (tuple(data.x.shape[1:]) if data is not None else None)
    added = 0
    for i, info in enumerate(infos, 1):
        if info.sha256 in existing:
            if progress:
                progress(i, len(infos), f"{info.name}: already in {name}")
            continue
        subject = load_subject(info.path, arch=arch, input_shape=shape)
        fp = compute_fingerprint(subject, data=data, seed=seed)
        record = {"vector": [float(v) for v in fp.vector], "feature_names": list(fp.feature_names), "kind": subject.kind}
        if store.add_baseline_member(name, path=info.path, sha256=info.sha256, fingerprint=record, kind=subject.kind):
            added += 1
        if progress:
            progress(i, len(infos), f"{info.name}: fingerprinted")
    return added
