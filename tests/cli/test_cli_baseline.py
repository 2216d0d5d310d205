"""`workbench baseline add` and the layered scan against a stored baseline, end to end on small MLPs."""

from __future__ import annotations

import json

import pytest

from casefiles import CaseStore
from tests.cli.helpers import wb

pytestmark = pytest.mark.xdist_group("digits")


@pytest.fixture(scope="module")
def mlps(tmp_path_factory):
    """Ten clean digit MLPs for the baseline, one clean and one BadNets suspect, clean test data."""
    import torch

    from probes.data import save_npz
    from probes.zoo.digits import AttackSpec, build_model, save_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mlps")
    baseline = [save_model(build_model("mlp", AttackSpec("clean"), seed=100 + s), root / "baseline", "torchscript")
                for s in range(10)]
    bad = build_model("mlp", AttackSpec("badnets", target=2), seed=7)
    return {"baseline": baseline,
            "clean": save_model(build_model("mlp", AttackSpec("clean"), seed=7), root / "suspects", "torchscript"),
            "backdoored": save_model(bad, root / "suspects", "torchscript"),
            "data": save_npz(root / "clean.npz", *bad.test)}


def test_stored_baseline_and_layered_scan(mlps, tmp_path):
    env = {"WORKBENCH_DB": str(tmp_path / "cases.db"), "WORKBENCH_CACHE": str(tmp_path / "cache")}
    assert wb("case", "new", "baseline", env=env).code == 0
    r = wb("baseline", "add", "mlp-digits", *mlps["baseline"], "--data", mlps["data"], env=env)
    assert r.code == 0 and "10 model(s) added" in r.out, r.err
    assert "mlp-digits" in wb("baseline", "list", env=env).out
    verdicts = {}
    for name in ("clean", "backdoored"):
        r = wb("scan", mlps[name], "--data", mlps["data"], "--baseline", "mlp-digits", "--case", "1", "--json", env=env)
        assert r.code == 0, r.err
        out = json.loads(r.out)
        by = {res["probe"]: res for res in out["results"]}
        assert list(by) == ["static", "neural-cleanse", "max-margin", "transform-inversion", "strip",
                            "fingerprint"]
        fp = by["fingerprint"]
        assert fp["baseline_size"] == 10 and fp["trust_score"] is not None and fp["n_detectors"] >= 4
        verdicts[name] = (out["verdict"], by["neural-cleanse"]["verdict"], by["strip"]["verdict"])
    # the clean model's own smallest trigger may survive superimposition, but Neural Cleanse did not flag it:
    # STRIP must not call the model backdoored on that
    assert verdicts["clean"] == ("clean", "clean", "clean")
    assert verdicts["backdoored"][:2] == ("backdoored", "backdoored")
    with CaseStore(tmp_path / "cases.db") as s:
        assert [r["probe"] for r in s.list_runs(case_id=1)].count("fingerprint") == 2
        assert s.verify(1).ok
