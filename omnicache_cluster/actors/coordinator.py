"""`CoordinatorActor`: owns the ring and its epoch, and tells the shards about changes.

Clients ask it for the ring once, then again only when a shard answers *moved*; it is
never on the per-key hit path. It also hosts the cluster-wide single-flight leases
(`LeaseTable`: on a miss, one caller in the whole cluster computes) and the tenant
quotas (`QuotaBook` on the miss path; byte shares pushed to the shards). A miss is
followed by an LLM call that costs ~1000x an actor call, so one coordinator is enough
(``bench/single_flight.py`` measures it). The class is plain;
`omnicache_cluster.actors.remote` applies ``ray.remote``.

After a restart by Ray the constructor runs again with its first arguments, which may
be an old membership: the coordinator then asks every live shard of the cluster which
(epoch, members, quotas) it serves and adopts the newest, so neither the epoch nor the
quotas go backwards. Leases in flight are lost with it: their waiters' calls fail,
and they fail open (compute without single-flight) or retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from omnicache_cluster.actors._migration import MigrationOptions
from omnicache_cluster.core.quota import QuotaBook, TenantQuota
from omnicache_cluster.core.ring import DEFAULT_SLOTS, Ring
from omnicache_cluster.core.singleflight import LeaseTable, Outcome
from omnicache_cluster.observability.cost import SavingsBook
from omnicache_cluster.observability.metrics import ActorMetricsConfig, MetricsRecorder
from omnicache_cluster.placement import ShardPlacement

__all__ = ["CoordinatorActor", "CoordinatorConfig"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoordinatorConfig:
    """What the coordinator needs to start."""

    namespace: str
    shard_prefix: str
    members: tuple[str, ...]
    num_slots: int = DEFAULT_SLOTS
    #: Random per `CacheCluster.start`: tells a client that a cluster in the same
    #: namespace was replaced (its epochs start again at 1).
    cluster_id: str = ""
    call_timeout_s: float = 30.0
    tenant_quotas: tuple[tuple[str, TenantQuota], ...] = ()
    reap_interval_s: float = 0.1
    #: Export to Ray's metrics (``None``: off); see `omnicache_cluster.observability`.
    metrics: ActorMetricsConfig | None = field(default_factory=ActorMetricsConfig)
    #: Where shards added by `scale` go (and the semantic index's Ray options).
    placement: ShardPlacement | None = None
    #: After a restart, how long to keep asking shards that do not answer yet.
    recover_deadline_s: float = 60.0


class CoordinatorActor:
    """Keeper of the cluster's ring: membership, epoch, and the push to the shards."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self._config = config
        self._ring = Ring(config.members, 1, config.num_slots)
        self._lock: asyncio.Lock | None = None
        self._recovered = not self._was_restarted()
        self._quotas = QuotaBook()
        for tenant, quota in config.tenant_quotas:
            self._quotas.set(tenant, quota)
        self._quota_gen = 1
        self._leases = LeaseTable(self._quotas)
        self._reaper: asyncio.Task[None] | None = None
        self._metrics = MetricsRecorder.for_config(config.metrics, config.namespace, "coordinator")
        self._metrics_task: asyncio.Task[None] | None = None
        self._savings = SavingsBook(self._metrics.config.max_models)
        self._started = time.time()

    @staticmethod
    def _was_restarted() -> bool:
        try:
            import ray

            if not ray.is_initialized():  # a plain object in a unit test
                return False
            with warnings.catch_warnings():  # the property reads a deprecated attribute
                warnings.simplefilter("ignore")
                return bool(ray.get_runtime_context().was_current_actor_reconstructed)
        except Exception:  # not inside Ray
            return False

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _recover(self) -> None:
        self._ensure_metrics()
        if self._recovered:
            return
        async with self._get_lock():
            if self._recovered:
                return
            from omnicache_cluster.actors._rebalance import recovery_views, roll_forward

            # Shards restarting (a node died with this coordinator) are asked again
            # until the deadline; a step interrupted mid-flip is rolled forward.
            cfg = self._config
            views = await recovery_views(cfg.namespace, cfg.shard_prefix, cfg.recover_deadline_s)
            best: tuple[int, tuple[str, ...]] = (self._ring.epoch, self._ring.members)
            quotas: tuple[int, dict[str, TenantQuota]] = (self._quota_gen, self._quotas.quotas())
            newest, sources, aborts = roll_forward(views)
            if newest is not None and newest[0] > best[0]:
                best = newest
            for view in views.values():
                if view["quota_gen"] > quotas[0]:
                    quotas = (view["quota_gen"], view["quotas"])
            self._ring = Ring(best[1], best[0], self._config.num_slots)
            self._quota_gen = quotas[0]
            for tenant in set(self._quotas.quotas()) - set(quotas[1]):
                self._quotas.set(tenant, None)
            for tenant, quota in quotas[1].items():
                self._quotas.set(tenant, quota)
            self._recovered = True
            _log.info("coordinator recovered ring epoch %d with %d shards", *self._summary())
            await self._roll_forward(views, sources, aborts)

    async def _roll_forward(
        self, views: dict[str, Any], sources: list[str], aborts: list[tuple[str, int]]
    ) -> None:
        """Push the recovered ring where it is not held yet (sources of a half-flipped
        step first), and abort steps prepared but never flipped."""
        import ray

        for name, epoch in aborts:
            try:
                handle = ray.get_actor(name, namespace=self._config.namespace)
                await asyncio.wait_for(handle.abort_migration.remote(epoch), 10.0)
            except Exception as exc:  # its hold expires by itself
                _log.warning("ring recovery: could not abort %s's step: %s", name, exc)
        behind = {n for n, v in views.items() if v["epoch"] < self._ring.epoch}
        if sources:
            await self._push(self._ring, set(sources))
        if behind or sources:
            await self._push(self._ring, behind | set(self._ring.members))

    def _summary(self) -> tuple[int, int]:
        return self._ring.epoch, len(self._ring.members)

    async def get_ring(self) -> tuple[int, tuple[str, ...], int, str]:
        """Return ``(epoch, members, num_slots, cluster_id)``."""
        await self._recover()
        return self._ring.epoch, self._ring.members, self._ring.num_slots, self._config.cluster_id

    async def set_members(self, members: Sequence[str]) -> int:
        """Change the membership, bump the epoch, and push the ring to every shard.

        Shards that leave are told too (they stop owning every slot). Returns the
        new epoch once every reachable shard has it.

        Raises:
            ValueError: ``members`` is empty or has duplicates.
        """
        await self._recover()
        async with self._get_lock():
            old = self._ring
            ring = old.with_members(tuple(members))
            self._ring = ring
            await self._push(ring, set(old.members) | set(ring.members))
            return ring.epoch

    async def _push(self, ring: Ring, names: set[str]) -> None:
        import ray

        quotas, generation, n = self._quotas.quotas(), self._quota_gen, len(ring.members)

        async def push(name: str) -> None:
            # A name lookup blocks on the control store: not on this event loop, where
            # clients refreshing their ring (right after a flip) wait for get_ring.
            handle = await asyncio.to_thread(ray.get_actor, name, namespace=self._config.namespace)
            timeout = self._config.call_timeout_s
            await asyncio.wait_for(handle.set_ring.remote(ring.epoch, ring.members), timeout)
            await asyncio.wait_for(handle.set_tenant_quotas.remote(generation, quotas, n), timeout)

        results = await asyncio.gather(*(push(n) for n in sorted(names)), return_exceptions=True)
        for name, result in zip(sorted(names), results, strict=True):
            if isinstance(result, BaseException):
                _log.warning("could not push ring epoch %d to %s: %s", ring.epoch, name, result)

    async def scale(
        self,
        num_shards: int,
        options: MigrationOptions | None = None,
        wait_timeout_s: float = 600.0,
    ) -> dict[str, Any]:
        """Add or remove shards while traffic runs, moving the entries of every slot
        that changes owner (`omnicache_cluster.actors._rebalance`); return the report.

        Raises:
            ValueError: ``num_shards`` is not a positive int.
            ShardUnavailable: a shard could not be prepared (nothing changed).
        """
        from omnicache_cluster.actors._rebalance import Rebalancer

        await self._recover()
        async with self._get_lock():
            rebalancer = Rebalancer(
                self._config.namespace,
                self._config.shard_prefix,
                self._config.placement or ShardPlacement(),
                lambda: self._ring,
                self._adopt_ring,
                self._push,
                self._config.call_timeout_s,
            )
            return await rebalancer.scale(num_shards, options or MigrationOptions(), wait_timeout_s)

    def _adopt_ring(self, ring: Ring) -> None:
        self._ring = ring

    async def placement(self) -> ShardPlacement | None:
        """Return the cluster's placement (the semantic index reads its options here)."""
        return self._config.placement

    async def shard_view(self) -> tuple[int, tuple[str, ...], int, dict[str, TenantQuota]]:
        """Return what a (re)starting shard needs: epoch, members, quota generation, quotas."""
        await self._recover()
        return self._ring.epoch, self._ring.members, self._quota_gen, self._quotas.quotas()

    # -- single-flight leases ------------------------------------------------------------

    def _ensure_reaper(self) -> None:
        self._ensure_metrics()
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.reap_interval_s)
            try:
                self._leases.reap()
            except Exception:  # the reaper must outlive any one bad flight
                _log.exception("lease reaper failed")

    async def acquire(
        self, key: str, tenant: str, lease_ttl: float, wait_timeout: float
    ) -> Outcome:
        """Lead the compute of ``key`` or wait for its leader (see `LeaseTable.acquire`)."""
        self._ensure_reaper()
        t0 = time.perf_counter()
        outcome = await self._leases.acquire(key, tenant, lease_ttl, wait_timeout)
        if outcome[0] != "lead":  # a waiter (or throttled): how long it waited
            self._metrics.lease_wait(tenant, outcome[0], time.perf_counter() - t0)
        return outcome

    async def renew(self, leases: Sequence[tuple[str, int]], lease_ttl: float) -> list[bool]:
        """Extend leases still held; return which ones were."""
        return [self._leases.renew(key, token, lease_ttl) for key, token in leases]

    async def release(self, key: str, token: int, kind: str, payload: Any = None) -> bool:
        """End a flight: ``kind`` is ``done`` (payload: the encoded value), ``error``
        (payload: the exception) or ``retry`` (the value could not be shared)."""
        if kind not in ("done", "error", "retry"):
            raise ValueError(f"release kind must be done, error or retry, got {kind!r}")
        return self._leases.release(key, token, (kind, payload))

    async def lease_stats(self) -> dict[str, Any]:
        """Return the lease table's counters."""
        return self._leases.snapshot()

    # -- metrics and savings (`omnicache_cluster.observability`) --------------------------

    def _ensure_metrics(self) -> None:
        if self._metrics_task is None and self._metrics.enabled:
            from omnicache_cluster.observability._samples import coordinator_samples
            from omnicache_cluster.observability.ray_metrics import start_exporter

            self._metrics_task = start_exporter(
                self._metrics, self.metrics_view, coordinator_samples
            )

    async def add_savings(self, rows: Sequence[tuple[str, int, int, int, float]]) -> int:
        """Add ``(model, calls, prompt tokens, completion tokens, USD)`` savings rows."""
        self._ensure_metrics()
        return self._savings.add(rows)

    async def metrics_view(self) -> dict[str, Any]:
        """Return per-tenant lease usage, the lease table's counters and the savings."""
        return {
            "tenants": await self.tenant_usage(),
            "leases": self._leases.snapshot(),
            "savings": self._savings.snapshot(),
        }

    # -- tenant quotas -------------------------------------------------------------------

    async def set_tenant_quota(self, tenant: str, quota: TenantQuota | None) -> int:
        """Set (``None``: remove) ``tenant``'s quota and push byte shares to the shards."""
        await self._recover()
        async with self._get_lock():
            self._quotas.set(tenant, quota)
            self._quota_gen += 1
            await self._push(self._ring, set(self._ring.members))
            return self._quota_gen

    async def tenant_quotas(self) -> dict[str, TenantQuota]:
        """Return every tenant's quota."""
        await self._recover()
        return self._quotas.quotas()

    async def tenant_usage(self, tenant: str | None = None) -> dict[str, dict[str, int]]:
        """Return miss-path counters per tenant (only ``tenant``'s when given)."""
        names = [tenant] if tenant is not None else self._quotas.tenants()
        out = {}
        for name in names:
            u = self._quotas.usage(name)
            out[name] = {
                "computes": u.computes,
                "computing": u.running,
                "throttled": u.throttled,
                "lease_waits": u.lease_waits,
            }
        return out

    async def publish(self) -> int:
        """Push the current ring to every member again; return the epoch."""
        await self._recover()
        await self._push(self._ring, set(self._ring.members))
        return self._ring.epoch

    async def info(self) -> dict[str, Any]:
        """Return the ring epoch, members and slot counts."""
        await self._recover()
        return {
            "epoch": self._ring.epoch,
            "members": list(self._ring.members),
            "num_slots": self._ring.num_slots,
            "slot_counts": self._ring.slot_counts(),
            "uptime_s": time.time() - self._started,
        }

    async def ping(self) -> str:
        """A liveness probe."""
        self._ensure_metrics()
        return "ok"
