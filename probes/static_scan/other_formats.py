"""Dispatch from the pickle scanner to the readers of other frameworks' formats (files and archive members).

Formats are sniffed once from magic bytes (:func:`probes.formats.detect_other`), with
the usual file names as the tie-breaker for protobufs (which have no magic); the
reader for each lives in its own module (keras_config, hdf5, savedmodel, onnx_model,
gguf_file, chat_template, archives).
"""

from __future__ import annotations

import json
import mmap
import re
from pathlib import Path
from typing import Any

from probes import formats
from probes.static_scan import archives, chat_template, finding, keras_config

EXECUTABLE_SUFFIXES = (".py", ".sh", ".bash", ".bat", ".cmd", ".ps1", ".exe", ".dll", ".so", ".dylib", ".vbs",
                       ".js", ".jar")
TEMPLATE_SUFFIXES = (".jinja", ".jinja2", ".j2", ".template", ".tmpl")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json",
                       "processor_config.json")


def scan_format(sc: Any, buf, start: int, end: int, loc: Any, fmt: str, path: Path | None) -> None:
    """Scan ``buf[start:end]`` known to be of ``fmt`` (one of formats.OTHER_MODEL_FORMATS)."""
    if fmt == formats.GGUF:
        from probes.static_scan import gguf_file

        gguf_file.scan(sc, loc, buf, start, end)
    elif fmt == formats.HDF5:
        from probes.static_scan import hdf5

        hdf5.scan(sc, loc, path if path is not None and loc.member is None else (buf, start, end), end - start)
    elif fmt == formats.ONNX:
        from probes.static_scan import onnx_model

        onnx_model.scan(sc, loc, buf, start, end)
    elif fmt in (formats.TF_SAVEDMODEL, formats.TF_GRAPHDEF, formats.KERAS_METADATA):
        from probes.static_scan import savedmodel

        savedmodel.scan(sc, loc, buf, start, end, fmt)
    elif fmt == formats.TAR:
        archives.scan_tar(sc, loc, buf, start, end)
    elif fmt == formats.SEVENZ:
        archives.scan_7z(sc, loc)
    else:
        sc.fail(loc, f"no reader for format {fmt}")


def scan_member(sc: Any, buf, a: int, b: int, loc: Any, name: str, container: str) -> bool:
    """Scan an archive member if it is another framework's file; False to let the pickle scanner take it."""
    if archives.depth_of(loc) > archives.MAX_DEPTH:
        finding.add(sc, loc, "medium", "archive-depth", f"member nested more than {archives.MAX_DEPTH} archive "
                    "levels deep; not read", offset=0)
        sc.fail(loc, f"archive nesting deeper than {archives.MAX_DEPTH}")
        return True
    base = name.rsplit("/", 1)[-1]
    head = bytes(buf[a:min(b, a + 4096)])
    if base.lower().endswith(EXECUTABLE_SUFFIXES) or head[:4] in (b"\x7fELF", b"MZ\x90\x00") or head[:2] == b"#!":
        finding.add(sc, loc, "medium", "archive-executable",
                    f"archive member {name!r} is a script or native executable; a loader does not need it, an "
                    "unpacking step may run it", offset=0, where=name)
    if container == formats.KERAS and name == "config.json":
        keras_config.scan_json_bytes(sc, loc, bytes(buf[a:b]), "Keras config.json")
        return True
    if container == formats.KERAS and name == "metadata.json":
        return True
    if head.startswith(b"PK\x03\x04"):
        return _nested_zip(sc, buf, a, b, loc)
    if archives.is_tar(head):
        archives.scan_tar(sc, loc, buf, a, b)
        return True
    fmt = formats.detect_other(head, base)
    if fmt is not None and not (fmt == formats.ONNX and head[:1] == b"\x80"):
        scan_format(sc, buf, a, b, loc, fmt, None)
        return True
    if check_text(sc, buf, a, b, loc, base, in_folder=True):
        return True
    return False


def _nested_zip(sc: Any, buf, a: int, b: int, loc: Any) -> bool:
    """A zip inside an archive (a torch checkpoint in a .nemo, a .keras in a tar), read in place - never copied -
    and classified by its names like a top-level zip, so torch and Keras rules apply inside wrappers too."""
    import zipfile

    from probes.static_scan.scanner import Loc, _classify_names

    try:
        names = zipfile.ZipFile(archives.SliceFile(buf, a, b)).namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return False  # the pickle scanner reports the malformed zip
    fmt = _classify_names(names)
    sc.scan_zip(buf, a, b, Loc(loc.file, loc.member, 0), fmt, nested=True)
    return True


def check_text(sc: Any, buf, start: int, end: int, loc: Any, name: str, *, in_folder: bool) -> bool:
    """Text side files with executable content: chat templates, Hydra/NeMo YAML; True if ``name`` is one."""
    if name == "config.json":  # a Keras folder (unzipped .keras) keeps its model config here
        try:
            cfg = json.loads(_decode(buf, start, end))
        except (ValueError, RecursionError):
            return False
        if isinstance(cfg, dict) and isinstance(cfg.get("class_name"), str) and "config" in cfg:
            finding.set_format(sc, loc, "keras-config")
            keras_config.check_model(sc, loc, cfg, "Keras config.json")
            return True
        return False
    if name == "chat_template.jinja" or name.lower().endswith(TEMPLATE_SUFFIXES):
        chat_template.check(sc, loc, _decode(buf, start, end), name)
        return True
    is_json = name.lower().endswith(".json")
    is_yaml = name.lower().endswith((".yaml", ".yml"))
    if (is_json and _find(buf, start, end, b'template"')) or (is_yaml and _find(buf, start, end, b"template")):
        try:
            if is_json:
                cfg = json.loads(_decode(buf, start, end))
            else:
                import yaml

                cfg = yaml.safe_load(_decode(buf, start, end))
        except (ValueError, RecursionError) as exc:
            if name in CHAT_TEMPLATE_FILES:
                sc.fail(loc, f"{name} is not valid JSON: {str(exc)[:100]}")
                return True
            return False
        except Exception as exc:  # yaml.YAMLError and friends: a config a loader cannot read either
            sc.fail(loc, f"{name} is not valid YAML: {str(exc)[:100]}")
            return True
        found = _templates(cfg)
        for key, tpl in found:
            chat_template.check(sc, loc, tpl, f"{name} {key}")
        if is_yaml:
            archives.check_yaml_targets(sc, loc, buf, start, end, name)
            return True
        if not found and name not in CHAT_TEMPLATE_FILES:
            return False
        if name == "tokenizer_config.json" and isinstance(cfg, dict) and cfg.get("auto_map"):
            finding.add(sc, loc, "medium", "remote-code",
                        f"tokenizer_config.json auto_map names custom code {cfg['auto_map']!r} "
                        "(runs only with trust_remote_code)")
        return True
    if name.endswith((".yaml", ".yml")):
        archives.check_yaml_targets(sc, loc, buf, start, end, name)
        return True
    return False


_TF_VARIABLES = re.compile(r"^[\w.-]+\.(index|data-\d{5}-of-\d{5})$")


def side_file(sc: Any, path: Path, head: bytes) -> str | None:
    """Raw data files of a model folder: TF checkpoint shards next to a SavedModel, ONNX external-data files."""
    name = path.name
    if _TF_VARIABLES.match(name) and (path.parent.name == "variables" or any(path.parent.glob("*.index"))):
        return "tf-variables"
    cache = sc.__dict__.setdefault("_onnx_in_dir", {})  # one listing per folder, not per file
    if path.parent not in cache:
        cache[path.parent] = sorted(path.parent.glob("*.onnx"))[:16]
    needle = name.encode("utf-8")
    for onnx_file in cache[path.parent]:
        try:
            with open(onnx_file, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                if mm.find(needle) >= 0:
                    return "onnx-external-data"
        except (OSError, ValueError):
            continue
    return None


def _find(buf, start: int, end: int, needle: bytes) -> bool:
    if isinstance(buf, mmap.mmap):
        return buf.find(needle, start, end) >= 0
    return bytes(buf[start:end]).find(needle) >= 0


def _templates(cfg: Any) -> list[tuple[str, str]]:
    """Every chat template in a tokenizer/processor config: ``chat_template`` (string or named list) and any
    other top-level key whose name holds ``template`` with a Jinja-looking string value."""
    out: list[tuple[str, str]] = []
    if not isinstance(cfg, dict):
        return out
    for key, v in cfg.items():
        if not isinstance(key, str) or "template" not in key.lower():
            continue
        if isinstance(v, str) and ("{{" in v or "{%" in v or key == "chat_template"):
            out.append((key, v))
        elif isinstance(v, list):  # named templates: [{"name": ..., "template": ...}]
            for t in v:
                if isinstance(t, dict) and isinstance(t.get("template"), str):
                    out.append((f"{key} {t.get('name')!r}", t["template"]))
    return out


def _decode(buf, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", "replace")
