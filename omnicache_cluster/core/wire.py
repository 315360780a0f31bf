"""The shards' direct data protocol: length-prefixed msgpack frames over TCP.

A Ray actor call costs about a millisecond of CPU across the caller, the actor and
Ray's own threads; a cache's data calls are small and many. So every shard also
serves its data methods (`METHODS`) on a TCP port of its node, and clients send
their gets, sets, deletes and exists checks there, falling back to Ray calls when
the port cannot be used. Everything else (the ring, leases, migration, stats,
admin) stays on Ray calls.

Frames: a 4-byte big-endian length, then a msgpack body. The client's first frame is
the shard's token (32 random bytes, handed out only through a Ray call to the shard,
so only Ray-authenticated processes can talk to it); a connection whose first frame is
not the token is closed. Then requests ``[id, method, arg]`` and replies
``[id, OK, result]`` or ``[id, ERROR, [exception type name, message]]``, matched by
id (a connection may have many requests in flight). The bytes are plaintext, like
Ray's own traffic without ``RAY_USE_TLS``; with ``RAY_USE_TLS`` set, shards do not
open the port.
"""

from __future__ import annotations

import os
import socket
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
METHODS = frozenset({"get", "get_many", "set_many", "delete_many", "exists_many", "changes_since"})
#: Largest frame either side accepts (a frame of 100 values of 16 MiB, plus slack).
MAX_FRAME = 2 * 1024 * 1024 * 1024 - 1
#: The largest first (token) frame.
MAX_HELLO = 256
OK = 0
ERROR = 1

_LEN = struct.Struct(">I")


class WireError(ConnectionError):
    """The direct connection to a shard failed or sent something malformed."""


def enabled_here() -> bool:
    """Whether this process may use the direct port (not with Ray's TLS, and not when
    ``OMNICACHE_FAST_PATH`` is ``0`` / ``false``)."""
    if os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true", "yes"):
        return False
    return os.environ.get("OMNICACHE_FAST_PATH", "1").lower() not in ("0", "false", "no")


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
