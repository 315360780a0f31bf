"""An LRU store of opaque bytes, bounded by bytes (and optionally entries), with TTL,
a tag index and per-tenant byte accounting.

This is the storage engine inside every shard actor and inside `InMemoryBackend`. It
never decodes values. Expiry uses an injectable wall clock (``time.time`` by default):
expiry times are absolute, so they survive a trip through durable storage.

Every entry is charged ``len(key) + len(value) + sum(len(tag)) + ENTRY_OVERHEAD``
bytes, so the bound holds for many tiny entries too, not just for large values.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from omnicache_cluster.errors import ValueTooLarge

__all__ = ["ENTRY_OVERHEAD", "Entry", "LRUStore", "StoreStats"]

ENTRY_OVERHEAD = 96
Clock = Callable[[], float]


class Entry:
    """One stored value and what the store knows about it."""

    __slots__ = ("expires_at", "size", "tags", "tenant", "value")

    def __init__(
        self, value: bytes, expires_at: float | None, tags: tuple[str, ...], tenant: str, size: int
    ) -> None:
        self.value = value
        self.expires_at = expires_at
        self.tags = tags
        self.tenant = tenant
        self.size = size


@dataclass
class StoreStats:
    """Counters and levels of one store."""

    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    evictions: dict[str, int] = field(default_factory=lambda: {"lru": 0, "ttl": 0, "quota": 0})
    tenant_bytes: dict[str, int] = field(default_factory=dict)
    tenant_entries: dict[str, int] = field(default_factory=dict)
    tenant_evictions: dict[str, int] = field(default_factory=dict)


class LRUStore:
    """Bytes-bounded LRU map from ``str`` keys to ``bytes`` values.

    Args:
        max_bytes: the most bytes the store may charge to its entries.
        max_entries: an optional bound on the number of entries.
        clock: wall-clock seconds; injectable for tests.
        on_evict: called with ``(key, entry, reason)`` for every eviction, with
            reason one of ``"lru"``, ``"ttl"``, ``"quota"``.
        on_change: called with the key of every write and every removal (the
            change log that keeps other processes' near-caches honest).

    Raises:
        ValueError: a bound is not positive.
    """

    def __init__(
        self,
        max_bytes: int,
        max_entries: int | None = None,
        *,
        clock: Clock = time.time,
        on_evict: Callable[[str, Entry, str], None] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        if max_entries is not None and (not isinstance(max_entries, int) or max_entries <= 0):
            raise ValueError(f"max_entries must be a positive int or None, got {max_entries!r}")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._clock = clock
        self._on_evict = on_evict
        self._on_change = on_change
        self._data: OrderedDict[str, Entry] = OrderedDict()
        # Per-tenant recency, so a tenant over its quota evicts its own oldest entry
        # without scanning everybody else's.
        self._tenant_lru: dict[str, OrderedDict[str, None]] = {}
        self._tenant_bytes: dict[str, int] = {}
        self._tenant_limits: dict[str, int] = {}
        self._tags: dict[str, set[str]] = {}
        self._expiry: list[tuple[float, str]] = []
        self._bytes = 0
        self.stats = StoreStats()

    # -- reads --------------------------------------------------------------------

    def _live(self, key: str) -> Entry | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= self._clock():
            self._remove(key, entry, "ttl")
            return None
        return entry

    def get(self, key: str) -> bytes | None:
        """Return the value of ``key`` and mark it recently used; ``None`` on a miss."""
        entry = self._live(key)
        if entry is None:
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self._tenant_lru[entry.tenant].move_to_end(key)
        self.stats.hits += 1
        return entry.value

    def get_entry(self, key: str) -> Entry | None:
        """Return the live entry of ``key`` without changing recency or counters."""
        return self._live(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._live(key) is not None

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> Iterator[str]:
        """Iterate over stored keys, least recently used first (expired ones included)."""
        return iter(list(self._data))

    @property
    def bytes(self) -> int:
        """Bytes charged to live and not yet swept entries."""
        return self._bytes

    def tenant_bytes(self, tenant: str) -> int:
        """Bytes charged to ``tenant``."""
        return self._tenant_bytes.get(tenant, 0)

    # -- writes -------------------------------------------------------------------

    @staticmethod
    def charge(key: str, value: bytes, tags: Iterable[str] = ()) -> int:
        """Return the bytes an entry of this key, value and tags is charged."""
        return len(key) + len(value) + sum(len(t) for t in tags) + ENTRY_OVERHEAD

    def set(
        self,
        key: str,
        value: bytes,
        *,
        expires_at: float | None = None,
        tags: Iterable[str] = (),
        tenant: str = "default",
    ) -> None:
        """Store ``value`` under ``key``, evicting least recently used entries to fit.

        Args:
            key: the key.
            value: the encoded value.
            expires_at: absolute expiry on the store's clock, or ``None`` for never.
            tags: tags for `invalidate_tag`.
            tenant: the tenant charged for the bytes.

        Raises:
            ValueTooLarge: the entry alone is larger than the store (or the tenant's
                byte limit); nothing is changed.
        """
        tags = tuple(tags)
        size = self.charge(key, value, tags)
        limit = self._tenant_limits.get(tenant)
        if size > self.max_bytes or (limit is not None and size > limit):
            raise ValueTooLarge(size, min(self.max_bytes, limit or self.max_bytes))
        old = self._data.get(key)
        if old is not None:
            self._remove(key, old, None)
        entry = Entry(value, expires_at, tags, tenant, size)
        self._data[key] = entry
        self._tenant_lru.setdefault(tenant, OrderedDict())[key] = None
        self._tenant_bytes[tenant] = self._tenant_bytes.get(tenant, 0) + size
        self._bytes += size
        for tag in tags:
            self._tags.setdefault(tag, set()).add(key)
        if expires_at is not None:
            heapq.heappush(self._expiry, (expires_at, key))
            if len(self._expiry) > 2 * len(self._data) + 1024:
                self._compact_expiry()
        self.stats.sets += 1
        if self._on_change is not None:
            self._on_change(key)
        self._enforce(tenant, keep=key)

    def _enforce(self, tenant: str, keep: str) -> None:
        limit = self._tenant_limits.get(tenant)
        if limit is not None:
            lru = self._tenant_lru[tenant]
            while self._tenant_bytes.get(tenant, 0) > limit:
                victim = next(iter(lru))
                if victim == keep:
                    break
                self._remove(victim, self._data[victim], "quota")
        while self._bytes > self.max_bytes or (
            self.max_entries is not None and len(self._data) > self.max_entries
        ):
            victim = next(iter(self._data))
            if victim == keep:
                break
            self._remove(victim, self._data[victim], "lru")

    def _remove(self, key: str, entry: Entry, reason: str | None) -> None:
        if self._on_change is not None:
            self._on_change(key)
        del self._data[key]
        lru = self._tenant_lru[entry.tenant]
        del lru[key]
        if not lru:
            del self._tenant_lru[entry.tenant]
        remaining = self._tenant_bytes[entry.tenant] - entry.size
        if remaining:
            self._tenant_bytes[entry.tenant] = remaining
        else:
            del self._tenant_bytes[entry.tenant]
        self._bytes -= entry.size
        for tag in entry.tags:
            members = self._tags.get(tag)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._tags[tag]
        if reason is not None:
            self.stats.evictions[reason] += 1
            tev = self.stats.tenant_evictions
            tev[entry.tenant] = tev.get(entry.tenant, 0) + 1
            if self._on_evict is not None:
                self._on_evict(key, entry, reason)

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether a live entry was there."""
        entry = self._data.get(key)
        if entry is None:
            return False
        live = entry.expires_at is None or entry.expires_at > self._clock()
        self._remove(key, entry, None if live else "ttl")
        if live:
            self.stats.deletes += 1
        return live

    def tagged(self, tag: str) -> list[str]:
        """Return the keys of the live entries carrying ``tag``."""
        # A list first: an expired entry is removed by _live, changing the tag set.
        return [key for key in list(self._tags.get(tag, ())) if self._live(key) is not None]

    def invalidate_tag(self, tag: str) -> list[str]:
        """Remove every entry carrying ``tag``; return the removed keys."""
        keys = list(self._tags.get(tag, ()))
        for key in keys:
            self._remove(key, self._data[key], None)
        self.stats.deletes += len(keys)
        return keys

    def clear(self, predicate: Callable[[str, Entry], bool] | None = None) -> int:
        """Remove every entry, or those for which ``predicate(key, entry)`` holds."""
        victims = [k for k, e in self._data.items() if predicate is None or predicate(k, e)]
        for key in victims:
            self._remove(key, self._data[key], None)
        if predicate is None:
            self._expiry.clear()
        return len(victims)

    def _compact_expiry(self) -> None:
        # Re-setting a key leaves its old heap item behind; drop the stale ones so the
        # heap stays proportional to the entries (its memory is not charged).
        self._expiry = [
            (e.expires_at, k) for k, e in self._data.items() if e.expires_at is not None
        ]
        heapq.heapify(self._expiry)

    def expire(self, limit: int | None = None) -> int:
        """Sweep entries whose expiry has passed; return how many were removed."""
        now = self._clock()
        removed = 0
        heap = self._expiry
        while heap and heap[0][0] <= now and (limit is None or removed < limit):
            expires_at, key = heapq.heappop(heap)
            entry = self._data.get(key)
            if entry is not None and entry.expires_at == expires_at:
                self._remove(key, entry, "ttl")
                removed += 1
        return removed

    # -- tenant quotas ------------------------------------------------------------

    def set_tenant_limit(self, tenant: str, max_bytes: int | None) -> None:
        """Bound the bytes ``tenant`` may hold here (``None`` removes the bound)."""
        if max_bytes is None:
            self._tenant_limits.pop(tenant, None)
            return
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        self._tenant_limits[tenant] = max_bytes
        lru = self._tenant_lru.get(tenant)
        while lru and self._tenant_bytes.get(tenant, 0) > max_bytes:
            victim = next(iter(lru))
            self._remove(victim, self._data[victim], "quota")

    def snapshot(self) -> StoreStats:
        """Return a copy of the counters with current levels filled in."""
        s = self.stats
        return StoreStats(
            entries=len(self._data),
            bytes=self._bytes,
            hits=s.hits,
            misses=s.misses,
            sets=s.sets,
            deletes=s.deletes,
            evictions=dict(s.evictions),
            tenant_bytes=dict(self._tenant_bytes),
            tenant_entries={t: len(lru) for t, lru in self._tenant_lru.items()},
            tenant_evictions=dict(s.tenant_evictions),
        )
