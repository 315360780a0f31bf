"""`ShardActor`: owns the keys of its ring slots, as opaque bytes, bounded by bytes.

The class is a plain async class; `omnicache_cluster.actors.remote` applies
``ray.remote``. It never decodes a value. Every method is a batch, and each reply
carries the shard's ring epoch plus the positions of the keys whose slots the shard
does not own under that epoch (*moved*): a client with an old ring refreshes it from
the coordinator and retries those keys at their new owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from omnicache_cluster.core.quota import TenantQuota
from omnicache_cluster.core.ring import DEFAULT_SLOTS, Ring, key_hash
from omnicache_cluster.core.store import LRUStore
from omnicache_cluster.errors import ValueTooLarge

__all__ = ["SetItem", "ShardActor", "ShardConfig"]

_log = logging.getLogger(__name__)

# One write: (key, encoded value, ttl seconds or None, tags)
SetItem = tuple[str, bytes, float | None, tuple[str, ...]]


@dataclass(frozen=True)
class ShardConfig:
    """What a shard needs to start; sent once, at creation (and again on a restart)."""

    name: str
    namespace: str
    coordinator: str
    max_bytes: int
    max_entries: int | None = None
    num_slots: int = DEFAULT_SLOTS
    sweep_interval_s: float = 1.0


def _tenant_of(key: str) -> str:
    # Keys are ``namespace:tenant:layer:digest``; the client validated the parts.
    first = key.find(":")
    second = key.find(":", first + 1)
    return key[first + 1 : second] if first >= 0 and second > first else "default"


class ShardActor:
    """One shard of the cache: an `LRUStore` plus slot ownership under a ring epoch."""

    def __init__(self, config: ShardConfig, epoch: int = 0, members: Sequence[str] = ()) -> None:
        self._config = config
        self._store = LRUStore(config.max_bytes, config.max_entries)
        self._num_slots = config.num_slots
        self._epoch = 0
        self._members: tuple[str, ...] = ()
        self._owned = np.zeros(config.num_slots, dtype=bool)
        self._tenant_counts: dict[str, list[int]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._ring_lock: asyncio.Lock | None = None
        self._quota_gen = 0
        self._quotas: dict[str, TenantQuota] = {}
        self._started = time.time()
        if epoch and members:
            self._apply_ring(epoch, tuple(members))
        # After a restart by Ray the constructor runs again with its first arguments;
        # the ring may have moved on since, so ask the coordinator before serving.
        self._stale = self._was_restarted()

    @staticmethod
    def _was_restarted() -> bool:
        try:
            import ray

            if not ray.is_initialized():  # a plain object in a unit test
                return False
            with warnings.catch_warnings():  # the property reads a deprecated attribute
                warnings.simplefilter("ignore")
                return bool(ray.get_runtime_context().was_current_actor_reconstructed)
        except Exception:  # not inside Ray (unit tests of the plain class)
            return False

    # -- ring -----------------------------------------------------------------------

    def _apply_ring(self, epoch: int, members: tuple[str, ...]) -> None:
        if epoch <= self._epoch:
            return
        ring = Ring(members, epoch, self._num_slots)
        self._owned = ring.owned_slots(self._config.name)
        self._epoch = epoch
        self._members = members

    async def set_ring(self, epoch: int, members: Sequence[str]) -> int:
        """Adopt ring ``epoch`` if it is newer than ours; return the epoch now held."""
        self._apply_ring(int(epoch), tuple(members))
        self._stale = False
        return self._epoch

    async def ring_view(self) -> tuple[int, tuple[str, ...], int, dict[str, TenantQuota]]:
        """Return the (epoch, members, quota generation, quotas) this shard serves under."""
        await self._ready()
        return self._epoch, self._members, self._quota_gen, dict(self._quotas)

    async def set_tenant_quotas(
        self, generation: int, quotas: dict[str, TenantQuota], num_shards: int
    ) -> int:
        """Adopt tenant quotas ``generation`` if newer: each tenant's byte share here is
        ``max_bytes / num_shards``. Returns the generation now held."""
        if generation < self._quota_gen:
            return self._quota_gen
        for tenant in set(self._quotas) - set(quotas):
            self._store.set_tenant_limit(tenant, None)
        for tenant, quota in quotas.items():
            share = None if quota.max_bytes is None else -(-quota.max_bytes // max(num_shards, 1))
            self._store.set_tenant_limit(tenant, share)
        self._quotas = dict(quotas)
        self._quota_gen = generation
        return generation

    async def _ready(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())
        if not self._stale:
            return
        if self._ring_lock is None:
            self._ring_lock = asyncio.Lock()
        async with self._ring_lock:
            if not self._stale:
                return
            import ray

            coord = ray.get_actor(self._config.coordinator, namespace=self._config.namespace)
            epoch, members, generation, quotas = await coord.shard_view.remote()
            self._apply_ring(epoch, tuple(members))
            await self.set_tenant_quotas(generation, quotas, len(members))
            self._stale = False

    def _moved(self, keys: Sequence[str]) -> list[int]:
        owned, n = self._owned, self._num_slots
        return [i for i, k in enumerate(keys) if not owned[key_hash(k) % n]]

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.sweep_interval_s)
            try:
                self._store.expire(limit=10_000)
            except Exception:  # never let the sweeper die silently
                _log.exception("expiry sweep failed on shard %s", self._config.name)

    def _count(self, key: str, field: int) -> None:
        counts = self._tenant_counts.get(tenant := _tenant_of(key))
        if counts is None:
            counts = self._tenant_counts[tenant] = [0, 0, 0]
        counts[field] += 1

    # -- data -----------------------------------------------------------------------

    async def get(self, key: str) -> bytes | int | None:
        """Return the value of one key, ``None`` on a miss, or the epoch if moved."""
        await self._ready()
        if not self._owned[key_hash(key) % self._num_slots]:
            return self._epoch
        value = self._store.get(key)
        self._count(key, 0 if value is not None else 1)
        return value

    async def get_many(self, keys: Sequence[str]) -> tuple[int, list[bytes | None], list[int]]:
        """Return ``(epoch, values, moved)``; a value is ``None`` on a miss or if moved."""
        await self._ready()
        moved = self._moved(keys)
        skip = set(moved)
        store = self._store
        values: list[bytes | None] = []
        for i, key in enumerate(keys):
            if i in skip:
                values.append(None)
                continue
            value = store.get(key)
            self._count(key, 0 if value is not None else 1)
            values.append(value)
        return self._epoch, values, moved

    async def set_many(
        self, items: Sequence[SetItem]
    ) -> tuple[int, list[int], list[tuple[int, int, int]]]:
        """Store each ``(key, value, ttl, tags)``; return ``(epoch, moved, errors)``.

        ``errors`` lists ``(position, size, limit)`` for items the store refused (an
        entry larger than the shard); the other items are stored.
        """
        await self._ready()
        moved = self._moved([item[0] for item in items])
        skip = set(moved)
        errors: list[tuple[int, int, int]] = []
        now = time.time()
        for i, (key, value, ttl, tags) in enumerate(items):
            if i in skip:
                continue
            try:
                self._store.set(
                    key,
                    value,
                    expires_at=None if ttl is None else now + ttl,
                    tags=tags,
                    tenant=_tenant_of(key),
                )
            except ValueTooLarge as exc:
                errors.append((i, exc.size, exc.limit))
                continue
            self._count(key, 2)
        return self._epoch, moved, errors

    async def delete_many(self, keys: Sequence[str]) -> tuple[int, list[bool], list[int]]:
        """Delete keys; return ``(epoch, existed, moved)``."""
        await self._ready()
        moved = self._moved(keys)
        skip = set(moved)
        existed = [False if i in skip else self._store.delete(k) for i, k in enumerate(keys)]
        return self._epoch, existed, moved

    async def exists_many(self, keys: Sequence[str]) -> tuple[int, list[bool], list[int]]:
        """Return ``(epoch, present, moved)`` without touching recency."""
        await self._ready()
        moved = self._moved(keys)
        skip = set(moved)
        present = [False if i in skip else k in self._store for i, k in enumerate(keys)]
        return self._epoch, present, moved

    async def invalidate_tags(self, tags: Sequence[str]) -> int:
        """Remove every entry carrying any of ``tags``; return how many were removed."""
        await self._ready()
        return sum(len(self._store.invalidate_tag(tag)) for tag in tags)

    async def clear(self, prefix: str | None = None) -> int:
        """Remove every entry, or those whose key starts with ``prefix``."""
        await self._ready()
        if prefix is None:
            return self._store.clear()
        return self._store.clear(lambda key, _entry: key.startswith(prefix))

    async def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """Return this shard's counters and levels (only ``tenant``'s when given)."""
        await self._ready()
        snap = self._store.snapshot()
        if tenant is not None:
            hits, misses, sets = self._tenant_counts.get(tenant, [0, 0, 0])
            return {
                "shard": self._config.name,
                "tenant": tenant,
                "entries": snap.tenant_entries.get(tenant, 0),
                "bytes": snap.tenant_bytes.get(tenant, 0),
                "evictions": snap.tenant_evictions.get(tenant, 0),
                "hits": hits,
                "misses": misses,
                "sets": sets,
            }
        return {
            "shard": self._config.name,
            "epoch": self._epoch,
            "owned_slots": int(self._owned.sum()),
            "entries": snap.entries,
            "bytes": snap.bytes,
            "max_bytes": self._store.max_bytes,
            "hits": snap.hits,
            "misses": snap.misses,
            "sets": snap.sets,
            "deletes": snap.deletes,
            "evictions": snap.evictions,
            "tenant_bytes": snap.tenant_bytes,
            "tenant_entries": snap.tenant_entries,
            "uptime_s": time.time() - self._started,
        }

    async def ping(self) -> str:
        """Return the shard's name (a liveness probe)."""
        return self._config.name

    async def config(self) -> ShardConfig:
        """Return the configuration this shard was created with."""
        return self._config
