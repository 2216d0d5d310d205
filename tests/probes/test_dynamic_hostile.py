"""Issue 18: the dynamic probe against hostile payloads that aim past the audit hook, and partial loads."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from probes.context import context_for
from probes.dynamic_load import run


def probe(path, **params):
    return run(str(path), context_for("dynamic", {"baseline": False, **params}))


def test_a_folder_loaded_only_in_part_is_not_clean_and_names_the_file_left_out(tmp_path):
    for i in range(3):
        (tmp_path / f"w{i}.pkl").write_bytes(pickle.dumps({"w": [float(i)]}, protocol=4))
    res = probe(tmp_path, max_files=2)
    assert res.verdict == "inconclusive", res.summary
    assert "w2.pkl" in res.summary and "max_files" in res.summary
    assert [Path(s["file"]).name for s in res.details["skipped"]] == ["w2.pkl"]
    full = probe(tmp_path, max_files=3)
    assert full.verdict == "clean", full.summary
    assert full.details["skipped"] == []
