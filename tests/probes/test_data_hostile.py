"""Issue 18 item 6: hostile ``--data`` files end in one-line errors; a declared-huge array is refused from
its header before anything is allocated."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from probes.data import load_npz
from probes.errors import ProbeError


def declared_bomb(path, n=750_000):
    """An npz whose x.npy header declares (n, 1, 32, 32) float32 (3 GB at the default n) over 1 MB of data."""
    from numpy.lib import format as npy_format

    hdr = io.BytesIO()
    npy_format.write_array_header_1_0(hdr, {"descr": "<f4", "fortran_order": False, "shape": (n, 1, 32, 32)})
    y = io.BytesIO()
    np.save(y, np.zeros(n, np.int64))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", hdr.getvalue() + bytes(1 << 20))
        zf.writestr("y.npy", y.getvalue())
    return path


def test_text_labels_are_a_one_line_error(tmp_path):
    p = tmp_path / "labels.npz"
    np.savez(p, x=np.zeros((4, 1, 8, 8), np.float32), y=np.array(["cat", "dog", "cat", "dog"]))
    with pytest.raises(ProbeError, match="text labels .*'cat'.*integer class ids"):
        load_npz(p)
    np.savez(p, x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0.0, 1.0, 2.0, 1.0]))
    assert load_npz(p).y.dtype == np.int64
    np.savez(p, x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0.5, 1.0, 2.0, 1.0]))
    with pytest.raises(ProbeError, match="integer class ids"):
        load_npz(p)
    np.savez(p, x=np.array([["a"] * 64] * 4).reshape(4, 1, 8, 8), y=np.arange(4))
    with pytest.raises(ProbeError, match="x must hold numbers"):
        load_npz(p)


def test_a_3gb_declared_array_is_refused_from_its_header_with_low_peak_memory(tmp_path):
    bomb = declared_bomb(tmp_path / "bomb.npz")
    code = ("import resource, sys\nfrom probes.data import load_npz\nfrom probes.errors import ProbeError\n"
            "try:\n    load_npz(sys.argv[1])\nexcept ProbeError as e:\n    print('refused:', e)\n"
            "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')]\n"
            "print('maxrss_kb', int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": ".", "PATH": "/usr/bin:/bin"})
    assert "refused:" in out.stdout and "refused before loading" in out.stdout, (out.stdout, out.stderr)
    rss_mb = int(out.stdout.split("maxrss_kb")[1]) / 1024  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's)
    assert rss_mb < 300, f"peak RSS {rss_mb:.0f} MB"


def test_the_limit_is_the_examiners_to_raise(tmp_path, monkeypatch):
    small = tmp_path / "ok.npz"
    np.savez(small, x=np.zeros((64, 1, 32, 32), np.float32), y=np.zeros(64, np.int64))
    monkeypatch.setenv("WORKBENCH_MAX_DATA_MB", "0.1")
    with pytest.raises(ProbeError, match="over the 0 MB limit|over the .* MB limit"):
        load_npz(small)
    monkeypatch.setenv("WORKBENCH_MAX_DATA_MB", "10")
    assert len(load_npz(small)) == 64
