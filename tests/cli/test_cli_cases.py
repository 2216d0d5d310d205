"""`workbench case|note|subject` end to end against a real case file, and their bad-input paths."""

from __future__ import annotations

import json
import os
import stat

import pytest

from casefiles import CaseStore
from tests.cli.helpers import wb


@pytest.fixture
def db(tmp_path):
    return tmp_path / "cases.db"


def test_case_new_list_show_export_verify(db, tmp_path):
    r = wb("case", "new", "Vendor model 2026-11", "--db", db)
    assert r.code == 0 and "case 1 created" in r.out
    r = wb("case", "list", "--db", db)
    assert "Vendor model 2026-11" in r.out
    model = tmp_path / "model.safetensors"
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.zeros((2, 2), np.float32)}, str(model))
    r = wb("subject", "add", "1", model, "--db", db, "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["format"] == "safetensors" and len(info["sha256"]) == 64
    assert wb("note", "add", "1", "Examiner's first note", "--db", db).code == 0
    r = wb("case", "show", "1", "--db", db)
    assert "model.safetensors" in r.out and "Notes: 1" in r.out and "intact" in r.out
    out = tmp_path / "report.md"
    r = wb("case", "export", "1", "-o", out, "--db", db)
    assert r.code == 0 and out.read_text().startswith("# Case 1: Vendor model 2026-11")
    head = next(line for line in out.read_text().splitlines() if "head hash" in line).split("`")[1]
    r = wb("case", "verify", "1", "--head", head, "--db", db)
    assert r.code == 0 and "intact" in r.out  # the report's head is part of the (since extended) trail
    with CaseStore(db) as s:
        assert s.audit_rows(1)[-1]["action"] == "case.exported"


def test_verify_exit_code_1_names_the_tampered_row(db):
    wb("case", "new", "t", "--db", db)
    wb("note", "add", "1", "n", "--db", db)
    with CaseStore(db) as s:
        s.db.execute("DROP TRIGGER audit_no_update")
        s.db.execute("UPDATE audit SET action = 'note.removed' WHERE seq = 2")
    r = wb("case", "verify", "1", "--db", db)
    assert r.code == 1 and "seq 2" in r.out and "edited" in r.out


def test_workbench_db_env_and_default_location(tmp_path):
    env_db = tmp_path / "from-env.db"
    r = wb("case", "new", "env case", env={"WORKBENCH_DB": str(env_db)})
    assert r.code == 0 and env_db.exists()
    # without --db or $WORKBENCH_DB the platform data dir is used (pointed at tmp via XDG_DATA_HOME)
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_DB"}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "workbench", "case", "new", "default"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "xdg" / "trojan-workbench" / "cases.db").exists()


def test_note_from_file_stdin_and_editor(db, tmp_path):
    wb("case", "new", "notes", "--db", db)
    f = tmp_path / "n.md"
    f.write_text("# From a file\n")
    assert wb("note", "add", "1", "--file", f, "--db", db).code == 0
    assert wb("note", "add", "1", "--file", "-", "--db", db, input="from stdin\n").code == 0
    editor = tmp_path / "fake-editor.sh"
    editor.write_text('#!/bin/sh\necho "typed in the editor" > "$1"\n')
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    assert wb("note", "add", "1", "--db", db, env={"EDITOR": str(editor), "VISUAL": ""}).code == 0
    with CaseStore(db) as s:
        bodies = [n["body"] for n in s.list_notes(1)]
    assert bodies == ["# From a file\n", "from stdin\n", "typed in the editor\n"]


def test_subject_add_hf_folder_hashes_every_file(db, tmp_path):
    wb("case", "new", "hf", "--db", db)
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.ones(4, np.float32)}, str(folder / "model.safetensors"))
    r = wb("subject", "add", "1", folder, "--db", db, "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["format"] == "hf-folder" and info["kind"] == "causal-lm"
    assert {f["path"] for f in info["files"]} == {"config.json", "model.safetensors"}
    assert all(len(f["sha256"]) == 64 for f in info["files"])


# -- bad input: one line on stderr, exit 2, nothing half-written ---------------------------------
def _snapshot(db):
    return db.read_bytes() if db.exists() else None


@pytest.mark.parametrize("args,needle", [
    (["subject", "add", "1", "/no/such/model.pt"], "no such file or folder"),
    (["case", "show", "7"], "no case with id 7"),
    (["note", "add", "7", "text"], "no case with id 7"),
    (["subject", "add", "7", "."], None),  # a folder with no model files, or a missing case
])
def test_bad_input_exit_2_and_one_line(db, args, needle):
    wb("case", "new", "x", "--db", db)
    with CaseStore(db) as s:
        rows_before = len(s.audit_rows(1))
    r = wb(*args, "--db", db)
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    if needle:
        assert needle in r.err
    with CaseStore(db) as s:
        assert len(s.audit_rows(1)) == rows_before and s.verify(1).ok


def test_folder_without_model_files(db, tmp_path):
    wb("case", "new", "x", "--db", db)
    empty = tmp_path / "notes-only"
    empty.mkdir()
    (empty / "README.txt").write_text("not a model")
    r = wb("subject", "add", "1", empty, "--db", db)
    assert r.code == 2 and "no model files" in r.err


@pytest.mark.parametrize("content", [b"garbage" * 100, b"SQLite format 3\x00" + b"\x00\xff" * 300])
def test_corrupt_case_file(tmp_path, content):
    bad = tmp_path / "bad.db"
    bad.write_bytes(content)
    r = wb("case", "list", "--db", bad)
    assert r.code == 2 and r.err.startswith("error: ") and r.err.count("\n") == 1
    assert bad.read_bytes() == content


def test_case_file_path_that_cannot_be_read_as_a_file(tmp_path):
    a_dir = tmp_path / "cases.db"
    a_dir.mkdir()
    r = wb("case", "list", "--db", a_dir)
    assert r.code == 2 and "is a directory" in r.err and r.err.count("\n") == 1


def test_missing_case_file_for_read_commands(tmp_path):
    r = wb("case", "list", "--db", tmp_path / "absent.db")
    assert r.code == 2 and "not found" in r.err
    assert not (tmp_path / "absent.db").exists()


def test_empty_note_is_refused(db):
    wb("case", "new", "x", "--db", db)
    r = wb("note", "add", "1", "   ", "--db", db)
    assert r.code == 2 and "empty" in r.err
