"""`TieredBackend`: a fast local L1 in front of a durable, shared L2.

Reads try L1 first and fill it from L2 on an L1 miss; writes go to L2 first (the
durable copy), then to L1. An L1 copy lives at most ``l1_ttl`` seconds (and never
longer than the entry itself), which bounds how stale a process's L1 can be after
another process changed or invalidated the entry in L2.

Degraded contract: when L2 fails (Redis down, disk error) the tiered store fails
open. Reads are served by L1 alone (an L1 miss is a miss), writes land in L1 only,
and each fault is counted (``l2_errors`` in `stats`) and logged at most once per
interval. L2 is tried again on the next call, so writes reach it again as soon as it
is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from omnicache_cluster.backends._local_flight import LocalSingleFlight
from omnicache_cluster.backends._scoped import ScopedBackend
from omnicache_cluster.backends.base import AsyncByteStore, ByteStore, Record
from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.core.faults import FaultLog
from omnicache_cluster.errors import L2Unavailable

__all__ = ["AsyncTieredStore", "TieredBackend", "TieredStore"]

_log = logging.getLogger(__name__)


class _Tiers:
    """What the sync and async tiered stores share: the L1 TTL cap and fault counting."""

    def __init__(self, l1_ttl: float | None, clock: Callable[[], float]) -> None:
        if l1_ttl is not None and (isinstance(l1_ttl, bool) or not l1_ttl > 0):
            raise ValueError(f"l1_ttl must be a positive number of seconds or None, got {l1_ttl!r}")
        self._l1_ttl = l1_ttl
        self._clock = clock
        self.faults = FaultLog("tiered store L2", _log)

    def l1_copy(self, record: Record) -> Record:
        """Return ``record`` with its expiry capped at ``l1_ttl`` from now."""
        if self._l1_ttl is None:
            return record
        cap = self._clock() + self._l1_ttl
        if record.expires_at is not None and record.expires_at <= cap:
            return record
        return Record(record.value, cap, record.tags, record.tenant)

    @staticmethod
    def misses(found: Sequence[Record | None]) -> list[int]:
        return [i for i, r in enumerate(found) if r is None]

    def merge(
        self,
        keys: Sequence[str],
        found: list[Record | None],
        todo: Sequence[int],
        fetched: Sequence[Record | None],
    ) -> list[tuple[str, Record]]:
        """Put L2's records into ``found``; return the L1 copies to store."""
        fill = []
        for i, record in zip(todo, fetched, strict=True):
            found[i] = record
            if record is not None:
                fill.append((keys[i], self.l1_copy(record)))
        return fill

    def merged_stats(self, l1: dict[str, Any], l2: dict[str, Any]) -> dict[str, Any]:
        out = dict(l1)
        out["l2"] = l2
        out["l2_errors"] = self.faults.count
        return out


class TieredStore(_Tiers):
    """A `ByteStore` of two tiers (see the module docstring).

    Args:
        l1: the fast, local store (a `MemoryStore`).
        l2: the durable store (a `RedisStore` or `DiskStore`).
        l1_ttl: the longest an L1 copy lives, in seconds (``None``: as long as the entry).
        clock: wall-clock seconds.
    """

    def __init__(
        self,
        l1: ByteStore,
        l2: ByteStore,
        l1_ttl: float | None = 300.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(l1_ttl, clock)
        self.l1 = l1
        self.l2 = l2

    def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Return each key's record from L1, else from L2 (filling L1)."""
        found = self.l1.get_many(keys)
        todo = self.misses(found)
        if not todo:
            return found
        try:
            fetched = self.l2.get_many([keys[i] for i in todo])
        except L2Unavailable as exc:
            self.faults.record("read", exc)
            return found
        self.l1.set_many(self.merge(keys, found, todo, fetched))
        return found

    def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Store in L2 (failing open), then in L1."""
        try:
            self.l2.set_many(items)
        except L2Unavailable as exc:
            self.faults.record("write", exc)
        self.l1.set_many([(k, self.l1_copy(r)) for k, r in items])

    def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Remove keys from both tiers; return which were in either."""
        in_l1 = self.l1.delete_many(keys)
        try:
            in_l2 = self.l2.delete_many(keys)
        except L2Unavailable as exc:
            self.faults.record("delete", exc)
            return in_l1
        return [a or b for a, b in zip(in_l1, in_l2, strict=True)]

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Return, per key, whether either tier has it."""
        present = self.l1.exists_many(keys)
        todo = [i for i, p in enumerate(present) if not p]
        if todo:
            try:
                more = self.l2.exists_many([keys[i] for i in todo])
            except L2Unavailable as exc:
                self.faults.record("read", exc)
                return present
            for i, p in zip(todo, more, strict=True):
                present[i] = p
        return present

    def tagged(self, tag: str) -> list[str]:
        """Return the keys carrying ``tag`` in either tier."""
        keys = dict.fromkeys(self.l1.tagged(tag))
        try:
            keys.update(dict.fromkeys(self.l2.tagged(tag)))
        except L2Unavailable as exc:
            self.faults.record("read", exc)
        return list(keys)

    def keys(self, prefix: str = "") -> list[str]:
        """Return the keys starting with ``prefix`` in either tier."""
        keys = dict.fromkeys(self.l1.keys(prefix))
        try:
            keys.update(dict.fromkeys(self.l2.keys(prefix)))
        except L2Unavailable as exc:
            self.faults.record("read", exc)
        return list(keys)

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """Return L1's levels, L2's under ``"l2"``, and ``l2_errors``."""
        return self.merged_stats(self.l1.stats(tenant), self.l2.stats(tenant))

    def close(self) -> None:
        """Close both tiers."""
        self.l1.close()
        self.l2.close()


class AsyncTieredStore(_Tiers):
    """The async twin of `TieredStore` (same arguments, async stores)."""

    def __init__(
        self,
        l1: AsyncByteStore,
        l2: AsyncByteStore,
        l1_ttl: float | None = 300.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(l1_ttl, clock)
        self.l1 = l1
        self.l2 = l2

    async def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Async `TieredStore.get_many`."""
        found = await self.l1.get_many(keys)
        todo = self.misses(found)
        if not todo:
            return found
        try:
            fetched = await self.l2.get_many([keys[i] for i in todo])
        except L2Unavailable as exc:
            self.faults.record("read", exc)
            return found
        await self.l1.set_many(self.merge(keys, found, todo, fetched))
        return found

    async def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Async `TieredStore.set_many`."""
        try:
            await self.l2.set_many(items)
        except L2Unavailable as exc:
            self.faults.record("write", exc)
        await self.l1.set_many([(k, self.l1_copy(r)) for k, r in items])

    async def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Async `TieredStore.delete_many`."""
        in_l1 = await self.l1.delete_many(keys)
        try:
            in_l2 = await self.l2.delete_many(keys)
        except L2Unavailable as exc:
            self.faults.record("delete", exc)
            return in_l1
        return [a or b for a, b in zip(in_l1, in_l2, strict=True)]

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Async `TieredStore.exists_many`."""
        present = await self.l1.exists_many(keys)
        todo = [i for i, p in enumerate(present) if not p]
        if todo:
            try:
                more = await self.l2.exists_many([keys[i] for i in todo])
            except L2Unavailable as exc:
                self.faults.record("read", exc)
                return present
            for i, p in zip(todo, more, strict=True):
                present[i] = p
        return present

    async def tagged(self, tag: str) -> list[str]:
        """Async `TieredStore.tagged`."""
        keys = dict.fromkeys(await self.l1.tagged(tag))
        try:
            keys.update(dict.fromkeys(await self.l2.tagged(tag)))
        except L2Unavailable as exc:
            self.faults.record("read", exc)
        return list(keys)

    async def keys(self, prefix: str = "") -> list[str]:
        """Async `TieredStore.keys`."""
        keys = dict.fromkeys(await self.l1.keys(prefix))
        try:
            keys.update(dict.fromkeys(await self.l2.keys(prefix)))
        except L2Unavailable as exc:
            self.faults.record("read", exc)
        return list(keys)

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """`TieredStore.stats`."""
        return self.merged_stats(self.l1.stats(tenant), self.l2.stats(tenant))

    async def close(self) -> None:
        """Async `TieredStore.close`."""
        await self.l1.close()
        await self.l2.close()


class TieredBackend(LocalSingleFlight, ScopedBackend):
    """An L1 backend in front of an L2 backend (see the module docstring).

    Args:
        l1: the local backend whose store is L1 (an `InMemoryBackend`).
        l2: the durable backend whose store is L2 (a `RedisBackend` or `DiskBackend`).
        l1_ttl: the longest an L1 copy lives, in seconds (``None``: as long as the entry).
        namespace: the key namespace.
        serializer: the value serializer (msgpack + lz4 by default).
        max_value_bytes: the largest encoded value accepted.

    Example:
        >>> from omnicache_cluster.backends.memory import InMemoryBackend
        >>> t = TieredBackend(InMemoryBackend(), InMemoryBackend(), l1_ttl=60)
        >>> t.set("q", "a"); t.get("q")
        'a'
    """

    def __init__(
        self,
        l1: ScopedBackend,
        l2: ScopedBackend,
        l1_ttl: float | None = 300.0,
        *,
        namespace: str = "omnicache",
        serializer: Serializer | None = None,
        max_value_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        for name, b in (("l1", l1), ("l2", l2)):
            if not isinstance(b, ScopedBackend):
                raise TypeError(
                    f"{name} must be an InMemoryBackend, DiskBackend, RedisBackend or "
                    f"TieredBackend, got {type(b).__qualname__}"
                )
        super().__init__(
            TieredStore(l1.store, l2.store, l1_ttl),
            AsyncTieredStore(l1.astore, l2.astore, l1_ttl),
            namespace=namespace,
            serializer=serializer,
            max_value_bytes=max_value_bytes,
        )
