"""`LocalSingleFlight`: ``get_or_compute`` for a backend that lives in one process.

The cluster deduplicates computes cluster-wide through its leases; a local backend
(`InMemoryBackend`) needs the same call so that the cache layers run on either. Here
the flight table is per process: for each missing key one caller (thread or task)
computes, the others wait for it, groupcache's shape. Sync and async callers share one
table, so a thread and a coroutine asking for the same key still compute once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from omnicache_cluster.core.scope import DEFAULT_LAYER
from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.errors import Timeout, ValueTooLarge

__all__ = ["LocalSingleFlight"]

T = TypeVar("T")
_log = logging.getLogger("omnicache_cluster.backends")


class _Call:
    """One in-flight compute: its outcome and who waits for it (threads or tasks)."""

    __slots__ = ("_waiters", "done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = MISS
        self.error: BaseException | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def finish(self) -> None:
        with _LOCK:
            self.done.set()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut)

    async def wait_async(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with _LOCK:
            if self.done.is_set():
                return True
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        return True


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_LOCK = threading.Lock()
_FLIGHTS: dict[tuple[int, str], _Call] = {}


def _join(flight_key: tuple[int, str]) -> tuple[_Call, bool]:
    """Return the flight of ``flight_key`` and whether this caller leads it."""
    with _LOCK:
        call = _FLIGHTS.get(flight_key)
        if call is not None:
            return call, False
        call = _FLIGHTS[flight_key] = _Call()
        return call, True


def _end(flight_key: tuple[int, str], call: _Call) -> None:
    with _LOCK:
        if _FLIGHTS.get(flight_key) is call:
            del _FLIGHTS[flight_key]
    call.finish()


def _outcome(call: _Call, cached: Any) -> Any:
    """What a waiter returns: a fresh copy from the cache, else the leader's value;
    `MISS` when the leader was cancelled (the waiter computes itself)."""
    if call.error is not None:
        raise call.error
    return cached if cached is not MISS else call.value


def _fail(call: _Call, exc: BaseException) -> None:
    # The leader's own error reaches its waiters; a cancelled or interrupted leader
    # only ends the flight, and a waiter takes over.
    if isinstance(exc, Exception):
        call.error = exc


class LocalSingleFlight:
    """Mixin: ``get_or_compute`` / ``aget_or_compute`` with per-process single-flight.

    Needs ``key``, ``get``, ``set``, ``aget``, ``aset`` and ``store`` from the class it
    is mixed into (`ScopedBackend` has them). Views of one store share flights.
    """

    def _flight_key(self, key: Any, layer: str) -> tuple[int, str]:
        return (id(self.store), self.key(key, layer))  # type: ignore[attr-defined]

    def _store_computed(
        self, key: Any, value: Any, ttl: float | None, tags: Iterable[str] | None, layer: str
    ) -> None:
        try:
            self.set(key, value, ttl=ttl, tags=tags, layer=layer)  # type: ignore[attr-defined]
        except (TypeError, ValueTooLarge) as exc:  # the caller still gets its value
            _log.warning("get_or_compute: result not cached (%s)", exc)

    async def _astore_computed(
        self, key: Any, value: Any, ttl: float | None, tags: Iterable[str] | None, layer: str
    ) -> None:
        try:
            await self.aset(key, value, ttl=ttl, tags=tags, layer=layer)  # type: ignore[attr-defined]
        except (TypeError, ValueTooLarge) as exc:
            _log.warning("get_or_compute: result not cached (%s)", exc)

    def get_or_compute(
        self,
        key: Any,
        fn: Callable[[], T],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
        wait_timeout: float = 600.0,
        lease_ttl: float = 10.0,
    ) -> T:
        """Return the cached value of ``key``, computing it with ``fn()`` on a miss;
        concurrent callers in this process wait for the one that computes.

        ``lease_ttl`` is accepted for signature parity with `CacheCluster` (a local
        leader cannot die without its waiters).

        Raises:
            Timeout: waited ``wait_timeout`` seconds for the caller computing it.
            Exception: whatever ``fn`` raised (the leader's, for waiters).
        """
        get = self.get  # type: ignore[attr-defined]
        value = get(key, MISS, layer=layer)
        if value is not MISS:
            return value  # type: ignore[no-any-return]
        fkey = self._flight_key(key, layer)
        call, leader = _join(fkey)
        if not leader:
            if not call.done.wait(wait_timeout):
                raise Timeout(f"waited {wait_timeout}s for the caller computing {key!r}")
            value = _outcome(call, get(key, MISS, layer=layer))
            if value is MISS:
                return self.get_or_compute(
                    key, fn, ttl=ttl, tags=tags, layer=layer, wait_timeout=wait_timeout
                )
            return value  # type: ignore[no-any-return]
        try:
            value = get(key, MISS, layer=layer)  # again inside the flight
            if value is MISS:
                value = fn()
                self._store_computed(key, value, ttl, tags, layer)
            call.value = value
            return value  # type: ignore[no-any-return]
        except BaseException as exc:
            _fail(call, exc)
            raise
        finally:
            _end(fkey, call)

    async def aget_or_compute(
        self,
        key: Any,
        fn: Callable[[], T | Awaitable[T]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
        wait_timeout: float = 600.0,
        lease_ttl: float = 10.0,
    ) -> T:
        """Async `get_or_compute`; ``fn`` may return a value or an awaitable."""
        aget = self.aget  # type: ignore[attr-defined]
        value = await aget(key, MISS, layer=layer)
        if value is not MISS:
            return value  # type: ignore[no-any-return]
        fkey = self._flight_key(key, layer)
        call, leader = _join(fkey)
        if not leader:
            if not await call.wait_async(wait_timeout):
                raise Timeout(f"waited {wait_timeout}s for the caller computing {key!r}")
            value = _outcome(call, await aget(key, MISS, layer=layer))
            if value is MISS:
                return await self.aget_or_compute(
                    key, fn, ttl=ttl, tags=tags, layer=layer, wait_timeout=wait_timeout
                )
            return value  # type: ignore[no-any-return]
        try:
            value = await aget(key, MISS, layer=layer)
            if value is MISS:
                value = fn()
                if inspect.isawaitable(value):
                    value = await value
                await self._astore_computed(key, value, ttl, tags, layer)
            call.value = value
            return value  # type: ignore[no-any-return]
        except BaseException as exc:
            _fail(call, exc)
            raise
        finally:
            _end(fkey, call)
