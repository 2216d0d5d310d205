"""End to end: the real ``workbench`` command in a terminal (tmux), driven by keys, read from the pane."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from casefiles import CaseStore

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, command: str, width: int = 150, height: int = 45) -> None:
        self.name = f"wb-e2e-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                        command], check=True, env={**os.environ, "TERM": "xterm-256color"})
        # a detached session may otherwise follow another client's size
        subprocess.run(["tmux", "set-option", "-t", self.name, "window-size", "manual"], capture_output=True)
        subprocess.run(["tmux", "resize-window", "-t", self.name, "-x", str(width), "-y", str(height)],
                       capture_output=True)

    def send(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def capture(self) -> str:
        out = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return out.stdout

    def wait_for(self, *texts: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture()
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{texts!r} never appeared; the pane shows:\n{screen}")

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode == 0

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def test_workbench_in_tmux(syn, tmp_path):
    done = tmp_path / "exit-code"
    pythonpath = shlex.quote(os.environ.get("PYTHONPATH", ""))
    cmd = (f"cd {shlex.quote(str(ROOT))} && env -u COLUMNS -u LINES PYTHONPATH={pythonpath} "
           f"{shlex.quote(sys.executable)} -m workbench --db {shlex.quote(str(syn['db']))};"
           f" echo $? > {shlex.quote(str(done))}")
    term = Tmux(cmd)
    try:
        term.wait_for("Case 1: Vendor models 2026-11", "digits-cnn.ts.pt", "n New case", timeout=60)
        term.send("Down")
        term.wait_for("Evidence:")
        term.send("2")
        screen = term.wait_for("suspected target class 3")
        assert "▶ class   3" in screen and "mask × pattern" in screen
        term.send("5")
        term.wait_for("Notes for subject digits-cnn.ts.pt")
        term.send("-l", "typed in tmux")
        term.wait_for("saved at ", timeout=30)  # autosaved, no key pressed
        term.send("C-q")  # quits from inside the editor too
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.exists() and done.read_text().strip() == "0", term.capture()
    finally:
        term.kill()
    with CaseStore(syn["db"]) as st:
        assert st.list_notes(syn["case_id"], subject_id=syn["img"])[-1]["body"] == "typed in tmux"
