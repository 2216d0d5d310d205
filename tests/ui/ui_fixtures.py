"""Session-cached case files for the UI tests (built once per xdist worker, copied per test)."""

from __future__ import annotations

import shutil
from pathlib import Path

DIGITS_TARGET = 3


def build_digits_case(root: Path, *, nc_steps: int = 200) -> dict:
    """A BadNets digits CNN (target 3) with finished static, Neural Cleanse and spectral runs."""
    import torch

    torch.set_num_threads(1)
    from casefiles import CaseStore
    from probes.data import save_npz
    from probes.zoo.digits import AttackSpec, build_model, save_model
    from workbench.scan import ScanOptions, prepare, run_scan

    root.mkdir(parents=True, exist_ok=True)
    zm = build_model("cnn", AttackSpec("badnets", target=DIGITS_TARGET), seed=0)
    model = save_model(zm, root, "torchscript")
    xte, yte = zm.test
    save_npz(root / "clean-test.npz", xte, yte)
    x, y, is_p = zm.train
    save_npz(root / "train.npz", x, y, is_p)
    db = root / "digits.db"
    with CaseStore(db) as store:
        cid = store.new_case("Digits under review", "A BadNets CNN built by the UI tests.")
        prepared = prepare(model, ScanOptions(probes=["static", "neural-cleanse", "spectral"],
                                              data=str(root / "clean-test.npz"), audit=str(root / "train.npz"),
                                              params={"steps": nc_steps, "max_samples": 600, "refine_steps": 20}))
        report = run_scan(prepared, store=store, case_id=cid)
        sid = report.subject_id
    return {"db": db, "case_id": cid, "subject_id": sid, "model": model, "root": root,
            "data": root / "clean-test.npz", "audit": root / "train.npz", "report": report.to_dict()}


def copy_db(src: Path, dest_dir: Path) -> Path:
    dest = dest_dir / src.name
    shutil.copy2(src, dest)
    return dest
