"""The shards' direct data protocol: length-prefixed msgpack frames over TCP.

A Ray actor call costs about a millisecond of CPU across the caller, the actor and
Ray's own threads; a cache's data calls are small and many. So every shard also
serves its data methods (`METHODS`) on a TCP port of its node, and clients send
their gets, sets, deletes and exists checks there (and a batch flight's lease that
does not wait, and its store-and-release), falling back to Ray calls when the port
cannot be used. Everything else (the ring, single-key leases, waits, migration,
stats, admin) stays on Ray calls.

Frames: a 4-byte big-endian length, then a msgpack body. The client's first frame is
the shard's token (32 random bytes, handed out only through a Ray call to the shard,
so only Ray-authenticated processes can talk to it); a connection whose first frame is
not the token is closed. Then requests ``[id, method, arg]`` and replies
``[id, OK, result]`` or ``[id, ERROR, [exception type name, message]]``, matched by
id (a connection may have many requests in flight).

Encryption follows Ray's: plaintext like Ray's own traffic by default; with
``RAY_USE_TLS`` set, the port speaks mutual TLS with Ray's certificates
(``RAY_TLS_SERVER_CERT``, ``RAY_TLS_SERVER_KEY``, ``RAY_TLS_CA_CERT``): each side must
present a certificate signed by Ray's CA, as Ray's own connections do. The host name
is not checked (Ray's node certificates often do not name the node's address); the
CA and the token are. Where those files are not readable, the port stays closed.
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
import struct
from typing import Any

import msgpack

__all__ = [
    "ERROR",
    "MAX_FRAME",
    "METHODS",
    "OK",
    "WireError",
    "enabled_here",
    "pack",
    "recv_frame",
    "unpack",
]

#: The shard methods served on the direct port (each takes one argument).
METHODS = frozenset(
    {
        "get",
        "get_many",
        "set_many",
        "delete_many",
        "exists_many",
        "changes_since",
        # batch single-flight: the lease that does not wait, and the store that ends it
        "lease_many",
        "set_and_release_many",
    }
)
#: Largest frame either side accepts (a frame of 100 values of 16 MiB, plus slack).
MAX_FRAME = 2 * 1024 * 1024 * 1024 - 1
#: The largest first (token) frame.
MAX_HELLO = 256
OK = 0
ERROR = 1

_LEN = struct.Struct(">I")


class WireError(ConnectionError):
    """The direct connection to a shard failed or sent something malformed."""


_TLS_FILES = ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")


def tls_files() -> tuple[str, str, str] | None:
    """Ray's ``(certificate, key, CA)`` paths when ``RAY_USE_TLS`` is set, else ``None``."""
    if os.environ.get("RAY_USE_TLS", "").lower() not in ("1", "true", "yes"):
        return None
    cert, key, ca = (os.environ.get(name, "") for name in _TLS_FILES)
    return cert, key, ca


def enabled_here() -> bool:
    """Whether this process may use the direct port: not when ``OMNICACHE_FAST_PATH``
    is ``0`` / ``false``, nor under ``RAY_USE_TLS`` without readable certificate files."""
    if os.environ.get("OMNICACHE_FAST_PATH", "1").lower() in ("0", "false", "no"):
        return False
    files = tls_files()
    return files is None or all(f and os.access(f, os.R_OK) for f in files)


@functools.lru_cache(maxsize=4)
def _tls_context(files: tuple[str, str, str], server: bool) -> ssl.SSLContext:
    cert, key, ca = files
    purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
    ctx = ssl.create_default_context(purpose, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # the CA is checked; node certificates may not name IPs
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual: clients show a certificate too
    ctx.load_cert_chain(cert, key)
    return ctx


def server_tls() -> ssl.SSLContext | None:
    """The TLS context a shard serves its port with (``None``: plaintext).

    Raises:
        OSError, ssl.SSLError: Ray's certificate files cannot be loaded.
    """
    files = tls_files()
    return None if files is None else _tls_context(files, True)


def client_tls() -> ssl.SSLContext | None:
    """The TLS context a client connects with (``None``: plaintext)."""
    files = tls_files()
    return None if files is None else _tls_context(files, False)


def pack(obj: Any) -> bytes:
    """Return one frame holding ``obj``."""
    body = msgpack.packb(obj, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def unpack(body: bytes) -> Any:
    """Decode a frame body.

    Raises:
        WireError: the body is not msgpack.
    """
    try:
        return msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types for garbage
        raise WireError(f"malformed frame: {exc}") from exc


def frame_length(header: bytes, limit: int = MAX_FRAME) -> int:
    """Return the body length announced by a 4-byte header.

    Raises:
        WireError: the length is over ``limit``.
    """
    (n,) = _LEN.unpack(header)
    if n > limit:
        raise WireError(f"frame of {n} bytes is over the limit of {limit}")
    return int(n)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise WireError("the shard closed the connection")
        got += k
    return bytes(buf)


def recv_frame(sock: socket.socket) -> Any:
    """Read and decode one frame from a blocking socket.

    Raises:
        WireError: the connection closed or the frame is malformed.
        TimeoutError: the socket's timeout passed.
    """
    n = frame_length(_recv_exact(sock, 4))
    return unpack(_recv_exact(sock, n))
