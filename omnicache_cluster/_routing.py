"""Per-process routing state and the batch engine shared by the sync and async client.

A `_Batch` is one multi-key operation, written without I/O: it says which shard gets
which keys under a ring, takes the replies, and keeps the keys that came back *moved*
or failed for the next round. `_ClusterState` holds the cached ring and actor handles
of one cluster for the whole process, and drives batches with sync (``ray.get``) or
async (``await``) I/O, so the retry and *moved* logic exists once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from omnicache_cluster.core import wire
from omnicache_cluster.core.ring import Ring
from omnicache_cluster.errors import Moved, ShardUnavailable, Timeout

if TYPE_CHECKING:
    from omnicache_cluster.client import ClientOptions

__all__: list[str] = []

_log = logging.getLogger(__name__)

#: How long a shard whose direct port failed is reached through Ray calls only.
WIRE_BACKOFF_S = 30.0
_ASK = object()  # no endpoint known yet: ask the shard


class _Batch:
    """One multi-key shard operation and what is still outstanding."""

    __slots__ = ("args", "errors", "keys", "method", "moved_epoch", "pending", "results")

    def __init__(self, method: str, keys: Sequence[str], args: Sequence[Any] | None = None) -> None:
        self.method = method
        self.keys = keys
        # What is sent per position: the key itself, or a full set item.
        self.args = args if args is not None else keys
        self.results: list[Any] = [None] * len(keys)
        self.pending: list[int] = list(range(len(keys)))
        self.errors: list[tuple[int, int, int]] = []
        self.moved_epoch = 0

    def take_calls(self, ring: Ring) -> list[tuple[int, list[int], list[Any]]]:
        """Group the pending positions by owner; return ``(shard index, positions, arg)``."""
        groups: dict[int, list[int]] = defaultdict(list)
        for pos in self.pending:
            groups[ring.owner_index(self.keys[pos])].append(pos)
        self.pending = []
        self.moved_epoch = 0
        return [(idx, pos, [self.args[p] for p in pos]) for idx, pos in groups.items()]

    def retry(self, positions: list[int]) -> None:
        """Put positions back for the next round (their shard failed)."""
        self.pending.extend(positions)

    def feed(self, positions: list[int], reply: Any) -> None:
        """Take one shard's reply for ``positions``."""
        if self.method == "set_many":
            epoch, moved, errors, seq = reply
            # A set's result is the shard's change number after it (for the near-cache).
            values: Sequence[Any] = [seq] * len(positions)
            for i, size, limit in errors:
                self.errors.append((positions[i], size, limit))
        else:
            epoch, values, moved = reply
        skip = set(moved)
        if skip:
            self.pending.extend(positions[i] for i in moved)
            self.moved_epoch = max(self.moved_epoch, epoch)
        if values:
            results = self.results
            for i, pos in enumerate(positions):
                if i not in skip:
                    results[pos] = values[i]


class _Round:
    """Retry bookkeeping of one batch: rounds, deadline, last failure."""

    __slots__ = ("deadline", "failure", "opts", "rounds")

    def __init__(self, opts: ClientOptions) -> None:
        self.opts = opts
        self.deadline = time.monotonic() + opts.retry_deadline_s
        self.rounds = 0
        self.failure: Exception | None = None

    def next(self, moved_epoch: int) -> float:
        """Count a round; raise if out of rounds or time; return the backoff to sleep."""
        self.rounds += 1
        if moved_epoch and self.rounds > self.opts.max_moved_rounds:
            raise Moved(f"keys still moved after {self.rounds} ring refreshes", moved_epoch)
        if time.monotonic() > self.deadline:
            if isinstance(self.failure, Timeout):
                raise self.failure
            raise ShardUnavailable(
                f"shards did not answer within {self.opts.retry_deadline_s}s: {self.failure}"
            ) from self.failure
        return 0.0 if moved_epoch else min(0.05 * self.rounds, 0.5)


class _ClusterState:
    """Handles and ring of one cluster (Ray namespace), shared by all clients of a process."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.ring: Ring | None = None
        self.handles: dict[str, Any] = {}
        # Handles of the actors this process created, kept for the state's life apart
        # from ``handles`` (which `forget` drops): Ray destroys a non-detached actor,
        # even a named one restarting after a node died, once its creator holds none.
        self.owned: list[Any] = []
        self.coordinator: Any = None
        self.cluster_id = ""
        self.lock = threading.Lock()
        # Near-caches and their pollers by NearCacheOptions (see `omnicache_cluster._near`).
        self.nears: dict[Any, Any] = {}
        self.near_pollers: dict[Any, Any] = {}
        self.thread_batcher: Any = None
        # Direct ports (`omnicache_cluster.core.wire`): shard -> Endpoint, or None where
        # the shard has none; and when a shard whose port failed may be tried again.
        self.endpoints: dict[str, Any] = {}
        self.wire_off_until: dict[str, float] = {}
        self.wire_failed_ports: dict[str, tuple[str, int, bytes]] = {}

    def close(self) -> None:
        """Stop background work of this state (near-cache polling, connections)."""
        for poller in list(self.near_pollers.values()):
            poller.stop()
        self.near_pollers = {}
        self.nears = {}
        self.drop_endpoints()

    # -- direct ports ------------------------------------------------------------------

    def drop_endpoints(self, name: str | None = None) -> None:
        """Forget the direct port of shard ``name`` (every shard's if ``None``)."""
        with self.lock:
            if name is None:
                gone = list(self.endpoints.values())
                self.endpoints.clear()
            else:
                gone = [self.endpoints.pop(name, None)]
        for endpoint in gone:
            if endpoint is not None:
                endpoint.close()

    def wire_failed(self, name: str, exc: BaseException) -> None:
        """The direct port of ``name`` failed: ask the shard for its port again (a
        restarted shard has a new one); if it names the same port, use Ray calls for
        ``WIRE_BACKOFF_S``."""
        endpoint = self.endpoints.get(name)
        if endpoint is not None:
            self.wire_failed_ports[name] = (endpoint.host, endpoint.port, endpoint.token)
        _log.warning("direct port of %s failed (%s); data calls retried through Ray", name, exc)
        self.drop_endpoints(name)

    def _known_endpoint(self, name: str, opts: ClientOptions) -> Any:
        """The endpoint to use without asking the shard: an `Endpoint`, ``None`` (off,
        failed recently, or the shard has none), or `_ASK` (unknown yet)."""
        if not opts.fast_path:
            return None
        until = self.wire_off_until.get(name)
        if until is not None and time.monotonic() < until:
            return None
        return self.endpoints.get(name, _ASK)

    def endpoint_of(self, name: str, handle: Any, opts: ClientOptions) -> Any:
        """Return the `Endpoint` of shard ``name`` (asking the shard once), or ``None``
        when the direct port is off, failed recently, or the shard has none."""
        known = self._known_endpoint(name, opts)
        if known is not _ASK:
            return known
        import ray

        try:
            reply = ray.get(handle.wire_endpoint.remote(), timeout=opts.call_timeout_s)
        except Exception as exc:  # the data call that follows reports the shard's state
            _log.debug("no direct port for %s: %s", name, exc)
            return None
        return self._adopt_endpoint(name, reply)

    async def aendpoint_of(self, name: str, handle: Any, opts: ClientOptions) -> Any:
        """Async `endpoint_of`."""
        known = self._known_endpoint(name, opts)
        if known is not _ASK:
            return known
        try:
            reply = await asyncio.wait_for(handle.wire_endpoint.remote(), opts.call_timeout_s)
        except Exception as exc:
            _log.debug("no direct port for %s: %s", name, exc)
            return None
        return self._adopt_endpoint(name, reply)

    def _adopt_endpoint(self, name: str, reply: Any) -> Any:
        from omnicache_cluster._wire import Endpoint

        if reply is not None and tuple(reply) == self.wire_failed_ports.get(name):
            _log.warning(
                "direct port of %s still failing; its data calls go through Ray for %.0fs",
                name,
                WIRE_BACKOFF_S,
            )
            self.wire_off_until[name] = time.monotonic() + WIRE_BACKOFF_S
            self.wire_failed_ports.pop(name, None)
            return None
        endpoint = None if reply is None else Endpoint(name, *reply)
        with self.lock:
            old = self.endpoints.get(name)
            if old is not None:
                if endpoint is not None:
                    endpoint.close()
                return old
            self.endpoints[name] = endpoint
        return endpoint

    def adopt(self, epoch: int, members: Sequence[str], num_slots: int, cluster_id: str) -> Ring:
        """Install ring ``epoch`` unless a newer one is already here; return the current.

        A different ``cluster_id`` means the cluster in this namespace was replaced
        (Ray reuses worker processes across clusters): every cached handle is stale.
        """
        with self.lock:
            ring = self.ring
            if cluster_id != self.cluster_id:
                coordinator = self.coordinator
                self.handles.clear()
                gone, self.endpoints = list(self.endpoints.values()), {}
                for endpoint in gone:
                    if endpoint is not None:
                        endpoint.close()
                self.coordinator = coordinator
                self.cluster_id = cluster_id
                ring = None
                for near in list(self.nears.values()):  # nothing near is the new cluster's
                    near.drop_where(lambda _key, _tags: True)
            if ring is None or epoch > ring.epoch:
                ring = Ring(tuple(members), epoch, num_slots)
                self.ring = ring
            return ring

    def handle_of(self, name: str) -> Any:
        """Return the (cached) actor handle of ``name``; resolves by name once.

        Raises:
            ValueError: no actor of that name (Ray's error for an unknown name).
        """
        handle = self.handles.get(name)
        if handle is None:
            import ray

            handle = ray.get_actor(name, namespace=self.namespace)
            self.handles[name] = handle
        return handle

    def forget(self, name: str) -> None:
        """Drop a cached handle (its actor died; a new one may take the name)."""
        self.handles.pop(name, None)
        self.drop_endpoints(name)

    def forget_coordinator(self) -> None:
        """Drop the coordinator's handle (it died, or the cluster was replaced)."""
        from omnicache_cluster.actors.remote import COORDINATOR_NAME

        self.coordinator = None
        self.handles.pop(COORDINATOR_NAME, None)

    def coordinator_handle(self) -> Any:
        """Return the coordinator's handle."""
        if self.coordinator is None:
            from omnicache_cluster.actors.remote import COORDINATOR_NAME

            self.coordinator = self.handle_of(COORDINATOR_NAME)
        return self.coordinator

    # -- sync ------------------------------------------------------------------------

    def coordinator_call(self, method: str, *args: Any, opts: ClientOptions) -> Any:
        """Call the coordinator's ``method`` (an idempotent one), retrying while it
        restarts (Ray fails the first call after a restart) until the retry deadline."""
        import ray
        from ray.exceptions import ActorUnavailableError

        deadline = time.monotonic() + opts.retry_deadline_s
        while True:
            ref = getattr(self.coordinator_handle(), method).remote(*args)
            try:
                return ray.get(ref, timeout=opts.retry_deadline_s)
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def refresh_ring(self, opts: ClientOptions) -> Ring:
        """Fetch the ring from the coordinator and adopt it if newer."""
        import ray
        from ray.exceptions import RayActorError

        try:
            reply = ray.get(
                self.coordinator_handle().get_ring.remote(), timeout=opts.call_timeout_s
            )
        except (RayActorError, ValueError):
            self.forget_coordinator()
            raise
        return self.adopt(*reply)

    def current_ring(self, opts: ClientOptions) -> Ring:
        """Return the cached ring, fetching it on first use."""
        ring = self.ring
        return ring if ring is not None else self.refresh_ring(opts)

    def run(self, batch: _Batch, opts: ClientOptions) -> _Batch:
        """Drive ``batch`` to completion with blocking calls (one per shard per round)."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        state = _Round(opts)
        while batch.pending:
            ring = self.current_ring(opts)
            refs = []
            direct: list[tuple[str, list[int], Any, Any]] = []
            for idx, positions, arg in batch.take_calls(ring):
                name = ring.members[idx]
                try:
                    handle = self.handle_of(name)
                except ValueError as exc:  # the named actor is gone (being recreated)
                    state.failure = exc
                    batch.retry(positions)
                    continue
                endpoint = (
                    self.endpoint_of(name, handle, opts) if batch.method in wire.METHODS else None
                )
                if endpoint is not None:
                    direct.append((name, positions, arg, endpoint))
                else:
                    refs.append((name, positions, getattr(handle, batch.method).remote(arg)))
            sent = []  # every shard's request first, then the replies: in parallel
            for name, positions, arg, endpoint in direct:
                try:
                    sock = endpoint.send(batch.method, arg, opts.call_timeout_s)
                except (wire.WireError, TimeoutError) as exc:
                    state.failure = exc
                    self.wire_failed(name, exc)
                    batch.retry(positions)
                else:
                    sent.append((name, positions, endpoint, sock))
            for name, positions, endpoint, sock in sent:
                try:
                    batch.feed(positions, endpoint.receive(sock, batch.method))
                except (wire.WireError, TimeoutError) as exc:
                    state.failure = exc
                    self.wire_failed(name, exc)
                    batch.retry(positions)
            for name, positions, ref in refs:
                try:
                    batch.feed(positions, ray.get(ref, timeout=opts.call_timeout_s))
                except GetTimeoutError:
                    state.failure = Timeout(
                        f"shard {name} did not answer in {opts.call_timeout_s}s"
                    )
                    batch.retry(positions)
                except RayActorError as exc:
                    state.failure = exc
                    self.forget(name)
                    batch.retry(positions)
            if batch.pending:
                time.sleep(state.next(batch.moved_epoch))
                # Moved: a newer ring exists. Failed: the shard may have left the ring.
                try:
                    self.refresh_ring(opts)
                except (GetTimeoutError, RayActorError, ValueError) as exc:
                    state.failure = exc
        return batch

    def call_owner(
        self, skey: str, method: str, args: tuple[Any, ...], opts: ClientOptions, timeout: float
    ) -> tuple[Any, Any]:
        """Call ``method(*args)`` on the owner of ``skey``; return ``(reply, handle)``.

        A reply ``("moved", epoch)`` refreshes the ring and retries; a dead or
        restarting shard is retried until the deadline.
        """
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        state = _Round(opts)
        while True:
            name = self.current_ring(opts).owner(skey)
            moved = 0
            try:
                handle = self.handle_of(name)
                reply = ray.get(getattr(handle, method).remote(*args), timeout=timeout)
            except GetTimeoutError:
                raise Timeout(f"shard {name} did not answer {method} in {timeout}s") from None
            except (RayActorError, ValueError) as exc:
                state.failure = exc
                self.forget(name)
            else:
                if not (isinstance(reply, tuple) and reply and reply[0] == "moved"):
                    return reply, handle
                moved = reply[1]
            time.sleep(state.next(moved))
            try:
                self.refresh_ring(opts)
            except (GetTimeoutError, RayActorError, ValueError) as exc:
                state.failure = exc

    def broadcast(self, method: str, arg: Any, opts: ClientOptions) -> list[Any]:
        """Call ``method(arg)`` on every shard of the ring; return the replies."""
        import ray
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        deadline = time.monotonic() + opts.retry_deadline_s
        while True:
            ring = self.current_ring(opts)
            refs = [getattr(self.handle_of(n), method).remote(arg) for n in ring.members]
            try:
                return list(ray.get(refs, timeout=max(deadline - time.monotonic(), 0.001)))
            except GetTimeoutError as exc:
                raise Timeout(f"{method} did not finish in {opts.retry_deadline_s}s") from exc
            except ActorUnavailableError as exc:  # restarting: the broadcasts are idempotent
                if time.monotonic() > deadline:
                    raise ShardUnavailable(f"{method}: a shard is unavailable: {exc}") from exc
                time.sleep(0.1)
            except RayActorError as exc:
                raise ShardUnavailable(f"{method}: a shard is unavailable: {exc}") from exc

    # -- async -----------------------------------------------------------------------

    async def arefresh_ring(self, opts: ClientOptions) -> Ring:
        """Async `refresh_ring`."""
        from ray.exceptions import RayActorError

        try:
            coord = self.coordinator
            if coord is None:
                coord = await asyncio.to_thread(self.coordinator_handle)
            reply = await asyncio.wait_for(coord.get_ring.remote(), opts.call_timeout_s)
        except (RayActorError, ValueError):
            self.forget_coordinator()
            raise
        return self.adopt(*reply)

    async def acurrent_ring(self, opts: ClientOptions) -> Ring:
        """Async `current_ring`."""
        ring = self.ring
        return ring if ring is not None else await self.arefresh_ring(opts)

    async def ahandle_of(self, name: str) -> Any:
        """Async `handle_of`: resolving a name is a blocking GCS call, done off the loop."""
        handle = self.handles.get(name)
        return handle if handle is not None else await asyncio.to_thread(self.handle_of, name)

    async def arun(self, batch: _Batch, opts: ClientOptions) -> _Batch:
        """Drive ``batch`` to completion without blocking the event loop."""
        from ray.exceptions import RayActorError

        state = _Round(opts)
        while batch.pending:
            ring = await self.acurrent_ring(opts)
            calls = []
            for idx, positions, arg in batch.take_calls(ring):
                name = ring.members[idx]
                try:
                    handle = await self.ahandle_of(name)
                except ValueError as exc:
                    state.failure = exc
                    batch.retry(positions)
                    continue
                endpoint = (
                    await self.aendpoint_of(name, handle, opts)
                    if batch.method in wire.METHODS
                    else None
                )
                if endpoint is not None:
                    call = endpoint.acall(batch.method, arg, opts.call_timeout_s)
                else:
                    call = asyncio.wait_for(
                        getattr(handle, batch.method).remote(arg), opts.call_timeout_s
                    )
                calls.append((name, positions, endpoint is not None, call))
            if len(calls) == 1:  # the common case of a batch: no gather needed
                try:
                    replies = [await calls[0][3]]
                except Exception as exc:
                    replies = [exc]
            else:
                replies = await asyncio.gather(*(c[3] for c in calls), return_exceptions=True)
            for (name, positions, is_direct, _), reply in zip(calls, replies, strict=True):
                if is_direct and isinstance(reply, wire.WireError | TimeoutError):
                    state.failure = reply
                    self.wire_failed(name, reply)
                    batch.retry(positions)
                elif isinstance(reply, TimeoutError):
                    state.failure = Timeout(
                        f"shard {name} did not answer in {opts.call_timeout_s}s"
                    )
                    batch.retry(positions)
                elif isinstance(reply, RayActorError):
                    state.failure = reply
                    self.forget(name)
                    batch.retry(positions)
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    batch.feed(positions, reply)
            if batch.pending:
                await asyncio.sleep(state.next(batch.moved_epoch))
                try:
                    await self.arefresh_ring(opts)
                except (TimeoutError, RayActorError, ValueError) as exc:
                    state.failure = exc
        return batch

    async def acall_owner(
        self, skey: str, method: str, args: tuple[Any, ...], opts: ClientOptions, timeout: float
    ) -> tuple[Any, Any]:
        """Async `call_owner`."""
        from ray.exceptions import RayActorError

        state = _Round(opts)
        while True:
            name = (await self.acurrent_ring(opts)).owner(skey)
            moved = 0
            try:
                handle = await self.ahandle_of(name)
                reply = await asyncio.wait_for(getattr(handle, method).remote(*args), timeout)
            except TimeoutError:
                raise Timeout(f"shard {name} did not answer {method} in {timeout}s") from None
            except (RayActorError, ValueError) as exc:
                state.failure = exc
                self.forget(name)
            else:
                if not (isinstance(reply, tuple) and reply and reply[0] == "moved"):
                    return reply, handle
                moved = reply[1]
            await asyncio.sleep(state.next(moved))
            try:
                await self.arefresh_ring(opts)
            except (TimeoutError, RayActorError, ValueError) as exc:
                state.failure = exc

    async def abroadcast(self, method: str, arg: Any, opts: ClientOptions) -> list[Any]:
        """Async `broadcast`."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        deadline = time.monotonic() + opts.retry_deadline_s
        while True:
            ring = await self.acurrent_ring(opts)
            handles = [await self.ahandle_of(n) for n in ring.members]
            try:
                return list(
                    await asyncio.wait_for(
                        asyncio.gather(*(getattr(h, method).remote(arg) for h in handles)),
                        max(deadline - time.monotonic(), 0.001),
                    )
                )
            except TimeoutError as exc:
                raise Timeout(f"{method} did not finish in {opts.retry_deadline_s}s") from exc
            except ActorUnavailableError as exc:  # see `broadcast`
                if time.monotonic() > deadline:
                    raise ShardUnavailable(f"{method}: a shard is unavailable: {exc}") from exc
                await asyncio.sleep(0.1)
            except RayActorError as exc:
                raise ShardUnavailable(f"{method}: a shard is unavailable: {exc}") from exc


_STATES: dict[str, _ClusterState] = {}
_STATES_LOCK = threading.Lock()


def state_for(namespace: str) -> _ClusterState:
    """Return this process's routing state of the cluster in ``namespace``."""
    state = _STATES.get(namespace)
    if state is None:
        with _STATES_LOCK:
            state = _STATES.setdefault(namespace, _ClusterState(namespace))
    return state


def drop_state(namespace: str) -> None:
    """Forget the routing state of ``namespace`` (after a shutdown)."""
    with _STATES_LOCK:
        state = _STATES.pop(namespace, None)
    if state is not None:
        state.close()
