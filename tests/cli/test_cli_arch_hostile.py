"""Issue 18 item 8: an ``--arch`` file that exits, dies or mis-fits ends in a one-line error (exit 2), is
tried in a child process first, and the scan says plainly that the file runs."""

from __future__ import annotations

import pytest

from tests.cli.helpers import wb

GOOD = """
import torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
    def forward(self, x):
        return self.fc(x.flatten(1))
"""


@pytest.fixture()
def weights(tmp_path):
    import torch

    g = torch.Generator().manual_seed(0)
    path = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.randn(10, 64, generator=g), "fc.bias": torch.zeros(10)}, path)
    return path


@pytest.mark.parametrize("body,expected", [
    ("import sys\nsys.exit(0)\n", "sys.exit(0)"),
    (GOOD + "\nraise SystemExit(0)\n", "sys.exit(0)"),
    ("import os\nos._exit(0)\n", "ended the process"),
    (GOOD.replace("super().__init__()", "super().__init__(); raise SystemExit(3)"), "could not be constructed"),
    (GOOD.replace("nn.Linear(64, 10)", "nn.Linear(32, 10)"), "shape mismatch"),
])
def test_a_hostile_arch_file_is_a_one_line_error(tmp_path, weights, body, expected):
    arch = tmp_path / "arch.py"
    arch.write_text(body)
    marker = tmp_path / "ran-in-process"
    arch.write_text(body.replace("import", f"open({str(marker)!r}, 'a').write('x'); import", 1)
                    if "os._exit" in body else body)
    r = wb("scan", weights, "--arch", f"{arch}:Net", "--probes", "fingerprint", "--db", tmp_path / "c.db")
    assert r.code == 2, (r.code, r.out, r.err)
    errors = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], r.err
    assert "Traceback" not in r.err
    if marker.exists():  # os._exit at import: only the child process ran it
        assert marker.read_text() == "x"


def test_a_good_arch_file_says_it_runs_and_loads(tmp_path, weights):
    arch = tmp_path / "arch.py"
    arch.write_text(GOOD)
    r = wb("scan", weights, "--arch", f"{arch}:Net", "--probes", "fingerprint", "--db", tmp_path / "c.db")
    assert r.code == 0, r.err
    assert "runs in this process" in r.err and "child process first" in r.err
