"""``get_or_compute_many``: one batch lookup, and each missing key computed once
cluster-wide, in as few calls of the user's batch function as possible.

The single-key flight (`omnicache_cluster._flight`) blocks a waiter inside its lease
call. A batch cannot do that: two callers whose batches overlap would each wait for
the other's keys before computing their own. So leases are taken in two passes, each
one call per owner shard (`ShardLeases.get_or_lease_many`):

1. Without waiting. Every missing key nobody computes is leased to this caller; a key
   another caller is computing is left for pass 2. The leased keys (and keys that
   cannot be leased: tenants with compute quotas, cache faults) are computed in one
   call of the batch function, stored, and their waiters released, one call per shard
   (`set_and_release_many`).
2. Waiting, for the keys left. Each answers the other caller's value, or its error,
   or a lease if that caller gave up (its lease ran out): those are computed in one
   more call of the batch function.

So no caller waits before it has computed what it leads, and nothing deadlocks. Cache
faults fail open as in the single-key flight: the keys are computed and the fault is
counted and logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from omnicache_cluster._flight import (
    _KEEPER,
    _cache_faults,
    _call,
    _decode_or_miss,
    _encode_or_none,
    _outcome_value,
    _portable,
    record_fault,
)
from omnicache_cluster._routing import _Batch
from omnicache_cluster.core.sentinel import MISS

if TYPE_CHECKING:
    from omnicache_cluster.client import CacheCluster, ClientOptions

__all__ = ["aget_or_compute_many", "get_or_compute_many"]

FnMany = Callable[[list[Any]], Any]


class _Many:
    """The state of one ``get_or_compute_many``: distinct keys, their values, leases."""

    def __init__(
        self,
        client: CacheCluster,
        keys: Sequence[Any],
        *,
        ttl: float | None,
        tags: tuple[str, ...],
        layer: str,
        wait_timeout: float,
        lease_ttl: float,
    ) -> None:
        self.client = client
        self.keys = list(keys)
        self.skeys = [client.key(k, layer) for k in self.keys]
        first: dict[str, int] = {}
        self.slot = [first.setdefault(s, i) for i, s in enumerate(self.skeys)]
        self.values: list[Any] = [MISS] * len(self.keys)
        self.ttl, self.tags = ttl, tags
        self.wait_timeout, self.lease_ttl = wait_timeout, lease_ttl
        self.tokens: dict[int, int] = {}
        self.sites: dict[int, Any] = {}
        self.error: Exception | None = None

    def distinct(self) -> list[int]:
        return sorted(set(self.slot))

    def lease_options(self, wait: float) -> ClientOptions:
        """The client's options, with room for a call that waits ``wait`` seconds on
        the shard (as the single-key flight's lease call has)."""
        opts = self.client.options
        if wait <= 0:
            return opts
        return dataclasses.replace(
            opts,
            call_timeout_s=opts.call_timeout_s + wait,
            retry_deadline_s=opts.retry_deadline_s + wait,
        )

    def lease_batch(self, positions: list[int], wait: float) -> _Batch:
        """Pass 1 (``wait`` 0) goes on the direct port; a wait may end in another
        caller's exception, which only a Ray call carries."""
        keys = [self.skeys[p] for p in positions]
        if wait <= 0:
            return _Batch("lease_many", keys, [(k, self.lease_ttl) for k in keys])
        return _Batch("get_or_lease_many", keys, [(k, self.lease_ttl, wait) for k in keys])

    def sort(
        self, positions: list[int], outcomes: Sequence[Any], waited: bool
    ) -> tuple[list[int], list[int], list[int]]:
        """Take lease outcomes; return the positions to ``(lead, compute unleased,
        wait for)``. Another caller's error, or a wait that timed out, goes to
        ``error`` (raised once this caller's new leases are let go)."""
        lead: list[int] = []
        plain: list[int] = []
        busy: list[int] = []
        for pos, (kind, payload) in zip(positions, outcomes, strict=True):
            if kind == "lead":
                lead.append(pos)
                self.tokens[pos] = payload
            elif kind == "hit":  # stored since the caller's lookup
                value = _decode_or_miss(self.client, payload)
                if value is MISS:
                    plain.append(pos)
                else:
                    self.values[pos] = value
            elif kind == "timeout" and not waited:
                busy.append(pos)
            elif kind in ("coordinate", "retry", "expired"):
                plain.append(pos)  # a quota tenant's key, or a value that was not shared
            else:  # done, error, timeout (waited), quota
                try:
                    value = _outcome_value(
                        self.client, kind, payload, self.keys[pos], self.wait_timeout
                    )
                except Exception as exc:
                    self.error = self.error or exc
                    continue
                if value is MISS:
                    plain.append(pos)
                else:
                    self.values[pos] = value
        return lead, plain, busy

    def keep(self, lead: list[int]) -> None:
        """Renew the leases of ``lead`` while the batch function runs."""
        if not lead:
            return
        state = self.client._state
        try:
            ring = state.current_ring(self.client.options)
            for pos in lead:
                self.sites[pos] = state.handle_of(ring.owner(self.skeys[pos]))
        except _cache_faults() as exc:  # unrenewed, a lease may pass on: not an error
            record_fault("lease_renew", exc)
        for pos, site in self.sites.items():
            _KEEPER.add(site, self.skeys[pos], self.tokens[pos], self.lease_ttl)

    def unkeep(self, lead: list[int]) -> None:
        for pos in lead:
            site = self.sites.pop(pos, None)
            if site is not None:
                _KEEPER.remove(site, self.skeys[pos], self.tokens[pos])

    def take(self, positions: list[int], computed: Any) -> None:
        """Take the batch function's values for ``positions``.

        Raises:
            ValueError: it returned another number of values.
        """
        values = list(computed)
        if len(values) != len(positions):
            raise ValueError(
                f"the batch function returned {len(values)} values for {len(positions)} keys"
            )
        for pos, value in zip(positions, values, strict=True):
            self.values[pos] = value

    def finish_batches(self, lead: list[int], plain: list[int]) -> tuple[_Batch, _Batch, _Batch]:
        """The calls that end this round: ``(set_and_release_many of the leads whose
        value encodes, release_many of the others, set_many of the unleased keys)``."""
        done, undone, stores = [], [], []
        for pos in lead:
            data = _encode_or_none(self.client, self.values[pos])
            skey, token = self.skeys[pos], self.tokens[pos]
            if data is None:
                undone.append((skey, token, "retry", None))
            else:
                done.append(((skey, data, self.ttl, self.tags), token))
        for pos in plain:
            data = _encode_or_none(self.client, self.values[pos])
            if data is not None:
                stores.append((self.skeys[pos], data, self.ttl, self.tags))
        return (
            _Batch("set_and_release_many", [d[0][0] for d in done], done),
            _Batch("release_many", [u[0] for u in undone], undone),
            _Batch("set_many", [s[0] for s in stores], stores),
        )

    def failed_batch(self, lead: list[int], exc: Exception | None) -> _Batch:
        """Release ``lead`` with the batch function's error (waiters get it too), or,
        without one, for a waiter to take over (this caller gives up)."""
        outcome = ("retry", None) if exc is None else ("error", _portable(exc))
        items = [(self.skeys[p], self.tokens[p], *outcome) for p in lead]
        return _Batch("release_many", [i[0] for i in items], items)

    def result(self) -> list[Any]:
        return [self.values[s] for s in self.slot]


def _stored(batch: _Batch) -> None:
    """Record a refused value (too large for its shard) as a set fault."""
    for _pos, size, limit in batch.errors:
        record_fault("set", ValueError(f"value of {size} bytes over the shard's {limit}"))


def get_or_compute_many(
    client: CacheCluster,
    keys: Sequence[Any],
    fn_many: FnMany,
    *,
    ttl: float | None,
    tags: tuple[str, ...],
    layer: str,
    wait_timeout: float,
    lease_ttl: float,
) -> list[Any]:
    """See `CacheCluster.get_or_compute_many`."""
    state = client._state
    faults = _cache_faults()
    many = _Many(
        client, keys, ttl=ttl, tags=tags, layer=layer, wait_timeout=wait_timeout,
        lease_ttl=lease_ttl,
    )  # fmt: skip
    todo = many.distinct()
    for wait in (0.0, wait_timeout):
        if not todo:
            break
        try:
            outcomes = state.run(many.lease_batch(todo, wait), many.lease_options(wait)).results
        except faults as exc:
            record_fault("lease", exc)
            lead, plain, busy = [], todo, []
        else:
            lead, plain, busy = many.sort(todo, outcomes, waited=wait > 0)
        if many.error is not None:
            _guarded_run(client, many.failed_batch(lead, None))
            raise many.error
        compute = lead + plain
        if compute:
            many.keep(lead)
            try:
                many.take(compute, fn_many([many.keys[p] for p in compute]))
            except Exception as exc:
                many.unkeep(lead)
                _guarded_run(client, many.failed_batch(lead, exc))
                raise
            many.unkeep(lead)
            for batch in many.finish_batches(lead, plain):
                _guarded_run(client, batch)
        todo = busy
    return many.result()


def _guarded_run(client: CacheCluster, batch: _Batch) -> None:
    if not batch.keys:
        return
    try:
        done = client._state.run(batch, client.options)
    except _cache_faults() as exc:
        record_fault("lease_release", exc)
    else:
        _stored(done)


async def aget_or_compute_many(
    client: CacheCluster,
    keys: Sequence[Any],
    fn_many: FnMany,
    *,
    ttl: float | None,
    tags: tuple[str, ...],
    layer: str,
    wait_timeout: float,
    lease_ttl: float,
) -> list[Any]:
    """See `CacheCluster.aget_or_compute_many`; ``fn_many`` may be async."""
    state = client._state
    faults = _cache_faults()
    many = _Many(
        client, keys, ttl=ttl, tags=tags, layer=layer, wait_timeout=wait_timeout,
        lease_ttl=lease_ttl,
    )  # fmt: skip
    todo = many.distinct()
    for wait in (0.0, wait_timeout):
        if not todo:
            break
        try:
            batch = many.lease_batch(todo, wait)
            outcomes = (await state.arun(batch, many.lease_options(wait))).results
        except faults as exc:
            record_fault("lease", exc)
            lead, plain, busy = [], todo, []
        else:
            lead, plain, busy = many.sort(todo, outcomes, waited=wait > 0)
        if many.error is not None:
            await _aguarded_run(client, many.failed_batch(lead, None))
            raise many.error
        compute = lead + plain
        if compute:
            await asyncio.to_thread(many.keep, lead)
            try:
                many.take(
                    compute, await _call(lambda c=compute: fn_many([many.keys[p] for p in c]))
                )
            except Exception as exc:
                many.unkeep(lead)
                await _aguarded_run(client, many.failed_batch(lead, exc))
                raise
            many.unkeep(lead)
            for batch in many.finish_batches(lead, plain):
                await _aguarded_run(client, batch)
        todo = busy
    return many.result()


async def _aguarded_run(client: CacheCluster, batch: _Batch) -> None:
    if not batch.keys:
        return
    try:
        done = await client._state.arun(batch, client.options)
    except _cache_faults() as exc:
        record_fault("lease_release", exc)
    else:
        _stored(done)
