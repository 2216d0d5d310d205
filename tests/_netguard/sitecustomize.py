"""Loaded by every Python the tests start (PYTHONPATH): refuse network connections.

Any attempt to connect or resolve a name raises, so a test that reaches for the
network fails loudly instead of passing on a machine that happens to be online.
Unix-domain sockets (asyncio's self-pipe, multiprocessing) stay allowed.
"""

import socket

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkBlocked(RuntimeError):
    pass


def _guard(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise NetworkBlocked(f"network access attempted during tests: {address!r}")


def _connect(self, address):
    _guard(self, address)
    return _real_connect(self, address)


def _connect_ex(self, address):
    _guard(self, address)
    return _real_connect_ex(self, address)


def _getaddrinfo(*args, **kwargs):
    raise NetworkBlocked(f"DNS lookup attempted during tests: {args[:2]!r}")


socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex
socket.getaddrinfo = _getaddrinfo
socket.create_connection = lambda address, *a, **k: _guard(socket.socket(), address)  # noqa: E731
