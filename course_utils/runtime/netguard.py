"""Make 'offline' provable: any attempt to reach a non-local address raises at once instead of hanging.

Used by the test suite (in-process via conftest, and in every kernel/subprocess via tests/sitecustomize).
Loopback stays open because Jupyter kernels talk to their clients over 127.0.0.1.
"""
from __future__ import annotations

import ipaddress
import socket

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}
_original = {}


class NetworkBlocked(ConnectionError):
    pass


def _is_local(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host)
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(host):
    raise NetworkBlocked(
        f"Network access to {host!r} is blocked: the course runs offline. Every model and dataset it needs is "
        "in course_utils/assets. To use a hub model on purpose, set COURSE_ONLINE=1 and COURSE_MODEL=<id> "
        "outside the test suite."
    )


def block_network() -> None:
    """Idempotent. Patches DNS lookups and connects for non-loopback destinations."""
    if _original:
        return
    _original["getaddrinfo"] = socket.getaddrinfo
    _original["connect"] = socket.socket.connect
    _original["connect_ex"] = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            _refuse(host)
        return _original["getaddrinfo"](host, *args, **kwargs)

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _refuse(address[0])
        return _original["connect"](self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _refuse(address[0])
        return _original["connect_ex"](self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex


def unblock_network() -> None:
    if not _original:
        return
    socket.getaddrinfo = _original.pop("getaddrinfo")
    socket.socket.connect = _original.pop("connect")
    socket.socket.connect_ex = _original.pop("connect_ex")
