"""Suite-wide guarantees: no network, no hub, no stray case files in the user's data dir."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETGUARD = Path(__file__).parent / "_netguard"

# Every subprocess the tests start gets the same guard through sitecustomize.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD), str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread: 2 shared cores, often 5-10x faster
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
sys.path.insert(0, str(NETGUARD))
import sitecustomize as _netguard  # noqa: E402  (installs the guard in this process too)

if socket.socket.connect is not _netguard._connect:  # a pre-existing sitecustomize shadowed ours
    import importlib.util

    spec = importlib.util.spec_from_file_location("_wb_netguard", NETGUARD / "sitecustomize.py")
    _netguard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(_netguard)


@pytest.fixture(autouse=True)
def _isolated_case_db(tmp_path, monkeypatch):
    """Point the default case file at a temp dir so no test touches the examiner's real one."""
    monkeypatch.setenv("WORKBENCH_DB", str(tmp_path / "default-case.db"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    yield


@pytest.fixture(autouse=True, scope="session")
def _torch_single_thread():
    """Under load on 2 cores one torch thread is often 5-10x faster than two."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    yield
