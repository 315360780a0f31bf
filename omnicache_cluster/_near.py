"""The client side of the near-cache: the poller thread and the near get/put paths.

See `omnicache_cluster.core.nearcache` for the guarantee. One `NearCache` and one
poller thread exist per cluster and `NearCacheOptions` per process, shared by every
client of that cluster in the process with those options (their keys carry their
tenant, so tenants stay apart); each keeps its own staleness bound. A write, delete or
invalidation drops the key from the process's other near-caches.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from omnicache_cluster.core.nearcache import NearCache, NearCacheOptions
from omnicache_cluster.core.wire import WireError

if TYPE_CHECKING:
    from omnicache_cluster._routing import _ClusterState
    from omnicache_cluster.client import CacheCluster, ClientOptions

__all__: list[str] = []

_log = logging.getLogger(__name__)

#: A near-cache not read for this long stops polling and is dropped.
IDLE_S = 60.0

# Its own generator: drawing from the global one would disturb the user's seeded runs.
_JITTER = random.Random()


class NearPoller:
    """Polls every shard's change log so near entries are dropped when they change."""

    def __init__(self, state: _ClusterState, near: NearCache, opts: ClientOptions) -> None:
        self._state = state
        self._near = near
        self._opts = opts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="omnicache-near", daemon=True)
        self._thread.start()

    def _retire(self) -> None:
        # Unused for a while (say, a Ray worker whose task ended): stop polling the
        # shards; the next near get starts afresh.
        state, options = self._state, self._near.options
        with state.lock:
            if state.nears.get(options) is self._near:
                del state.nears[options]
                state.near_pollers.pop(options, None)
        self._stop.set()

    def stop(self) -> None:
        """Stop polling (the cluster was shut down or replaced)."""
        self._stop.set()

    def poll_once(self) -> None:
        """Poll every shard once and apply the replies (also used for read-your-writes)."""
        import ray

        state = self._state
        ring = state.current_ring(self._opts)
        bound = self._near.options.staleness_s
        calls = []
        for name in ring.members:
            seen = self._near.last_seq(name)
            try:
                handle = state.handle_of(name)
            except ValueError:
                continue
            endpoint = state.endpoint_of(name, handle, self._opts)
            issued = time.monotonic()
            since = seen[1] if seen else self._near.first_since(name)
            if endpoint is not None:  # the direct port: the reply is here already
                try:
                    reply = endpoint.call("changes_since", since, bound)
                except (WireError, TimeoutError) as exc:
                    state.wire_failed(name, exc)
                    continue
                calls.append((name, issued, seen, reply))
            else:
                calls.append((name, issued, seen, handle.changes_since.remote(since)))
        for name, issued, seen, ref in calls:
            try:
                reply = ref if isinstance(ref, list) else ray.get(ref, timeout=bound)
                incarnation, seq, slots = reply
            except Exception as exc:  # not fresh until a later poll succeeds
                _log.debug("near-cache poll of %s failed: %s", name, exc)
                continue
            if seen is not None and seen[0] != incarnation:
                slots = None  # a restarted shard: its old numbers mean nothing
            self._near.apply_poll(name, issued, incarnation, seq, slots)

    def _loop(self) -> None:
        interval = self._near.options.staleness_s / 3
        while not self._stop.is_set():
            if time.monotonic() - self._near.last_used > IDLE_S:
                self._retire()
                return
            try:
                self.poll_once()
            except Exception as exc:  # keep polling: the bound protects readers meanwhile
                _log.debug("near-cache poll failed: %s", exc)
            # Randomised so that many processes do not poll in step.
            self._stop.wait(interval * _JITTER.uniform(0.8, 1.2))


def near_for(client: CacheCluster, layer: str) -> NearCache | None:
    """Return the process's near-cache if ``client`` uses one for ``layer``."""
    options: NearCacheOptions | None = client._options.near_cache
    if options is None or not options.covers(layer):
        return None
    state = client._state
    near = state.nears.get(options)
    if near is None:
        with state.lock:
            near = state.nears.get(options)
            if near is None:
                near = state.nears[options] = NearCache(options)
                state.near_pollers[options] = NearPoller(state, near, client._options)
    return near  # type: ignore[no-any-return]


def near_of(client: CacheCluster) -> NearCache | None:
    """Return the near-cache ``client``'s options use in this process, if it exists."""
    options = client._options.near_cache
    return None if options is None else client._state.nears.get(options)


def near_drop(client: CacheCluster, skeys: list[str], keep: NearCache | None = None) -> None:
    """Drop ``skeys`` from every near-cache of the process but ``keep``."""
    for near in list(client._state.nears.values()):
        if near is not keep:
            near.drop(skeys)


def near_fetch(client: CacheCluster, near: NearCache, skey: str) -> bytes | None:
    """The remote get of a near miss, keeping what it reads near."""
    ring = client._state.current_ring(client._options)
    shard = ring.owner(skey)
    generation = near.generation(shard)
    data = client._raw_get(skey)
    # Not kept if the ring moved during the read: the value came from another shard
    # than ``shard``, whose change log would never report it (a slot that moved away).
    if data is not None and client._state.ring is ring:
        near.put(skey, data, shard, ring.slot(skey), (), generation)
    return data


async def anear_fetch(client: CacheCluster, near: NearCache, skey: str) -> bytes | None:
    """Async `near_fetch`."""
    ring = await client._state.acurrent_ring(client._options)
    shard = ring.owner(skey)
    generation = near.generation(shard)
    data = await client._araw_get(skey)
    if data is not None and client._state.ring is ring:  # see near_fetch
        near.put(skey, data, shard, ring.slot(skey), (), generation)
    return data


def near_put_many(client: CacheCluster, near: NearCache, items: list[Any], seqs: list[Any]) -> None:
    """After an acknowledged write, keep its values near (read-your-writes); ``seqs``
    are the shards' change numbers right after each write."""
    if len(client._state.nears) > 1:  # other clients' copies in this process
        near_drop(client, [item[0] for item in items], keep=near)
    ring = client._state.ring
    if ring is None:
        return
    for (skey, data, _ttl, tags), seq in zip(items, seqs, strict=True):
        if isinstance(seq, int):
            near.put(skey, data, ring.owner(skey), ring.slot(skey), tags, seq=seq)


def near_sync(client: CacheCluster) -> None:
    """After an invalidation or a flush, poll now, so this process sees it at once."""
    for poller in list(client._state.near_pollers.values()):
        poller.poll_once()
