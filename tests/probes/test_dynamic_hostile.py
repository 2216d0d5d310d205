"""Issue 18: the dynamic probe against hostile payloads that aim past the audit hook, and partial loads."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from probes.context import context_for
from probes.dynamic_load import run


def probe(path, **params):
    return run(str(path), context_for("dynamic", {"baseline": False, **params}))


def test_a_folder_loaded_only_in_part_is_not_clean_and_names_the_file_left_out(tmp_path):
    for i in range(3):
        (tmp_path / f"w{i}.pkl").write_bytes(pickle.dumps({"w": [float(i)]}, protocol=4))
    res = probe(tmp_path, max_files=2)
    assert res.verdict == "inconclusive", res.summary
    assert "w2.pkl" in res.summary and "max_files" in res.summary
    assert [Path(s["file"]).name for s in res.details["skipped"]] == ["w2.pkl"]
    full = probe(tmp_path, max_files=3)
    assert full.verdict == "clean", full.summary
    assert full.details["skipped"] == []


def _call(module: str, name: str, args: bytes) -> bytes:
    """Opcodes for ``module.name(*args)`` where ``args`` is already opcodes between MARK and TUPLE."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n(" + args + b"tR"


def _int(n: int) -> bytes:
    return b"J" + n.to_bytes(4, "little", signed=True)


def kill_payloads(victim: int) -> dict[str, bytes]:
    """Pickles that try to SIGKILL the host process ``victim`` in every way CPython offers without ctypes."""
    pidfd = lambda mod_os, mod_sig: (b"\x80\x02" + _call(mod_os, "pidfd_open", _int(victim)) + b"q\x000"  # noqa: E731
                                     + _call(mod_sig, "pidfd_send_signal", b"h\x00" + _int(9)) + b".")
    return {
        "pidfd": pidfd("os", "signal"),
        "pidfd-posix": pidfd("posix", "_signal"),
        "kill": b"\x80\x02" + _call("os", "kill", _int(victim) + _int(9)) + b".",
        "posix-kill": b"\x80\x02" + _call("posix", "kill", _int(victim) + _int(9)) + b".",
        "killpg": b"\x80\x02" + _call("os", "killpg", _int(victim) + _int(9)) + b".",
        "ctypes-kill": b"\x80\x02" + _call("builtins", "getattr", _call("ctypes", "CDLL", b"N") + b"X\x04\x00\x00\x00kill")
        + b"(" + _int(victim) + _int(9) + b"tR.",
    }


@pytest.fixture()
def victim():
    import subprocess

    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("audit_hook", [True, False])
def test_a_payload_cannot_signal_a_host_process(tmp_path, victim, audit_hook):
    """Each way of killing a host process from the pickle stream fails, with the audit hook on and, for the
    OS layers alone (own PID namespace, seccomp, refusing wrappers), with it off."""
    from probes.dynamic_load import sandbox

    z = sandbox.get_zygote()
    cases = kill_payloads(victim.pid)
    if z.isolation.get("pidns") and z.isolation.get("seccomp_in_job"):
        # kill(-1) from a root process outside a PID namespace would signal every process on the machine:
        # tried only once both layers are known to be up.
        cases["kill-all"] = b"\x80\x02" + _call("os", "kill", _int(-1) + _int(9)) + b"."
    for name, data in cases.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(data)
        with z.lock:
            tr = z.run_job(str(path), "pickle", timeout_s=20, cpu_s=20, memory_mb=1024, audit_hook=audit_hook)
        assert victim.poll() is None, f"payload {name!r} killed the host's victim process: {tr.done}"
        if audit_hook:
            assert tr.done and not tr.done["ok"], (name, tr.done)
            res = probe(path)
            assert res.verdict == "malicious", (name, res.summary)
    assert z.alive() and victim.poll() is None
    iso = z.isolation
    assert iso.get("pidns") is True, iso
    assert iso.get("seccomp_in_job") or iso.get("seccomp_error"), iso
