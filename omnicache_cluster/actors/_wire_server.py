"""The actor side of the direct data port (see `omnicache_cluster.core.wire`).

`WireServer` is mixed into `ShardActor` (and `SemanticIndexActor`, for its searches):
``wire_endpoint()`` (a Ray call) opens the port on first use, in the actor's own event
loop, and returns where it is and the token to present. Requests run the same methods
as Ray calls, concurrently, so the counters, the ring checks (*moved*), L2 and the
change log behave the same whichever way a call arrives.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from typing import Any

from omnicache_cluster.core import wire

__all__ = ["WireServer"]

_log = logging.getLogger(__name__)

#: How long a new connection may take to present its token.
HELLO_TIMEOUT_S = 10.0
#: Replies waiting to be sent on one connection before its requests are read no more.
MAX_UNSENT = 64 * 1024 * 1024
#: Requests of one connection running at once (reading through to L2, waiting for a
#: moving slot) before its next requests are read no more.
MAX_PENDING = 1024


class WireServer:
    """Serves ``_wire_methods`` of the actor (one argument each) on a TCP port of its
    node."""

    _wire_methods: frozenset[str] = wire.METHODS

    _wire_server: asyncio.AbstractServer | None = None
    _wire_token: bytes = b""
    _wire_address: tuple[str, int] | None = None
    _wire_tasks: set[asyncio.Task[None]]
    wire_requests: int = 0

    async def wire_endpoint(self) -> tuple[str, int, bytes] | None:
        """Return ``(host, port, token)`` of the direct port, opening it on first use;
        ``None`` where it is off (``OMNICACHE_FAST_PATH=0``, ``RAY_USE_TLS`` without
        readable certificates) or cannot be opened."""
        if self._wire_address is None:
            if not wire.enabled_here():
                return None
            try:
                await self._wire_open()
            except OSError as exc:  # ssl.SSLError too: unreadable or bad certificates
                _log.warning("direct port not opened, data calls stay on Ray: %s", exc)
                return None
        assert self._wire_address is not None
        return self._wire_address[0], self._wire_address[1], self._wire_token

    async def _wire_open(self) -> None:
        import ray

        # The node's address as Ray knows it: 127.0.0.1 in local mode.
        host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        self._wire_tasks = set()
        self._wire_token = secrets.token_bytes(32)
        tls = wire.server_tls()
        extra: dict[str, Any] = {} if tls is None else {"ssl_handshake_timeout": HELLO_TIMEOUT_S}
        self._wire_server = await asyncio.start_server(self._wire_serve, host, 0, ssl=tls, **extra)
        port = self._wire_server.sockets[0].getsockname()[1]
        self._wire_address = (host, port)

    async def _wire_serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            header = await asyncio.wait_for(reader.readexactly(4), HELLO_TIMEOUT_S)
            n = wire.frame_length(header, wire.MAX_HELLO)
            hello = wire.unpack(await asyncio.wait_for(reader.readexactly(n), HELLO_TIMEOUT_S))
            if not isinstance(hello, bytes) or not hmac.compare_digest(hello, self._wire_token):
                _log.warning("direct port: a connection without the token was closed")
                return
            pending: set[asyncio.Task[None]] = set()
            while True:
                n = wire.frame_length(await reader.readexactly(4))
                request = wire.unpack(await reader.readexactly(n))
                task = asyncio.get_running_loop().create_task(self._wire_one(writer, request))
                self._wire_tasks.add(task)
                pending.add(task)
                task.add_done_callback(self._wire_tasks.discard)
                task.add_done_callback(pending.discard)
                # Let the request start before the next is read: one answered at once
                # (an L1 hit) has then queued its reply for the check below. Without
                # this, requests already in the read buffer (thousands per read) are
                # all taken in before any reply is queued, so the check never sees them.
                await asyncio.sleep(0)
                if len(pending) >= MAX_PENDING:  # requests that wait: read no more for now
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if writer.transport.get_write_buffer_size() > MAX_UNSENT:
                    await writer.drain()  # a client that does not read: stop reading it
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass  # the client went away, or never said hello
        except wire.WireError as exc:
            _log.warning("direct port: closing a connection: %s", exc)
        finally:
            writer.close()

    async def _wire_one(self, writer: asyncio.StreamWriter, request: Any) -> None:
        rid = -1
        try:
            rid, method, arg = request
            if method not in self._wire_methods:
                raise ValueError(f"not a direct-port method: {method!r}")
            if method != "changes_since":  # data calls only, not near-cache polls
                self.wire_requests += 1
            result = await getattr(self, method)(arg)
            frame = wire.pack([rid, wire.OK, result])
        except Exception as exc:  # the caller gets it, like a Ray call's error
            frame = wire.pack([rid, wire.ERROR, [type(exc).__name__, str(exc)]])
        if not writer.is_closing():
            writer.write(frame)

    def _wire_close(self) -> None:
        if self._wire_server is not None:
            self._wire_server.close()
            self._wire_server = None
            self._wire_address = None
