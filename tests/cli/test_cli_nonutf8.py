"""Issue 18 item 6: file names that are not UTF-8 (bytes from another system) never cause a traceback:
scanned, added to a case and reported with the odd bytes shown as ``\\xff``."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from tests.cli.helpers import wb


@pytest.fixture()
def odd(tmp_path):
    import torch

    root = tmp_path / "evidence"
    root.mkdir()
    folder = os.fsencode(root / "hf")
    os.mkdir(folder)
    with open(os.path.join(folder, b"config.json"), "wb") as fh:
        fh.write(b'{"model_type": "bert"}')
    with open(os.path.join(folder, b"weights\xff\xfe.bin"), "wb") as fh:
        fh.write(pickle.dumps({"w": [1.0]}, protocol=2))
    g = torch.Generator().manual_seed(0)
    tmp = root / "tmp.pt"
    torch.save({"w": torch.randn(2, 2, generator=g)}, tmp)
    single = os.fsencode(root) + b"/model\xff.pt"
    os.rename(tmp, single)
    return {"folder": os.fsdecode(folder), "file": os.fsdecode(single), "db": tmp_path / "case.db"}


def test_non_utf8_names_scan_and_store_without_a_traceback(odd):
    assert wb("case", "new", "odd names", "--db", odd["db"]).code == 0
    for path in (odd["folder"], odd["file"]):
        for extra in ([], ["--case", "1", "--db", odd["db"]], ["--json"]):
            r = wb("scan", path, *extra)
            assert "Traceback" not in r.err, (path, extra, r.err[-500:])
            assert r.code in (0, 1), (path, extra, r.code, r.err[-300:])
            if extra == ["--json"]:
                json.loads(r.out)
        r = wb("subject", "add", "1", path, "--db", odd["db"])
        assert r.code == 0 and "Traceback" not in r.err, r.err[-500:]
    report = wb("case", "export", "1", "--db", odd["db"])
    assert report.code == 0 and "model\\xff.pt" in report.out and "weights\\xff\\xfe.bin" in report.out
    assert wb("case", "verify", "1", "--db", odd["db"]).code == 0
