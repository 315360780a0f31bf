"""`CoordinatorActor`: owns the ring and its epoch, and tells the shards about changes.

Clients ask it for the ring once, then again only when a shard answers *moved*; it is
never on the per-key hit path. Later parts (single-flight leases, tenant quotas) also
live here. The class is plain; `omnicache_cluster.actors.remote` applies ``ray.remote``.

After a restart by Ray the constructor runs again with its first arguments, which may
be an old membership: the coordinator then asks every live shard of the cluster which
(epoch, members) it serves and adopts the newest, so the epoch never goes backwards.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omnicache_cluster.core.ring import DEFAULT_SLOTS, Ring

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


class CoordinatorActor:
    """Keeper of the cluster's ring: membership, epoch, and the push to the shards."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self._config = config
        self._ring = Ring(config.members, 1, config.num_slots)
        self._lock: asyncio.Lock | None = None
        self._recovered = not self._was_restarted()

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
        if self._recovered:
            return
        async with self._get_lock():
            if self._recovered:
                return
            import ray

            names = [
                n for n in ray.util.list_named_actors() if n.startswith(self._config.shard_prefix)
            ]
            best: tuple[int, tuple[str, ...]] = (self._ring.epoch, self._ring.members)
            for name in names:
                try:
                    handle = ray.get_actor(name, namespace=self._config.namespace)
                    epoch, members = await asyncio.wait_for(handle.ring_view.remote(), 10.0)
                except Exception as exc:  # a dead shard cannot tell us anything
                    _log.warning("ring recovery: shard %s did not answer: %s", name, exc)
                    continue
                if members and epoch > best[0]:
                    best = (epoch, tuple(members))
            self._ring = Ring(best[1], best[0], self._config.num_slots)
            self._recovered = True
            _log.info("coordinator recovered ring epoch %d with %d shards", *self._summary())

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

        async def push(name: str) -> None:
            handle = ray.get_actor(name, namespace=self._config.namespace)
            await asyncio.wait_for(
                handle.set_ring.remote(ring.epoch, ring.members), self._config.call_timeout_s
            )

        results = await asyncio.gather(*(push(n) for n in sorted(names)), return_exceptions=True)
        for name, result in zip(sorted(names), results, strict=True):
            if isinstance(result, BaseException):
                _log.warning("could not push ring epoch %d to %s: %s", ring.epoch, name, result)

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
        }

    async def ping(self) -> str:
        """A liveness probe."""
        return "ok"
