"""Loaded by every Python the tests start (PYTHONPATH): refuse network connections beyond loopback.

Any attempt to connect to, or resolve, a name or address outside this machine's
loopback raises, so a test that reaches for the network fails loudly instead of
passing on a machine that happens to be online. Loopback (127.0.0.0/8, ::1,
``localhost``) stays allowed: a local Ray instance started by a test talks to
itself over it. Unix-domain sockets (asyncio's self-pipe, multiprocessing) stay
allowed too.
"""

import ipaddress
import socket

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo
_real_create_connection = socket.create_connection


class NetworkBlocked(RuntimeError):
    pass


def _is_loopback(host) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard/loopback, never a remote host
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).split("%", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guard(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) and address else address
        if not _is_loopback(host):
            raise NetworkBlocked(f"network access attempted during tests: {address!r}")


def _connect(self, address):
    _guard(self, address)
    return _real_connect(self, address)


def _connect_ex(self, address):
    _guard(self, address)
    return _real_connect_ex(self, address)


def _getaddrinfo(host, *args, **kwargs):
    if not _is_loopback(host):
        raise NetworkBlocked(f"DNS lookup attempted during tests: {(host, *args[:1])!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _create_connection(address, *args, **kwargs):
    if not _is_loopback(address[0]):
        raise NetworkBlocked(f"network access attempted during tests: {address!r}")
    return _real_create_connection(address, *args, **kwargs)


socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex
socket.getaddrinfo = _getaddrinfo
socket.create_connection = _create_connection
