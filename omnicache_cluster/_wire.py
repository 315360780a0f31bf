"""The client side of the shards' direct data port (see `omnicache_cluster.core.wire`).

Per process and shard: a small pool of blocking sockets for the sync client, and one
pipelined asyncio connection per event loop for the async client. An endpoint is
learnt once per shard (a Ray call to the shard) and forgotten with the shard's handle.
Any failure of the port (refused, closed, malformed, timed out) is reported as
`WireError`/`TimeoutError` to the routing code, which forgets the endpoint and retries
the keys through Ray calls, so the port is never needed for correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import weakref
from typing import Any

from omnicache_cluster.core import wire
from omnicache_cluster.errors import OmnicacheError

__all__: list[str] = []

#: Blocking sockets kept per shard for the sync client (more threads open more, and
#: close the extra ones after use).
POOL_SIZE = 4


class RemoteError(OmnicacheError):
    """A shard method raised while serving a direct-port call."""


def _raise_remote(shard: str, method: str, detail: Any) -> None:
    kind, message = detail if isinstance(detail, list) and len(detail) == 2 else ("?", detail)
    if kind == "ValueError":
        raise ValueError(message)
    if kind == "TypeError":
        raise TypeError(message)
    raise RemoteError(f"shard {shard}: {method} raised {kind}: {message}")


class Endpoint:
    """Where one shard's direct port is, and this process's connections to it."""

    def __init__(self, shard: str, host: str, port: int, token: bytes) -> None:
        self.shard = shard
        self.host = host
        self.port = port
        self.token = token
        self._lock = threading.Lock()
        self._idle: list[socket.socket] = []
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConn]
        self._async = weakref.WeakKeyDictionary()
        self.closed = False

    # -- sync ------------------------------------------------------------------------

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = wire.client_tls()
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock)
            except BaseException:
                sock.close()
                raise
        sock.sendall(wire.pack(self.token))
        return sock

    def call(self, method: str, arg: Any, timeout: float) -> Any:
        """Run ``method(arg)`` on the shard and return its reply.

        Raises:
            WireError: the connection failed (the caller falls back to Ray).
            TimeoutError: no reply within ``timeout``.
            ValueError, TypeError, RemoteError: the shard's method raised.
        """
        return self.receive(self.send(method, arg, timeout), method)

    def send(self, method: str, arg: Any, timeout: float) -> socket.socket:
        """Send one request on a pooled connection; `receive` takes its reply (so one
        thread can have a request in flight at several shards at once)."""
        with self._lock:
            sock = self._idle.pop() if self._idle else None
        try:
            if sock is None:
                sock = self._connect(timeout)
            else:
                sock.settimeout(timeout)
            sock.sendall(wire.pack([0, method, arg]))
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise self._failure(exc) from exc
        return sock

    def receive(self, sock: socket.socket, method: str) -> Any:
        """Read the reply to the request `send` sent on ``sock``."""
        try:
            _rid, status, result = wire.recv_frame(sock)
        except (OSError, ValueError, TypeError) as exc:  # closed, timed out, malformed
            sock.close()
            raise self._failure(exc) from exc
        with self._lock:
            if len(self._idle) < POOL_SIZE and not self.closed:
                self._idle.append(sock)
                sock = None  # type: ignore[assignment]
        if sock is not None:
            sock.close()
        if status != wire.OK:
            _raise_remote(self.shard, method, result)
        return result

    def _failure(self, exc: BaseException) -> BaseException:
        if isinstance(exc, TimeoutError | wire.WireError):
            return exc
        return wire.WireError(f"shard {self.shard} direct port: {exc}")

    # -- async -----------------------------------------------------------------------

    async def acall(self, method: str, arg: Any, timeout: float) -> Any:
        """Async `call`: pipelined on this event loop's connection to the shard."""
        loop = asyncio.get_running_loop()
        conn = self._async.get(loop)
        if conn is None or conn.broken:
            conn = AsyncConn(self)
            self._async[loop] = conn
        return await conn.call(method, arg, timeout)

    def close(self) -> None:
        """Close every connection (the shard died or the cluster was replaced)."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()
        for conn in list(self._async.values()):
            conn.close()


def _expire(fut: asyncio.Future[Any], shard: str, method: str, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError(f"shard {shard} did not answer {method} in {timeout}s"))


class AsyncConn:
    """One asyncio connection to a shard with many requests in flight."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._opening: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.broken = False

    async def _open(self) -> None:
        ep = self._endpoint
        tls = wire.client_tls()
        reader, writer = await asyncio.open_connection(
            ep.host, ep.port, ssl=tls, server_hostname="" if tls is not None else None
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(wire.pack(ep.token))
        self._writer = writer
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    async def call(self, method: str, arg: Any, timeout: float) -> Any:
        """Send one request and wait for its reply (`TimeoutError` after ``timeout``)."""
        loop = self._loop
        if self._writer is None:
            if self._opening is None:
                self._opening = loop.create_task(self._open())
            try:
                await asyncio.wait_for(asyncio.shield(self._opening), timeout)
            except OSError as exc:
                self.broken = True
                raise wire.WireError(f"shard {self._endpoint.shard} direct port: {exc}") from exc
        if self.broken or self._writer is None:
            raise wire.WireError(f"shard {self._endpoint.shard}: direct connection closed")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = loop.create_future()
        self._waiting[rid] = (method, fut)
        # A timer on the future, not `wait_for` (which wraps every call in a task).
        timer = loop.call_later(timeout, _expire, fut, self._endpoint.shard, method, timeout)
        try:
            self._writer.write(wire.pack([rid, method, arg]))
            return await fut
        finally:
            timer.cancel()
            self._waiting.pop(rid, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        error: BaseException = wire.WireError(
            f"shard {self._endpoint.shard} closed the direct connection"
        )
        try:
            while True:
                n = wire.frame_length(await reader.readexactly(4))
                rid, status, result = wire.unpack(await reader.readexactly(n))
                entry = self._waiting.pop(rid, None)
                if entry is None or entry[1].done():
                    continue  # its caller gave up (timeout)
                method, fut = entry
                if status == wire.OK:
                    fut.set_result(result)
                else:
                    try:
                        _raise_remote(self._endpoint.shard, method, result)
                    except Exception as exc:
                        fut.set_exception(exc)
        except (asyncio.IncompleteReadError, OSError, wire.WireError) as exc:
            if isinstance(exc, wire.WireError):
                error = exc
        except asyncio.CancelledError:
            pass
        finally:
            self.broken = True
            for _method, fut in list(self._waiting.values()):
                if not fut.done():
                    fut.set_exception(error)
            self._waiting.clear()
            if self._writer is not None:
                self._writer.close()

    def close(self) -> None:
        """Close the connection (from any thread)."""
        self.broken = True
        target = self._reader_task.cancel if self._reader_task is not None else None
        if target is None and self._writer is not None:
            target = self._writer.close
        if target is not None:
            # RuntimeError: the loop is closed, and so is the connection.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(target)
