"""`ShardActor`: owns the keys of its ring slots, as opaque bytes, bounded by bytes.

The class is a plain async class; `omnicache_cluster.actors.remote` applies
``ray.remote``. It never decodes a value. Every method is a batch, and each reply
carries the shard's ring epoch plus the positions of the keys whose slots the shard
does not own under that epoch (*moved*): a client with an old ring refreshes it from
the coordinator and retries those keys at their new owner.

With an L2 (``ShardConfig.l2``: Redis or disk) the shard writes through (or behind)
to it and reads L1 misses through from it, after the ownership check; see
`omnicache_cluster.actors._l2` for the write modes and the fail-open contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnicache_cluster.actors._l2 import ShardL2
from omnicache_cluster.actors._leases import ShardLeases
from omnicache_cluster.actors._migration import ShardMigration
from omnicache_cluster.actors._wire_server import WireServer
from omnicache_cluster.backends.base import Record
from omnicache_cluster.config import L2Config
from omnicache_cluster.core.nearcache import ChangeLog
from omnicache_cluster.core.quota import TenantQuota
from omnicache_cluster.core.ring import DEFAULT_SLOTS, Ring, key_hash
from omnicache_cluster.core.store import LRUStore
from omnicache_cluster.errors import ValueTooLarge
from omnicache_cluster.observability._samples import shard_samples
from omnicache_cluster.observability.metrics import ActorMetricsConfig, MetricsRecorder
from omnicache_cluster.observability.ray_metrics import start_exporter

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
    #: The durable tier (Redis or disk) written through / behind and read through;
    #: ``None``: memory only, entries die with the shard.
    l2: L2Config | None = None
    #: Export to Ray's metrics (``None``: off); see `omnicache_cluster.observability`.
    metrics: ActorMetricsConfig | None = field(default_factory=ActorMetricsConfig)


def _tenant_of(key: str) -> str:
    # Keys are ``namespace:tenant:layer:digest``; the client validated the parts.
    first = key.find(":")
    second = key.find(":", first + 1)
    return key[first + 1 : second] if first >= 0 and second > first else "default"


def _layer_of(key: str) -> str:
    # The third part of ``namespace:tenant:layer:digest``.
    parts = key.split(":", 3)
    return parts[2] if len(parts) == 4 else "default"


def _layer_dicts(counts: dict[str, list[int]]) -> dict[str, dict[str, int]]:
    names = ("hits", "misses", "sets")
    return {layer: dict(zip(names, c, strict=True)) for layer, c in counts.items()}


class ShardActor(ShardLeases, ShardMigration, WireServer):
    """One shard of the cache: an `LRUStore` plus slot ownership under a ring epoch,
    the single-flight leases of its keys (`ShardLeases`) and live slot migration
    (`ShardMigration`); its data methods are also served on a direct TCP port
    (`WireServer`)."""

    def __init__(self, config: ShardConfig, epoch: int = 0, members: Sequence[str] = ()) -> None:
        self._config = config
        # Every change is numbered per slot, so other processes' near-caches learn it.
        self._changes = ChangeLog(incarnation=uuid.uuid4().hex, start=time.time_ns() // 1000)
        self._store = LRUStore(config.max_bytes, config.max_entries, on_change=self._changed)
        self._requests = 0
        # A restarted shard runs this again with the same config: it reconnects to L2
        # and fills L1 lazily, by reading through.
        self._metrics = MetricsRecorder.for_config(config.metrics, config.namespace, config.name)
        self._l2 = (
            None
            if config.l2 is None
            else ShardL2(config.l2, config.name, store=self._metrics.timed(config.l2.open_async()))
        )
        self._num_slots = config.num_slots
        self._epoch = 0
        self._members: tuple[str, ...] = ()
        self._owned = np.zeros(config.num_slots, dtype=bool)
        self._tenant_counts: dict[str, list[int]] = {}
        self._layer_counts: dict[str, dict[str, list[int]]] = {}  # tenant -> layer -> counts
        self._count_refs: dict[str, tuple[list[int], list[int]]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._ring_lock: asyncio.Lock | None = None
        self._quota_gen = 0
        self._quotas: dict[str, TenantQuota] = {}
        self._init_leases()
        self._init_migration()
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
        self._migration_on_ring()  # a prepared migration starts moving slots now
        if self._l2 is not None:  # lost slots: their new owner reads them through from L2
            self._store.clear(lambda key, _entry: not self._owns(key) and not self._keeps(key))
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

    def _changed(self, key: str) -> None:
        self._changes.record(key_hash(key) % self._num_slots)

    async def changes_since(self, seq: int) -> tuple[str, int, list[tuple[int, int]] | None]:
        """Return ``(incarnation, seq, [(slot, its last change)] after seq)``; ``None``
        instead of the list on a gap."""
        return self._changes.since(int(seq))

    async def _ready(self) -> None:
        self._requests += 1
        if self._hold is not None:  # slots are about to move in: wait for the flip
            await self._wait_hold()
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())
            self._metrics_task = start_exporter(self._metrics, self._stats_now, shard_samples)
            if self._l2 is not None:
                self._l2.start()
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

    def _owns(self, key: str) -> bool:
        return bool(self._owned[key_hash(key) % self._num_slots])

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
        # The counters of a key's tenant and layer, found by its ``ns:tenant:layer``
        # prefix (parsed once per prefix, not per call).
        prefix = key[: key.rfind(":")]
        pair = self._count_refs.get(prefix)
        if pair is None:
            tenant = _tenant_of(key)
            by_tenant = self._tenant_counts.setdefault(tenant, [0, 0, 0])
            by_layer = self._layer_counts.setdefault(tenant, {})
            pair = (by_tenant, by_layer.setdefault(_layer_of(key), [0, 0, 0]))
            if len(self._count_refs) < 10_000:
                self._count_refs[prefix] = pair
        pair[0][field] += 1
        pair[1][field] += 1

    # -- data -----------------------------------------------------------------------

    async def get(self, key: str) -> bytes | int | None:
        """Return the value of one key, ``None`` on a miss, or the epoch if moved."""
        await self._ready()
        if not self._owned[key_hash(key) % self._num_slots]:
            return self._epoch
        value = self._store.get(key)
        if value is None and (self._l2 is not None or self._importing):
            value = (await self._read_through([key]))[0]
        self._count(key, 0 if value is not None else 1)
        return value

    async def _lookup(self, key: str) -> bytes | None:
        """Return the value of an owned key from L1, else from L2 (no counting)."""
        value = self._store.get(key)
        if value is None and (self._l2 is not None or self._importing):
            value = (await self._read_through([key]))[0]
        return value

    async def _read_through(self, keys: Sequence[str]) -> list[bytes | None]:
        """Read L1 misses: keys of slots still moving in from their old owner first
        (`omnicache_cluster.actors._migration`), the others from L2."""
        if self._importing:
            return await self._read_importing(keys, self._l2_read_through)
        return await self._l2_read_through(keys)

    async def _l2_read_through(self, keys: Sequence[str]) -> list[bytes | None]:
        """Read L1 misses from L2 and fill L1 with what is found (unless a write of
        the key raced the read: then L1 already holds something newer)."""
        if self._l2 is None:
            return [None] * len(keys)
        records, fill = await self._l2.read(keys)
        out: list[bytes | None] = []
        for key, record, ok in zip(keys, records, fill, strict=True):
            if record is not None and ok:
                # Too large for this shard's L1: served, not kept.
                with contextlib.suppress(ValueTooLarge):
                    self._store.set(
                        key,
                        record.value,
                        expires_at=record.expires_at,
                        tags=record.tags,
                        tenant=record.tenant,
                    )
            out.append(None if record is None else record.value)
        return out

    async def get_many(self, keys: Sequence[str]) -> tuple[int, list[bytes | None], list[int]]:
        """Return ``(epoch, values, moved)``; a value is ``None`` on a miss or if moved."""
        await self._ready()
        moved = self._moved(keys)
        skip = set(moved)
        store = self._store
        values: list[bytes | None] = [
            None if i in skip else store.get(k) for i, k in enumerate(keys)
        ]
        if self._l2 is not None or self._importing:
            todo = [i for i, v in enumerate(values) if v is None and i not in skip]
            if todo:
                found = await self._read_through([keys[i] for i in todo])
                for i, value in zip(todo, found, strict=True):
                    values[i] = value
        for i, key in enumerate(keys):
            if i not in skip:
                self._count(key, 0 if values[i] is not None else 1)
        return self._epoch, values, moved

    async def set_many(
        self, items: Sequence[SetItem]
    ) -> tuple[int, list[int], list[tuple[int, int, int]], int]:
        """Store each ``(key, value, ttl, tags)``; return ``(epoch, moved, errors, seq)``.

        ``errors`` lists ``(position, size, limit)`` for items the store refused (an
        entry larger than the shard); the other items are stored.
        """
        await self._ready()
        moved = self._moved([item[0] for item in items])
        skip = set(moved)
        self._touch_importing(item[0] for item in items)  # newer than what moves in
        errors: list[tuple[int, int, int]] = []
        durable: list[tuple[str, Record]] = []
        now = time.time()
        for i, (key, value, ttl, tags) in enumerate(items):
            if i in skip:
                continue
            expires_at = None if ttl is None else now + ttl
            tenant = _tenant_of(key)
            try:
                self._store.set(key, value, expires_at=expires_at, tags=tags, tenant=tenant)
            except ValueTooLarge as exc:
                errors.append((i, exc.size, exc.limit))
                continue
            self._count(key, 2)
            if self._l2 is not None:
                durable.append((key, Record(value, expires_at, tuple(tags), tenant)))
        # The change number after these writes, before any await lets others in: the
        # writer's near-cache keeps its values until a later change of their slots.
        seq = self._changes.seq
        if durable and self._l2 is not None:  # write-through: acknowledged once in L2
            await self._l2.write(durable)
        return self._epoch, moved, errors, seq

    async def delete_many(self, keys: Sequence[str]) -> tuple[int, list[bool], list[int]]:
        """Delete keys; return ``(epoch, existed, moved)``."""
        await self._ready()
        moved = self._moved(keys)
        skip = set(moved)
        existed = [False if i in skip else self._store.delete(k) for i, k in enumerate(keys)]
        mine = [i for i in range(len(keys)) if i not in skip]
        await self._delete_importing(keys, mine, existed)
        if self._l2 is not None and mine:
            in_l2 = await self._l2.delete([keys[i] for i in mine])
            for i, there in zip(mine, in_l2, strict=True):
                existed[i] = existed[i] or there
        return self._epoch, existed, moved

    async def exists_many(self, keys: Sequence[str]) -> tuple[int, list[bool], list[int]]:
        """Return ``(epoch, present, moved)`` without touching recency."""
        await self._ready()
        moved = self._moved(keys)
        skip = set(moved)
        present = [False if i in skip else k in self._store for i, k in enumerate(keys)]
        await self._exists_importing(keys, present, skip)
        todo = [i for i, p in enumerate(present) if not p and i not in skip]
        if self._l2 is not None and todo:
            in_l2 = await self._l2.exists([keys[i] for i in todo])
            for i, there in zip(todo, in_l2, strict=True):
                present[i] = there
        return self._epoch, present, moved

    async def invalidate_tags(self, tags: Sequence[str]) -> int:
        """Remove every entry carrying any of ``tags``; return how many were removed."""
        await self._ready()
        await self._forward_invalidation(tags, None)  # to the targets of slots moving out
        if self._l2 is None:
            return sum(len(self._store.invalidate_tag(tag)) for tag in tags)
        removed = {key for tag in tags for key in self._store.invalidate_tag(tag)}
        # In L2 each shard removes the keys it owns, so the counts add up.
        return len(removed | await self._l2.invalidate(tags, self._owns))

    async def clear(self, prefix: str | None = None) -> int:
        """Remove every entry, or those whose key starts with ``prefix``."""
        await self._ready()
        await self._forward_invalidation(None, prefix)  # to the targets of slots moving out
        if self._l2 is not None:
            keys = list(self._store.keys())
            local = {k for k in keys if prefix is None or k.startswith(prefix)}
            self._store.clear(lambda key, _entry: key in local)
            return len(local | await self._l2.clear(prefix, self._owns))
        if prefix is None:
            return self._store.clear()
        return self._store.clear(lambda key, _entry: key.startswith(prefix))

    async def flush_l2(self, timeout_s: float = 10.0) -> int:
        """Write every dirty L2 entry now (a graceful shutdown calls this); return how
        many are still dirty (0: all are in L2, or there is no L2)."""
        return 0 if self._l2 is None else await self._l2.flush(timeout_s)

    async def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """Return this shard's counters and levels (only ``tenant``'s when given)."""
        await self._ready()
        return self._stats_now(tenant)

    def _stats_now(self, tenant: str | None = None) -> dict[str, Any]:
        """`stats` without counting a request (what the metrics exporter reads)."""
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
                "layers": _layer_dicts(self._layer_counts.get(tenant, {})),
                **self._lease_stats(tenant),
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
            "layers": {t: _layer_dicts(c) for t, c in self._layer_counts.items()},
            "leases": self._leases.snapshot(),
            "lease_tenants": self._lease_usage(),
            "requests": self._requests,
            "direct_requests": self.wire_requests,
            "change_seq": self._changes.seq,
            "uptime_s": time.time() - self._started,
            **(self._l2.stats() if self._l2 is not None else {}),
            **self._migration_stats(),
        }

    async def describe(self, key: str) -> dict[str, Any] | int | None:
        """Return one entry's ``value``, ``bytes``, ``expires_at`` and ``tags`` without
        counting a lookup or changing recency; ``None`` if absent, the epoch if moved."""
        await self._ready()
        if not self._owned[key_hash(key) % self._num_slots]:
            return self._epoch
        entry = self._store.get_entry(key)
        if entry is None:
            return None
        return {
            "value": entry.value,
            "bytes": entry.size,
            "expires_at": entry.expires_at,
            "tags": list(entry.tags),
            "tenant": entry.tenant,
        }

    async def ping(self) -> str:
        """Return the shard's name (a liveness probe)."""
        return self._config.name

    async def config(self) -> ShardConfig:
        """Return the configuration this shard was created with."""
        return self._config
