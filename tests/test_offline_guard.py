"""The suite must fail if any code reaches beyond loopback: prove the guard bites (and lets loopback through)."""

import socket
import subprocess
import sys

import pytest


def test_non_loopback_connect_is_refused_in_process():
    with pytest.raises(RuntimeError, match="network access attempted"):
        socket.create_connection(("192.0.2.1", 9))
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(RuntimeError, match="network access attempted"):
            s.connect(("10.0.0.1", 80))
    finally:
        s.close()


def test_dns_is_refused():
    with pytest.raises(RuntimeError, match="DNS lookup attempted"):
        socket.getaddrinfo("example.org", 443)


def test_loopback_is_allowed():
    """A local Ray instance (the registry tests) talks to itself over loopback; nothing else may."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        c = socket.create_connection(srv.getsockname(), timeout=5)
        conn, _ = srv.accept()
        c.sendall(b"x")
        assert conn.recv(1) == b"x"
        c.close(), conn.close()
        assert socket.getaddrinfo("localhost", 80)
    finally:
        srv.close()


def test_subprocesses_are_guarded_too():
    code = "import socket\ntry:\n socket.create_connection(('192.0.2.1', 9))\nexcept RuntimeError as e: print('blocked', e)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "blocked" in out.stdout, out.stderr


def test_unix_socketpair_still_works():
    a, b = socket.socketpair()
    a.sendall(b"x")
    assert b.recv(1) == b"x"
    a.close(), b.close()
