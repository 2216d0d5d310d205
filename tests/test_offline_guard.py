"""The suite must fail if any code opens a network connection: prove the guard bites."""

import socket
import subprocess
import sys

import pytest


def test_inet_connect_is_refused_in_process():
    with pytest.raises(RuntimeError, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9))
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(RuntimeError, match="network access attempted"):
            s.connect(("10.0.0.1", 80))
    finally:
        s.close()


def test_dns_is_refused():
    with pytest.raises(RuntimeError, match="DNS lookup attempted"):
        socket.getaddrinfo("example.org", 443)


def test_subprocesses_are_guarded_too():
    code = "import socket\ntry:\n socket.create_connection(('127.0.0.1', 9))\nexcept RuntimeError as e: print('blocked', e)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "blocked" in out.stdout, out.stderr


def test_unix_socketpair_still_works():
    a, b = socket.socketpair()
    a.sendall(b"x")
    assert b.recv(1) == b"x"
    a.close(), b.close()
