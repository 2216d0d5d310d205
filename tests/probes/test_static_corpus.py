"""The labelled payload corpus: every malicious file flagged with its real payload named,
no benign file flagged malicious, nothing ever executed or unpickled."""

from __future__ import annotations

import json
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from corpora.payload_corpus import build_corpus
from probes.static_scan import scan_path


class _NoUnpickling(Exception):
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    dest = tmp_path_factory.mktemp("corpus")
    entries = build_corpus(dest)
    return dest, entries


@pytest.fixture(scope="module")
def scanned(corpus):
    dest, entries = corpus
    mp = pytest.MonkeyPatch()
    # the scanner must never unpickle or torch.load anything
    def refuse(*a, **k):
        raise _NoUnpickling("the static scan tried to unpickle")
    mp.setattr(pickle, "loads", refuse)
    mp.setattr(pickle, "load", refuse)
    mp.setattr(pickle, "Unpickler", refuse)
    mp.setattr(pickle, "_Unpickler", refuse)
    try:
        import torch

        mp.setattr(torch, "load", refuse)
        return [(e, scan_path(e.path).to_dict()) for e in entries]
    finally:
        mp.undo()


def _names(result: dict) -> set[str]:
    return {f"{f['module']}.{f['name']}" for f in result["findings"] if f["module"] and f["name"]}


def test_corpus_is_balanced_and_covers_the_families(corpus):
    _, entries = corpus
    labels = Counter(e.label for e in entries)
    assert labels["malicious"] >= 50 and labels["benign"] >= 20
    fams = " ".join(e.family for e in entries if e.label == "malicious")
    for needle in ("classic", "alternative module", "getattr", "attrgetter", "methodcaller", "nested pickle.loads",
                   "nested torch.load", "memo", "BUILD", "EXT", "dotted", "torch zip", "legacy", "tar", "joblib",
                   "npy", "after the first STOP", "HF folder"):
        assert needle in fams, needle


def test_every_malicious_file_is_flagged_with_its_payload_named(scanned):
    misses = []
    for e, r in scanned:
        if e.label != "malicious":
            continue
        if r["verdict"] != "malicious" or (e.payload and e.payload not in _names(r)):
            misses.append(f"{e.path.name} ({e.family}): {r['verdict']}, wanted {e.payload}, got {sorted(_names(r))}")
    assert not misses, "\n".join(misses)


def test_no_benign_file_is_flagged_malicious_and_verdicts_match(scanned):
    wrong = [f"{e.path.name}: {r['verdict']} (expected {e.expect}) {r['summary']}"
             for e, r in scanned if e.label == "benign" and r["verdict"] != e.expect]
    assert not wrong, "\n".join(wrong)
    assert not [e for e, r in scanned if e.label == "benign" and r["verdict"] == "malicious"]


def test_nothing_was_executed(corpus, scanned):
    dest, _ = corpus
    assert not (dest / "PWNED").exists()


def test_whole_module_checkpoint_is_review_tier_not_malicious(scanned):
    (e, r), = [(e, r) for e, r in scanned if e.path.name == "whole_module.pt"]
    assert r["verdict"] == "suspicious"
    assert {f["severity"] for f in r["findings"]} <= {"low", "medium"}
    assert "torch.nn.modules.conv.Conv2d" in _names(r)
    assert all(f["rule"] == "review-class" for f in r["findings"])


def test_finding_schema_and_offsets_point_at_the_opcode(scanned):
    codes = {"GLOBAL": b"c", "STACK_GLOBAL": b"\x93", "INST": b"i", "REDUCE": b"R", "BUILD": b"b", "EXT1": b"\x82",
             "EXT4": b"\x84", "SETITEM": b"s", "NEWOBJ": b"\x81", "OBJ": b"o"}
    checked = 0
    for e, r in scanned:
        json.dumps(r)  # JSON-serialisable
        for f in r["findings"]:
            assert set(f) >= {"file", "member", "offset", "opcode", "module", "name", "severity", "explanation"}
            assert f["severity"] in {"critical", "high", "medium", "low"}
            if f["opcode"] not in codes or f["offset"] is None:
                continue
            if f["member"] is None:
                data = Path(f["file"]).read_bytes()
            elif "!" not in f["member"] and "(" not in f["member"] and zipfile.is_zipfile(f["file"]):
                try:
                    data = zipfile.ZipFile(f["file"]).read(f["member"])
                except (zipfile.BadZipFile, RuntimeError):  # broken CRC / encrypted flag: zipfile refuses, the scanner reads
                    continue
            else:
                continue
            assert data[f["offset"]:f["offset"] + 1] == codes[f["opcode"]], (e.path.name, f)
            checked += 1
    assert checked >= 40


def test_injected_zip_names_member_and_reports_archive_oddities(scanned):
    by = {e.path.name: r for e, r in scanned}
    f = [x for x in by["zip_data_pkl.pt"]["findings"] if x["severity"] == "critical"][0]
    assert f["member"] == "archive/data.pkl" and f["opcode"] == "GLOBAL" and f["name"] == "system"
    rules = lambda n: {x["rule"] for x in by[n]["findings"]}  # noqa: E731
    assert "archive-crc" in rules("zip_data_pkl_badcrc.pt")
    assert "archive-path-traversal" in rules("zip_traversal.pt")
    assert "archive-extra-member" in rules("zip_extra_member.pt")
    assert "archive-prefix" in rules("zip_outside_prefix.pt")
    assert any("after the first STOP" in x["explanation"] for x in by["after_stop.pkl"]["findings"])
    assert "trailing-data" in rules("numpy_trailing.npy")
    memb = {x["member"] for x in by["joblib_gzip.joblib"]["findings"]}
    assert "(gzip-decompressed)" in memb


def test_formats_are_recorded_by_content(scanned):
    by = {e.path.name: r for e, r in scanned}
    assert list(by["model_noext"]["formats"].values()) == ["pickle"]
    assert list(by["model.sav"]["formats"].values()) == ["pickle"]
    assert list(by["state_dict_legacy.pt"]["formats"].values()) == ["torch-legacy"]
    assert list(by["old_tar.pt"]["formats"].values()) == ["torch-tar"]
    assert by["hf_model"]["files_scanned"] == 7
    assert by["state_dict.pt"]["pickles_scanned"] >= 1 and by["state_dict.pt"]["pickle_bytes"] > 0


def test_scan_of_a_payload_inside_bytes_in_memory_is_attributed(tmp_path):
    inner = b"\x80\x02cposix\nsystem\n(X\x04\x00\x00\x00truetR."
    outer = b"\x80\x04\x8c\x06pickle\x8c\x05loads\x93C" + bytes([len(inner)]) + inner + b"\x85R."
    p = tmp_path / "nested.bin"
    p.write_bytes(outer)
    r = scan_path(p).to_dict()
    nested = [f for f in r["findings"] if f["name"] == "system"]
    assert nested and nested[0]["offset"] == outer.index(b"cposix")
    assert "nested" in nested[0]["explanation"]
