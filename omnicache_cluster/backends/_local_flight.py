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

    # -- batches ------------------------------------------------------------------------

    def _many_plan(
        self, keys: list[Any], found: list[Any], layer: str
    ) -> tuple[dict[str, int], list[tuple[int, tuple[int, str], _Call]], list[tuple[int, _Call]]]:
        """Join the flight of every distinct missing key without waiting: return
        ``(first position by stored key, flights led, flights of other callers)``."""
        first: dict[str, int] = {}
        led: list[tuple[int, tuple[int, str], _Call]] = []
        others: list[tuple[int, _Call]] = []
        for i, (key, value) in enumerate(zip(keys, found, strict=True)):
            if value is not MISS:
                continue
            fkey = self._flight_key(key, layer)
            if fkey[1] in first:
                continue
            first[fkey[1]] = i
            call, leader = _join(fkey)
            (led.append((i, fkey, call)) if leader else others.append((i, call)))
        return first, led, others

    def get_or_compute_many(
        self,
        keys: Iterable[Any],
        fn_many: Callable[[list[Any]], Any],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
        wait_timeout: float = 600.0,
        lease_ttl: float = 10.0,
    ) -> list[Any]:
        """Return the values of ``keys`` in order; ``fn_many(missing keys)`` computes the
        ones nobody in this process is computing (one call), then the others are waited
        for (see `CacheCluster.get_or_compute_many`)."""
        keys = list(keys)
        found = self.get_many(keys, MISS, layer=layer)  # type: ignore[attr-defined]
        first, led, others = self._many_plan(keys, found, layer)
        if led:
            try:
                values = _values(fn_many([keys[i] for i, _, _ in led]), len(led))
                for (i, _fkey, call), value in zip(led, values, strict=True):
                    found[i] = call.value = value
                    self._store_computed(keys[i], value, ttl, tags, layer)
            except BaseException as exc:
                for _i, _fkey, call in led:
                    _fail(call, exc)
                raise
            finally:
                for _i, fkey, call in led:
                    _end(fkey, call)
        for i, call in others:
            if not call.done.wait(wait_timeout):
                raise Timeout(f"waited {wait_timeout}s for the caller computing {keys[i]!r}")
            found[i] = _outcome(call, self.get(keys[i], MISS, layer=layer))  # type: ignore[attr-defined]
        late = [i for i, call in others if found[i] is MISS]  # its leader was cancelled
        if late:
            values = _values(fn_many([keys[i] for i in late]), len(late))
            for i, value in zip(late, values, strict=True):
                found[i] = value
                self._store_computed(keys[i], value, ttl, tags, layer)
        return _spread(keys, found, first, self, layer)

    async def aget_or_compute_many(
        self,
        keys: Iterable[Any],
        fn_many: Callable[[list[Any]], Any],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
        wait_timeout: float = 600.0,
        lease_ttl: float = 10.0,
    ) -> list[Any]:
        """Async `get_or_compute_many`; ``fn_many`` may return an awaitable."""
        keys = list(keys)
        found = await self.aget_many(keys, MISS, layer=layer)  # type: ignore[attr-defined]
        first, led, others = self._many_plan(keys, found, layer)

        async def compute(positions: list[int]) -> list[Any]:
            result = fn_many([keys[i] for i in positions])
            if inspect.isawaitable(result):
                result = await result
            return _values(result, len(positions))

        if led:
            try:
                values = await compute([i for i, _, _ in led])
                for (i, _fkey, call), value in zip(led, values, strict=True):
                    found[i] = call.value = value
                    await self._astore_computed(keys[i], value, ttl, tags, layer)
            except BaseException as exc:
                for _i, _fkey, call in led:
                    _fail(call, exc)
                raise
            finally:
                for _i, fkey, call in led:
                    _end(fkey, call)
        for i, call in others:
            if not await call.wait_async(wait_timeout):
                raise Timeout(f"waited {wait_timeout}s for the caller computing {keys[i]!r}")
            found[i] = _outcome(call, await self.aget(keys[i], MISS, layer=layer))  # type: ignore[attr-defined]
        late = [i for i, call in others if found[i] is MISS]
        if late:
            for i, value in zip(late, await compute(late), strict=True):
                found[i] = value
                await self._astore_computed(keys[i], value, ttl, tags, layer)
        return _spread(keys, found, first, self, layer)


def _values(result: Any, n: int) -> list[Any]:
    values = list(result)
    if len(values) != n:
        raise ValueError(f"the batch function returned {len(values)} values for {n} keys")
    return values


def _spread(
    keys: list[Any], found: list[Any], first: dict[str, int], backend: Any, layer: str
) -> list[Any]:
    """Give a key that appears twice the value of its first position."""
    for i, value in enumerate(found):
        if value is MISS:
            found[i] = found[first[backend.key(keys[i], layer)]]
    return found
