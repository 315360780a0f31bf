"""Single-flight leases hosted by the shard that owns the key (groupcache's shape).

`ShardActor` mixes this in. A ``get_or_compute`` miss costs two shard calls, as a miss
done by hand does (``get`` then ``set``): `get_or_lease` looks the key up and, on a
miss, leads or joins its flight in the same call (L1 is checked again after an L2
read, with no await between that check and the lease, so no other caller slips in);
`set_and_release` stores the leader's value and hands it to the waiters in one call.
Leases are spread over the shards with the keys, so their throughput grows with the
cluster (``bench/single_flight.py`` measured one central coordinator below 1,000
lease cycles/s on 2 cores).

Tenants with compute quotas (``max_concurrent_computes``, ``computes_per_minute``)
need one cluster-wide count: for them the shard answers ``coordinate`` and the client
takes its lease from the coordinator, which admits computes under the quota.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from omnicache_cluster.core.ring import key_hash
from omnicache_cluster.core.singleflight import LeaseTable, Outcome

if TYPE_CHECKING:
    from omnicache_cluster.actors.shard import SetItem
    from omnicache_cluster.observability.metrics import MetricsRecorder

__all__ = ["ShardLeases"]

_log = logging.getLogger(__name__)
LEASE_REAP_INTERVAL_S = 0.1


class ShardLeases:
    """Lease methods of a shard; expects the attributes `ShardActor` sets up."""

    _leases: LeaseTable
    _lease_reaper: asyncio.Task[None] | None
    _metrics: MetricsRecorder

    def _init_leases(self) -> None:
        self._leases = LeaseTable()
        self._lease_reaper = None

    async def _reap_leases(self) -> None:
        while True:
            await asyncio.sleep(LEASE_REAP_INTERVAL_S)
            try:
                self._leases.reap()
            except Exception:  # the reaper must outlive any one bad flight
                _log.exception("lease reaper failed")

    def _needs_coordinator(self, tenant: str) -> bool:
        quota = self._quotas.get(tenant)  # type: ignore[attr-defined]
        return quota is not None and (
            quota.max_concurrent_computes is not None or quota.computes_per_minute is not None
        )

    async def get_or_lease(self, key: str, lease_ttl: float, wait_timeout: float) -> Outcome:
        """Return ``("hit", value)``, or the lease outcome of the miss (see `LeaseTable`).

        Also ``("moved", epoch)`` for a key this shard does not own, and
        ``("coordinate", None)`` for a tenant whose computes the coordinator admits.
        """
        await self._ready()  # type: ignore[attr-defined]
        if not self._owned[key_hash(key) % self._num_slots]:  # type: ignore[attr-defined]
            return ("moved", self._epoch)  # type: ignore[attr-defined]
        value = await self._lookup(key)  # type: ignore[attr-defined]  # L1, else L2
        self._count(key, 0 if value is not None else 1)  # type: ignore[attr-defined]
        if value is not None:
            return ("hit", value)
        # Reading L2 awaited: a leader may have stored the value meanwhile. From here
        # to the lease there is no await, so nobody else can slip in.
        entry = self._store.get_entry(key)  # type: ignore[attr-defined]
        if entry is not None:
            return ("hit", entry.value)
        from omnicache_cluster.actors.shard import _tenant_of

        tenant = _tenant_of(key)
        if self._needs_coordinator(tenant):
            return ("coordinate", None)
        if self._lease_reaper is None or self._lease_reaper.done():
            self._lease_reaper = asyncio.get_running_loop().create_task(self._reap_leases())
        t0 = time.perf_counter()
        outcome = await self._leases.acquire(key, tenant, lease_ttl, wait_timeout)
        if outcome[0] != "lead" and wait_timeout > 0:  # a waiter: how long it waited
            self._metrics.lease_wait(tenant, outcome[0], time.perf_counter() - t0)
        return outcome

    async def get_or_lease_many(
        self, args: Sequence[tuple[str, float, float]]
    ) -> tuple[int, list[Outcome], list[int]]:
        """`get_or_lease` of several ``(key, lease_ttl, wait_timeout)`` at once; return
        ``(epoch, outcomes, positions moved)``. With ``wait_timeout`` 0 nobody waits: a
        key another caller is computing answers ``("timeout", None)``."""
        outcomes = list(await asyncio.gather(*(self.get_or_lease(*a) for a in args)))
        moved = [i for i, o in enumerate(outcomes) if o[0] == "moved"]
        return self._epoch, outcomes, moved  # type: ignore[attr-defined]

    async def renew(self, leases: Sequence[tuple[str, int]], lease_ttl: float) -> list[bool]:
        """Extend leases still held; return which ones were."""
        return [self._leases.renew(key, token, lease_ttl) for key, token in leases]

    async def release(self, key: str, token: int, kind: str, payload: Any = None) -> bool:
        """End a flight with ``("error", exception)`` or ``("retry", None)``."""
        if kind not in ("error", "retry"):
            raise ValueError(f"release kind must be error or retry, got {kind!r}")
        return self._leases.release(key, token, (kind, payload))

    async def set_and_release(
        self, item: SetItem, token: int
    ) -> tuple[int, list[int], list[tuple[int, int, int]], int]:
        """Store the leader's value, then hand it to the flight's waiters.

        Returns what `set_many` returns for the one item; the flight ends even if the
        key moved meanwhile (the client then stores the value at the new owner).
        """
        reply: tuple[int, list[int], list[tuple[int, int, int]], int]
        reply = await self.set_many([item])  # type: ignore[attr-defined]
        self._leases.release(item[0], token, ("done", item[1]))
        return reply

    async def lease_many(
        self, args: Sequence[tuple[str, float]]
    ) -> tuple[int, list[Outcome], list[int]]:
        """`get_or_lease_many` of ``(key, lease_ttl)`` pairs that never waits (so its
        outcomes are plain data, fit for the direct port)."""
        return await self.get_or_lease_many([(key, ttl, 0.0) for key, ttl in args])

    async def set_and_release_many(
        self, items: Sequence[tuple[SetItem, int]]
    ) -> tuple[int, list[int], list[int]]:
        """`set_and_release` of several ``(item, token)``; return ``(epoch, sizes
        refused (0: stored), positions moved)``. Every flight ends, moved or not (the
        client stores a moved value at the new owner)."""
        epoch, moved, errors, _seq = await self.set_many([item for item, _ in items])  # type: ignore[attr-defined]
        for item, token in items:
            self._leases.release(item[0], token, ("done", item[1]))
        refused = [0] * len(items)
        for i, size, _limit in errors:
            refused[i] = size
        return epoch, refused, moved

    async def release_many(
        self, items: Sequence[tuple[str, int, str, Any]]
    ) -> tuple[int, list[bool], list[int]]:
        """`release` of several ``(key, token, kind, payload)``; return ``(epoch, which
        flights were still held, [])``."""
        return self._epoch, [await self.release(*item) for item in items], []  # type: ignore[attr-defined]

    def _lease_usage(self) -> dict[str, dict[str, int]]:
        quotas = self._leases.quotas
        return {t: self._lease_stats(t) for t in quotas.tenants()}

    def _lease_stats(self, tenant: str) -> dict[str, int]:
        usage = self._leases.quotas.usage(tenant)
        return {"computes": usage.computes, "lease_waits": usage.lease_waits}
