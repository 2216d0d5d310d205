"""SARIF 2.1.0 output of static-scan findings, for code-scanning tools and CI gates.

``to_sarif(results)`` takes probe results as dicts (``ProbeResult.to_dict()``; any
result without ``findings`` is ignored) and returns one SARIF log with one run.
Archive members (and decompressed streams) are nested artifacts
(``parentIndex``), so ``region.byteOffset`` is always relative to the artifact
it names: the file itself, or the member inside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "none"}
SECURITY_SEVERITY = {"critical": "9.8", "high": "8.1", "medium": "5.0", "low": "2.0", "info": "0.0"}
RULES = {
    "dangerous-callable": "Pickle imports a callable that executes code, spawns processes or loads another payload",
    "unknown-callable": "Pickle calls a callable outside the allowlist while loading",
    "computed-call": "Pickle calls a value computed while loading",
    "computed-global": "STACK_GLOBAL with a module/name computed while loading",
    "build-hook": "BUILD plants a dunder hook (__setstate__, __reduce__...) that the unpickler calls",
    "monkey-patch": "BUILD/SETITEM/APPEND mutates an imported object",
    "ext-opcode": "Extension-registry opcode (EXT1/2/4): target unknowable statically",
    "review-class": "Class import outside the allowlist (review tier)",
    "hidden-pickle": "A complete pickle hides in bytes no loader is meant to read",
    "trailing-data": "Bytes after the end of the format",
    "archive-path-traversal": "Archive member name escapes the extraction directory",
    "archive-crc": "Archive member CRC-32 mismatch",
    "archive-encrypted": "Archive member has the encrypted flag",
    "archive-duplicate": "Duplicate archive member name",
    "archive-prefix": "Archive member outside torch's archive prefix",
    "archive-extra-member": "Archive member that is not part of the format",
    "archive-name-mismatch": "Local header and central directory name differ",
    "archive-malformed": "Malformed archive member",
    "archive-compression": "Unusual archive compression method",
    "decompression-cap": "Decompressed size exceeds the cap (possible bomb)",
    "safetensors-structure": "safetensors header/offset inconsistency",
    "numpy-object-array": "numpy object array (holds a pickle)",
    "numpy-truncated": "numpy array data shorter than its header says",
    "legacy-header": "Unusual legacy torch header",
    "legacy-storage": "Legacy torch storage table inconsistent",
    "remote-code": "Model folder ships or references custom code",
    "symlink-outside": "Symlink pointing outside the model folder",
    "inconclusive": "Content could not be parsed; the scan is inconclusive for it",
    "keras-lambda": "Keras Lambda layer / __lambda__ function with marshalled Python bytecode",
    "keras-import": "Keras config names a module outside Keras' own namespaces",
    "keras-safe-mode-bypass": "Keras config calls a Keras function that defeats safe_mode or touches files",
    "keras-external-model": "Keras layer that loads an external SavedModel/file (TFSMLayer)",
    "hdf5-external-link": "HDF5 external link to another file",
    "hdf5-virtual-dataset": "HDF5 virtual dataset whose source is another file",
    "hdf5-external-storage": "HDF5 dataset whose raw data lives in an external file",
    "tf-python-op": "TensorFlow graph op that runs Python (PyFunc, EagerPyFunc)",
    "tf-native-op": "TensorFlow graph op that loads a native library (LoadLibrary)",
    "tf-string-payload": "TensorFlow graph string attribute that looks like a shell/Python payload",
    "archive-executable": "Script or native executable inside a model archive",
    "tf-file-op": "TensorFlow graph op that reads or writes files or reaches the network",
    "tf-path-outside": "TensorFlow save/restore or asset path outside the model folder",
    "onnx-external-data": "ONNX external data outside the model folder",
    "onnx-custom-op": "ONNX operator from a custom domain (needs a native custom-op library)",
    "onnx-tensor-size": "ONNX tensor size implausible or inconsistent with its data",
    "gguf-structure": "GGUF header/tensor table inconsistency",
    "chat-template-injection": "Jinja chat template with sandbox-escape constructs",
    "hydra-target": "Hydra/NeMo _target_ that instantiation imports and calls",
    "archive-depth": "Archive nested deeper than the scan follows",
    "archive-members": "Archive with more members than the scan reads",
}


def _uri(path: str) -> str:
    p = Path(path)
    return p.as_uri() if p.is_absolute() else quote(p.as_posix(), safe="/!@()-_.~")


def to_sarif(results: list[dict]) -> dict[str, Any]:
    """One SARIF 2.1.0 log for the ``findings`` of the given result dicts."""
    artifacts: list[dict] = []
    index: dict[tuple, int] = {}

    def artifact(file: str, member: str | None) -> int:
        key = (file, None)
        if key not in index:
            index[key] = len(artifacts)
            artifacts.append({"location": {"uri": _uri(file)}})
        if member is None:
            return index[key]
        parent = index[key]
        mkey = (file, member)
        if mkey not in index:
            index[mkey] = len(artifacts)
            artifacts.append({"location": {"uri": quote(member.replace("\\", "/"), safe="/!@()-_.~")},
                              "parentIndex": parent})
        return index[mkey]

    used_rules: dict[str, int] = {}
    rules: list[dict] = []

    def rule(rid: str) -> int:
        if rid not in used_rules:
            used_rules[rid] = len(rules)
            rules.append({"id": rid, "name": "".join(w.capitalize() for w in rid.split("-")),
                          "shortDescription": {"text": RULES.get(rid, rid)},
                          "help": {"text": f"See docs/static-scan.md (rule {rid})."},
                          "properties": {"tags": ["security", "supply-chain", "model-file"]}})
        return used_rules[rid]

    out: list[dict] = []
    notes: list[dict] = []
    for res in results:
        for f in res.get("findings") or []:
            rid = f.get("rule") or "unknown-callable"
            sev = f.get("severity", "high")
            what = ".".join(x for x in (f.get("module"), f.get("name")) if x)
            text = f.get("explanation") or what or rid
            idx = artifact(f["file"], f.get("member"))
            loc: dict[str, Any] = {"artifactLocation": {"uri": artifacts[idx]["location"]["uri"], "index": idx}}
            if f.get("offset") is not None:
                loc["region"] = {"byteOffset": int(f["offset"]), "byteLength": 1}
            where: dict[str, Any] = {"physicalLocation": loc}
            if f.get("where"):  # a path inside the format: JSON pointer, graph node, template line
                where["logicalLocations"] = [{"fullyQualifiedName": str(f["where"]), "kind": "element"}]
            r = {
                "ruleId": rid, "ruleIndex": rule(rid), "level": LEVELS.get(sev, "warning"),
                "message": {"text": text},
                "locations": [where],
                "partialFingerprints": {"findingKey/v1": f"{f.get('member') or ''}|{f.get('offset')}|{rid}|{what}"},
                "properties": {"severity": sev, "security-severity": SECURITY_SEVERITY.get(sev, "5.0"),
                               "opcode": f.get("opcode"), "module": f.get("module"), "name": f.get("name"),
                               "member": f.get("member")},
            }
            out.append(r)
        for part in res.get("inconclusive_parts") or []:
            idx = artifact(part["file"], part.get("member"))
            out.append({"ruleId": "inconclusive", "ruleIndex": rule("inconclusive"), "level": "warning",
                        "message": {"text": f"not checked: {part['reason']}"},
                        "locations": [{"physicalLocation": {"artifactLocation": {
                            "uri": artifacts[idx]["location"]["uri"], "index": idx}}}],
                        "properties": {"severity": "inconclusive"}})
            notes.append({"level": "warning", "message": {"text": f"{part['file']}: {part['reason']}"}})
    for rid, i in used_rules.items():
        worst = max((r["properties"]["severity"] for r in out if r["ruleId"] == rid),
                    key=lambda s: ["info", "low", "medium", "high", "critical", "inconclusive"].index(s)
                    if s in ("info", "low", "medium", "high", "critical", "inconclusive") else 0)
        rules[i]["defaultConfiguration"] = {"level": LEVELS.get(worst, "warning")}
        rules[i]["properties"]["security-severity"] = SECURITY_SEVERITY.get(worst, "5.0")
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "trojan-workbench static scan", "version": "0.1.0", "rules": rules}},
            "artifacts": artifacts,
            "results": out,
            "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notes}],
            "columnKind": "unicodeCodePoints",
        }],
    }
