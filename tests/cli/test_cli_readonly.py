"""Issue 18 item 9: a case file on a read-only medium (a write-blocked evidence copy) is listed, shown,
exported and verified; a command that would change it says so in one line."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

from casefiles import CaseStore
from casefiles.errors import CaseFileError
from tests.cli.helpers import wb


def _read_only_run(folder, *args):
    """Run ``workbench ARGS`` in a private mount namespace where ``folder`` is bind-mounted read-only."""
    cmd = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "workbench", *args])
    f = shlex.quote(str(folder))
    script = f"mount --bind {f} {f} && mount -o remount,bind,ro {f} && exec {cmd}"
    return subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True,
                          env={**os.environ}, timeout=120)


@pytest.fixture()
def ro_case(tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("util-linux unshare not available")
    folder = tmp_path / "evidence"
    folder.mkdir()
    db = folder / "case.db"
    assert wb("case", "new", "Write-blocked copy", "--db", db).code == 0
    assert wb("note", "add", "1", "first look", "--db", db).code == 0
    probe = _read_only_run(folder, "case", "list", "--db", db)
    if "mount" in probe.stderr and probe.returncode != 0 and "case file" not in probe.stderr:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.strip()}")
    return folder, db


def test_read_commands_work_on_a_read_only_medium(ro_case):
    folder, db = ro_case
    r = _read_only_run(folder, "case", "list", "--db", db)
    assert r.returncode == 0 and "Write-blocked copy" in r.stdout, r.stderr
    r = _read_only_run(folder, "case", "show", "1", "--db", db)
    assert r.returncode == 0 and "Case 1" in r.stdout, r.stderr
    r = _read_only_run(folder, "case", "verify", "1", "--db", db)
    assert r.returncode == 0 and "intact" in r.stdout, r.stderr
    r = _read_only_run(folder, "case", "export", "1", "--db", db)
    assert r.returncode == 0 and "# Case 1: Write-blocked copy" in r.stdout and "first look" in r.stdout, r.stderr
    assert "not recorded in its audit trail" in r.stderr


def test_write_commands_give_one_line_errors(ro_case):
    folder, db = ro_case
    for args in (["note", "add", "1", "second look"], ["case", "new", "x"]):
        r = _read_only_run(folder, *args, "--db", db)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "read-only" in r.stderr


def test_a_store_opened_read_only_refuses_writes(tmp_path):
    db = tmp_path / "case.db"
    with CaseStore(db) as s:
        s.new_case("c")
    with CaseStore(db, create=False, read_only=True) as s:
        assert s.list_cases()[0]["title"] == "c" and s.verify(1).ok
        with pytest.raises(CaseFileError, match="read-only"):
            s.add_note(1, "x")
