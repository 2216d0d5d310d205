"""Static scan of non-pickle formats (Keras, HDF5, SavedModel, ONNX, GGUF, chat templates, NeMo/tar, 7z):
every family of corpora.format_corpus caught with its location, every benign file not called malicious,
unparseable files inconclusive, and nothing unmarshalled, unpickled or rendered."""

from __future__ import annotations

import marshal
import os
import pickle
import time
from pathlib import Path

import pytest

from corpora import chat_templates
from corpora.format_corpus import build_format_corpus
from probes.static_scan import scan_path, to_sarif


class _Refused(Exception):
    pass


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    dest = tmp_path_factory.mktemp("formats")
    entries = build_format_corpus(dest)
    for e in entries:  # warm up: lazy imports load .pyc files through marshal, which is refused below
        scan_path(e.path)
    mp = pytest.MonkeyPatch()

    def refuse(*a, **k):
        raise _Refused("the static scan tried to unmarshal, unpickle or render")

    for mod, names in ((marshal, ("loads", "load")), (pickle, ("loads", "load", "Unpickler"))):
        for n in names:
            mp.setattr(mod, n, refuse)
    import jinja2

    mp.setattr(jinja2.Template, "render", refuse)
    mp.setattr(jinja2.environment.Template, "render", refuse)
    try:
        return dest, [(e, scan_path(e.path).to_dict()) for e in entries]
    finally:
        mp.undo()


def test_every_subject_gets_its_expected_verdict(scanned):
    _, results = scanned
    wrong = [(e.path.name, e.family, e.expect, r["verdict"], r["summary"]) for e, r in results if r["verdict"] != e.expect]
    assert not wrong, wrong


def test_no_benign_file_is_called_malicious(scanned):
    _, results = scanned
    assert sum(e.label == "benign" for e, _ in results) >= 25
    assert not [e.path.name for e, r in results if e.label == "benign" and r["verdict"] == "malicious"]


def test_families_are_covered(scanned):
    _, results = scanned
    fams = " ".join(e.family for e, _ in results)
    for needle in ("keras v3 Lambda", "CVE-2025-1550", "enable_unsafe_deserialization", "get_file", "TFSMLayer",
                   "legacy h5 Lambda", "h5-based .keras", "external link", "virtual dataset", "external raw storage",
                   "ReadFile/WriteFile", "PyFunc", "SaveV2", "keras_metadata.pb", "MatchingFiles",
                   "onnx external data absolute", "'..'", "subgraph", "custom operator", "oversized",
                   "chat template injection", "chat_template.jinja", "nemo tar with pickle", "Hydra",
                   "tar.gz", "zip wrapping a tar", "nested 5 deep", "symlink", "7z", "base64 source text",
                   "module builtins", "fn_module", "shell script member", "LoadLibrary", "Const string payload",
                   "no schema version", "custom_chat_template", "standalone .j2", "YAML config chat template", "polyglot", "plain source text", "not shaped as Keras", "PyOp"):
        assert needle in fams, needle


def test_malicious_findings_name_payload_and_location(scanned):
    _, results = scanned
    for e, r in results:
        if e.expect not in ("malicious", "suspicious"):
            continue
        assert r["findings"], e.path.name
        top = r["findings"][0]
        assert top["file"] and top["rule"] and top["explanation"], (e.path.name, top)
        # located: an archive member, a byte offset, or a path inside the format (JSON pointer, node, line)
        assert top.get("member") or top.get("offset") is not None or top.get("where"), (e.path.name, top)
        if e.payload:
            names = {f"{f['module']}.{f['name']}" for f in r["findings"] if f.get("module") and f.get("name")}
            assert e.payload in names, (e.path.name, names)


def test_lambda_names_the_bytecode_references_without_unmarshalling(scanned):
    _, results = scanned
    r = next(r for e, r in results if e.path.name == "keras_v3_lambda.keras")
    f = next(f for f in r["findings"] if f["rule"] == "keras-lambda")
    assert f["member"] == "config.json" and f["where"] == "/config/layers/1"
    assert f["severity"] == "critical" and "evil_lambda" in f["explanation"]
    assert "__import__" in f["explanation"] and "system" in f["explanation"] and "'os'" in f["explanation"]
    assert '"class_name": "Lambda"' in f["node"]


def test_graph_and_onnx_findings_carry_byte_offsets(scanned):
    _, results = scanned
    r = next(r for e, r in results if e.path.name == "savedmodel_readwrite")
    ops = {f["opcode"]: f for f in r["findings"]}
    assert {"ReadFile", "WriteFile"} <= set(ops)
    data = (Path(r["findings"][0]["file"])).read_bytes()
    for f in ops.values():
        assert f["offset"] is not None and f["node"]
        assert data[f["offset"]:f["offset"] + 200].find(f["name"].encode()) >= 0  # the offset is the node's bytes
    assert "/etc/passwd" in ops["ReadFile"]["explanation"]
    r = next(r for e, r in results if e.family == "onnx external data absolute path")
    f = r["findings"][0]
    assert f["rule"] == "onnx-external-data" and "/etc/passwd" in f["explanation"] and f["offset"] > 0


def test_sarif_locates_every_new_format(scanned):
    _, results = scanned
    log = to_sarif([r for e, r in results if e.expect in ("malicious", "suspicious")])
    res = log["runs"][0]["results"]
    rules = {x["ruleId"] for x in res}
    for rid in ("keras-lambda", "keras-import", "keras-safe-mode-bypass", "keras-external-model", "hdf5-external-link",
                "hdf5-virtual-dataset", "hdf5-external-storage", "tf-file-op", "tf-python-op", "tf-path-outside",
                "onnx-external-data", "onnx-custom-op", "onnx-tensor-size", "chat-template-injection",
                "hydra-target", "archive-path-traversal", "tf-native-op", "tf-string-payload", "archive-executable"):
        assert rid in rules, rid
    described = {r["id"]: r["shortDescription"]["text"] for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert all(described[rid] != rid for rid in rules), "every rule has a description"
    for x in res:
        if x["ruleId"] == "inconclusive":
            continue
        loc = x["locations"][0]
        assert "physicalLocation" in loc
        assert loc["physicalLocation"].get("region") or loc.get("logicalLocations") or \
            log["runs"][0]["artifacts"][loc["physicalLocation"]["artifactLocation"]["index"]].get("parentIndex") is not None


def test_real_templates_parse_clean_and_hostile_ones_do_not():
    from probes.static_scan import chat_template
    from probes.static_scan.scanner import Loc, Scanner

    for name, tpl in chat_templates.BENIGN.items():
        sc = Scanner()
        chat_template.check(sc, Loc("t"), tpl, name)
        assert not sc.findings and not sc.inconclusive, (name, sc.findings)
    for name, (tpl, _) in chat_templates.HOSTILE.items():
        sc = Scanner()
        chat_template.check(sc, Loc("t"), tpl, name)
        assert sc.findings, name
    sc = Scanner()
    chat_template.check(sc, Loc("t"), "{% for m in messages %}{{ m", "broken")
    assert sc.inconclusive and not sc.findings


@pytest.mark.parametrize("kind", ["gguf", "onnx", "safetensors"])
def test_one_gigabyte_file_headers_scan_under_a_second(tmp_path, kind):
    """A sparse 1 GiB file: only the header/metadata is read (the data is holes, never touched)."""
    from corpora.format_corpus import write_sparse_gguf, write_sparse_onnx

    size = 1 << 30
    p = tmp_path / f"big.{kind}"
    if kind == "gguf":
        write_sparse_gguf(p, size, chat_templates.LLAMA3)
        size = p.stat().st_size
    elif kind == "onnx":
        write_sparse_onnx(p, size)
        size = p.stat().st_size
    else:
        import json
        import struct

        hdr = json.dumps({"w": {"dtype": "F32", "shape": [size // 4 - 64], "data_offsets": [0, size - 256]}}).encode()
        hdr += b" " * (248 - len(hdr) % 8 if len(hdr) % 8 else 0)
        with open(p, "wb") as fh:
            fh.write(struct.pack("<Q", len(hdr)) + hdr)
        size = 8 + len(hdr) + size - 256
    with open(p, "r+b") as fh:
        fh.truncate(size)
    try:
        t0 = time.perf_counter()
        r = scan_path(p).to_dict()
        dt = time.perf_counter() - t0
    finally:
        os.unlink(p)
    assert dt < 1.0, dt
    assert r["verdict"] == "clean", r["summary"]


def test_model_folders_are_identified_by_content(scanned):
    """A SavedModel, a Keras folder and HF folders with ONNX/GGUF are model folders (never "no model files")."""
    from workbench.subject_files import describe

    dest, _ = scanned
    for name in ("savedmodel_benign", "savedmodel_readwrite", "keras_folder_lambda", "hf_onnx_folder",
                 "hf_template_benign", "onnx_external_inside"):
        info = describe(dest / name)
        assert info.files, name
    fmts = {f["path"]: f["format"] for f in describe(dest / "savedmodel_benign").files}
    assert fmts["saved_model.pb"] == "tf-savedmodel" and fmts["keras_metadata.pb"] == "keras-metadata"


def test_cli_scan_of_a_savedmodel_folder_gives_a_verdict(scanned, tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    dest, _ = scanned
    r = CliRunner().invoke(app, ["scan", str(dest / "savedmodel_readwrite"), "--probes", "static",
                                 "--sarif", str(tmp_path / "out.sarif")])
    assert r.exit_code == 0, r.output
    assert "malicious" in r.output and "ReadFile" in r.output
    import json

    sarif = json.loads((tmp_path / "out.sarif").read_text())
    res = [x for x in sarif["runs"][0]["results"] if x["ruleId"] == "tf-file-op"]
    assert res and res[0]["locations"][0]["physicalLocation"]["region"]["byteOffset"] > 0
    assert "node 'read'" in res[0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]


def test_truncated_and_corrupted_files_never_crash(scanned, tmp_path):
    """Hostile/truncated input of every format: one result per file (never a traceback), and a file cut inside
    its header is never called clean."""
    import random

    dest, results = scanned
    rng = random.Random(7)
    files = sorted(p for p in dest.rglob("*") if p.is_file() and p.stat().st_size > 64)
    for i in range(160):
        src = files[i % len(files)]
        data = bytearray(src.read_bytes())
        cut = rng.randrange(16, min(len(data), 64))
        if i % 2:
            for _ in range(4):
                j = rng.randrange(len(data))
                data[j] = rng.randrange(256)
        else:
            data = data[:cut]
        p = tmp_path / f"{i}_{src.name}"
        p.write_bytes(bytes(data))
        r = scan_path(p).to_dict()
        assert r["verdict"] in ("clean", "suspicious", "malicious", "inconclusive")
        if not i % 2 and src.suffix in (".gguf", ".onnx", ".h5", ".keras", ".nemo", ".pb"):
            assert r["verdict"] != "clean", (src.name, cut, r["summary"])
