"""`CacheCluster`: the client of the cache cluster, in every process that uses it.

It builds keys, encodes values, routes each key to its shard by the cached ring, makes
one call per shard for multi-key operations (issued concurrently), and talks to the
coordinator only when a shard answers *moved*. It pickles to names, so passing it into
a Ray task or actor gives that process a client of the same cluster.

Every method has an async twin (``aget``, ``aset``, ...). Sync methods refuse to run
inside a running event loop, where they would block it: the error names the async
method to use instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar

from omnicache_cluster._batching import ThreadBatcher, async_batcher
from omnicache_cluster._near import (
    anear_fetch,
    near_drop,
    near_fetch,
    near_for,
    near_put_many,
    near_sync,
)
from omnicache_cluster._routing import _Batch, _ClusterState, drop_state, state_for
from omnicache_cluster.config import L2Config, OmnicacheSettings
from omnicache_cluster.core import wire
from omnicache_cluster.core.codec import CODEC_JSON, CODEC_MSGPACK, Serializer
from omnicache_cluster.core.keys import validate_part
from omnicache_cluster.core.nearcache import NO_VALUE, NearCacheOptions
from omnicache_cluster.core.quota import TenantQuota
from omnicache_cluster.core.ring import DEFAULT_SLOTS
from omnicache_cluster.core.scope import DEFAULT_LAYER, KeyScope, check_ttl
from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.errors import (
    CodecError,
    ConfigError,
    ValueTooLarge,
)

if TYPE_CHECKING:
    from omnicache_cluster.actors._migration import MigrationOptions
    from omnicache_cluster.observability.metrics import ActorMetricsConfig
    from omnicache_cluster.placement import ShardPlacement

__all__ = ["CacheCluster", "ClientOptions"]

T = TypeVar("T")

_log = logging.getLogger(__name__)

# Values a near hit may hand to several callers as one object.
_IMMUTABLE = frozenset({str, bytes, int, float, bool, type(None)})

DEFAULT_NAMESPACE = "omnicache"


@dataclass(frozen=True)
class ClientOptions:
    """How a client talks to the cluster.

    Attributes:
        max_value_bytes: the largest encoded value accepted; larger ones raise
            `ValueTooLarge` before anything is sent.
        call_timeout_s: how long one shard call may take before it counts as failed.
        retry_deadline_s: how long a call keeps retrying unavailable shards.
        max_moved_rounds: how many ring refreshes one call may go through.
        serializer: the value serializer (msgpack + lz4 by default).
        near_cache: the per-process near-cache (L0), off when ``None``.
        batching: coalesce concurrent single-key calls into one call per shard.
        fast_path: send data calls (get, set, delete, exists) to each shard's direct
            TCP port instead of through Ray calls, falling back to Ray calls when the
            port cannot be used (see `omnicache_cluster.core.wire`; TLS under
            ``RAY_USE_TLS``); also off in a process with ``OMNICACHE_FAST_PATH=0``, or
            with ``RAY_USE_TLS`` but no readable Ray certificates.
    """

    max_value_bytes: int = 16 * 1024 * 1024
    call_timeout_s: float = 10.0
    retry_deadline_s: float = 20.0
    max_moved_rounds: int = 8
    serializer: Serializer = field(default_factory=Serializer)
    near_cache: NearCacheOptions | None = None
    batching: bool = True
    fast_path: bool = field(default_factory=wire.enabled_here)

    def __hash__(self) -> int:
        # Hashed on every batched call (options group the batches): computed once.
        try:
            return self._hash  # type: ignore[attr-defined,no-any-return]
        except AttributeError:
            h = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", h)
            return h

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_hash", None)  # recomputed in the receiving process
        return state

    def __post_init__(self) -> None:
        if not isinstance(self.max_value_bytes, int) or self.max_value_bytes <= 0:
            raise ConfigError(
                f"max_value_bytes must be a positive int, got {self.max_value_bytes!r}"
            )
        for name in ("call_timeout_s", "retry_deadline_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")


def _no_running_loop(method: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"CacheCluster.{method}() blocks and was called inside a running event loop; "
        f"use `await cluster.a{method}(...)` instead"
    )


def _ensure_local_ray(**init_kwargs: Any) -> str | None:
    """Start a local single-node Ray if none is running.

    Returns the dashboard URL when Ray was started here (``""`` without a dashboard),
    ``None`` when Ray was already running.
    """
    # Ray reads this when it is imported: without it, Ray 2.60 listens on the machine's
    # non-loopback address. Local mode keeps every socket on 127.0.0.1.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return None
    if init_kwargs.get("address") is None and os.environ.get("RAY_ADDRESS") is None:
        init_kwargs.setdefault("_node_ip_address", "127.0.0.1")
        init_kwargs.setdefault("dashboard_host", "127.0.0.1")
    init_kwargs.setdefault("logging_level", logging.WARNING)
    context = ray.init(**init_kwargs)
    url = getattr(context, "dashboard_url", None) or ""
    return f"http://{url}" if url and not url.startswith("http") else url


class CacheCluster:
    """A client of one cache cluster, scoped to a key namespace and a tenant.

    Get one from `CacheCluster.start` (creates the actors) or `CacheCluster.connect`
    (attaches to running ones), then `for_tenant` for a tenant-scoped client. A scoped
    client builds every key with its own tenant, so it cannot name, read, invalidate,
    flush or see the stats of another tenant's entries.

    Keys are anything with a canonical encoding (a ``str`` usually, or a tuple, dict,
    ...) hashed into ``namespace:tenant:layer:digest``, or a ready `CacheKey` of this
    client's namespace and tenant.
    """

    def __init__(
        self,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        tenant: str = "default",
        key_namespace: str | None = None,
        options: ClientOptions | None = None,
        _admin: bool = True,
        _owns_ray: bool = False,
    ) -> None:
        self._namespace = validate_part("namespace", namespace)
        self._tenant = validate_part("tenant", tenant)
        self._key_ns = validate_part(
            "key_namespace", namespace if key_namespace is None else key_namespace
        )
        self._options = options or ClientOptions()
        self._admin = _admin
        self._owns_ray = _owns_ray
        self._ser = self._options.serializer
        self._scope = KeyScope(self._key_ns, self._tenant)
        self._state: _ClusterState = state_for(self._namespace)
        #: The Ray dashboard's URL when `start` started Ray with a dashboard.
        self.dashboard_url: str | None = None

    # -- life cycle -------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        num_shards: int = 2,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        max_bytes_per_shard: int = 256 * 1024 * 1024,
        max_entries_per_shard: int | None = None,
        num_slots: int = DEFAULT_SLOTS,
        options: ClientOptions | None = None,
        detached: bool = False,
        scheduling_strategy: str | None = "SPREAD",
        shard_options: Mapping[str, Any] | None = None,
        ray_init: Mapping[str, Any] | None = None,
        tenant_quotas: Mapping[str, TenantQuota] | None = None,
        l2: L2Config | None = None,
        settings: OmnicacheSettings | None = None,
        metrics: bool | ActorMetricsConfig = True,
        placement: str | ShardPlacement = "spread",
        shard_resources: Mapping[str, Any] | None = None,
        coordinator_options: Mapping[str, Any] | None = None,
        semantic_options: Mapping[str, Any] | None = None,
    ) -> CacheCluster:
        """Create the coordinator and ``num_shards`` shard actors; return an admin client.

        Starts a local single-node Ray (bound to 127.0.0.1) when none is running.

        Args:
            num_shards: how many shard actors.
            namespace: the Ray namespace the actors are named in; also the default key
                namespace. Another process attaches with ``connect(namespace=...)``.
            max_bytes_per_shard: each shard's byte budget (LRU eviction past it).
            max_entries_per_shard: an optional entry bound per shard.
            num_slots: the fixed slot count of the ring.
            options: client options (value size limit, timeouts, serializer).
            detached: keep the actors alive after this driver exits.
            scheduling_strategy: Ray scheduling strategy for the shards.
            shard_options: extra ``ray.remote`` options for shards (``num_cpus``, ...).
            ray_init: keyword arguments for ``ray.init`` when Ray is started here.
            tenant_quotas: limits per tenant (bytes, computes); `set_tenant_quota`
                changes them at runtime.
            l2: the shards' durable tier (Redis or disk, write-through or -behind);
                ``None`` keeps entries in memory only.
            settings: `OmnicacheSettings`; when given, they set ``num_shards``,
                ``namespace`` (their ``ray_namespace``), ``max_bytes_per_shard``, the
                client's key namespace and, unless ``l2`` is given, the L2.
            metrics: export the actors' metrics to Ray (``ray.util.metrics``), with
                default settings (``True``), these (an `ActorMetricsConfig`), or not.
            placement: ``"spread"`` (default), ``"strict_spread"`` (a placement group,
                one node per shard) or ``"default"``; or a `ShardPlacement`. See
                `omnicache_cluster.placement`.
            shard_resources: ``num_cpus``, ``memory`` (bytes), ``resources`` and
                ``label_selector`` of each shard.
            coordinator_options: Ray options of the coordinator (e.g. a node type's
                custom resource); the coordinator is detached unless
                ``ShardPlacement.coordinator_detached`` is off.
            semantic_options: Ray options of the semantic index actor.

        Raises:
            ValueError: a bad argument (names it).
            ConfigError: a cluster already runs in ``namespace``.
        """
        if settings is not None:
            num_shards, namespace = settings.num_shards, settings.ray_namespace
            max_bytes_per_shard = settings.max_bytes_per_shard
            l2 = settings.l2_config() if l2 is None else l2
        if l2 is not None and not isinstance(l2, L2Config):
            raise TypeError(f"l2 must be an L2Config or None, got {type(l2).__qualname__}")
        if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
            raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")
        if not isinstance(max_bytes_per_shard, int) or max_bytes_per_shard <= 0:
            raise ValueError(
                f"max_bytes_per_shard must be a positive int, got {max_bytes_per_shard!r}"
            )
        validate_part("namespace", namespace)
        dashboard = _ensure_local_ray(**dict(ray_init or {}))
        import ray

        from omnicache_cluster.actors.coordinator import CoordinatorConfig
        from omnicache_cluster.actors.remote import (
            COORDINATOR_NAME,
            SHARD_PREFIX,
            coordinator_actor,
            shard_actor,
            shard_name,
        )
        from omnicache_cluster.actors.shard import ShardConfig
        from omnicache_cluster.observability.metrics import ActorMetricsConfig

        if not isinstance(metrics, bool | ActorMetricsConfig):
            raise TypeError(f"metrics must be a bool or an ActorMetricsConfig, got {metrics!r}")
        mcfg = ActorMetricsConfig() if metrics is True else (metrics or None)
        from omnicache_cluster._scale import cluster_running
        from omnicache_cluster.placement import ShardPlacement, group_name

        spec = ShardPlacement.build(
            placement,
            shard_resources=shard_resources,
            coordinator_options=coordinator_options,
            semantic_options=semantic_options,
            scheduling_strategy=scheduling_strategy,
            shard_options=shard_options,
            detached=detached,
        )
        if cluster_running(namespace):  # (a coordinator left without shards is stopped)
            raise ConfigError(
                f"a cache cluster already runs in namespace {namespace!r}; "
                f"use CacheCluster.connect(namespace={namespace!r})"
            )
        quotas = dict(tenant_quotas or {})
        for tenant, quota in quotas.items():
            if not isinstance(quota, TenantQuota):
                raise TypeError(f"quota of {tenant!r} must be a TenantQuota, got {quota!r}")
        drop_state(namespace)
        group = spec.reserve(num_shards, group_name(namespace, "start"), detached=detached)
        nodes = spec.spread_nodes(num_shards)
        cluster_id = uuid.uuid4().hex
        members = tuple(shard_name(i) for i in range(num_shards))
        shards = [
            shard_actor(
                ShardConfig(
                    name=name,
                    namespace=namespace,
                    coordinator=COORDINATOR_NAME,
                    max_bytes=max_bytes_per_shard,
                    max_entries=max_entries_per_shard,
                    num_slots=num_slots,
                    l2=l2,
                    metrics=mcfg,
                ),
                1,
                members,
                detached=detached,
                **spec.shard_ray_options(group, i, nodes[i]),
            )
            for i, name in enumerate(members)
        ]
        coord = coordinator_actor(
            CoordinatorConfig(
                namespace=namespace,
                shard_prefix=SHARD_PREFIX,
                members=members,
                num_slots=num_slots,
                cluster_id=cluster_id,
                tenant_quotas=tuple((validate_part("tenant", t), q) for t, q in quotas.items()),
                metrics=mcfg,
                placement=spec,
            ),
            detached=detached or spec.coordinator_detached,
            **spec.coordinator_ray_options(),
        )
        ray.get([s.ping.remote() for s in shards] + [coord.ping.remote()])
        if quotas:  # the shards enforce their share of each tenant's byte budget
            ray.get(coord.publish.remote())
        key_ns = settings.namespace if settings is not None else None
        client = cls(
            namespace, key_namespace=key_ns, options=options, _owns_ray=dashboard is not None
        )
        client.dashboard_url = dashboard or None
        state = client._state
        state.coordinator = coord
        state.adopt(1, members, num_slots, cluster_id)
        state.handles.update(zip(members, shards, strict=True))
        state.owned.extend([*shards, coord])
        return client

    @classmethod
    def connect(
        cls,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        address: str | None = None,
        options: ClientOptions | None = None,
    ) -> CacheCluster:
        """Attach to the cluster running in ``namespace``; return an admin client.

        Calls ``ray.init(address=address or "auto")`` first when Ray is not initialised
        in this process.

        Raises:
            ConfigError: no cluster runs in ``namespace``.
        """
        validate_part("namespace", namespace)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        if not ray.is_initialized():
            ray.init(address=address or "auto", logging_level=logging.WARNING)
        client = cls(namespace, options=options)
        try:
            client._state.refresh_ring(client._options)
        except ValueError:
            raise ConfigError(f"no cache cluster runs in namespace {namespace!r}") from None
        return client

    def add_shard(self) -> str:
        """Add one shard like the existing ones and move the ring to a new epoch.

        Entries of the slots the new shard takes over are not migrated: they become
        misses at their new owner (live migration is part of ``scale``). Returns the
        new shard's name.

        Raises:
            PermissionError: called on a tenant-scoped client.
        """
        import dataclasses

        import ray

        from omnicache_cluster.actors.remote import SHARD_PREFIX, shard_actor, shard_name

        self._require_admin("add_shard")
        ring = self._state.refresh_ring(self._options)
        template = ray.get(self._state.handle_of(ring.members[0]).config.remote())
        used = {int(m[len(SHARD_PREFIX) :]) for m in ring.members if m.startswith(SHARD_PREFIX)}
        name = shard_name(max(used, default=-1) + 1)
        members = (*ring.members, name)
        handle = shard_actor(dataclasses.replace(template, name=name), 0, ())
        ray.get(handle.ping.remote())
        self._state.handles[name] = handle
        self._state.owned.append(handle)
        ray.get(self._state.coordinator_handle().set_members.remote(members))
        self._state.refresh_ring(self._options)
        return name

    def remove_shard(self, name: str) -> None:
        """Take shard ``name`` out of the ring (new epoch), then stop it.

        Its entries are dropped (live migration is part of ``scale``).

        Raises:
            PermissionError: called on a tenant-scoped client.
            ValueError: ``name`` is not a member, or it is the last one.
        """
        import ray

        self._require_admin("remove_shard")
        ring = self._state.refresh_ring(self._options)
        if name not in ring.members:
            raise ValueError(f"{name!r} is not a shard of this cluster: {list(ring.members)}")
        if len(ring.members) == 1:
            raise ValueError("cannot remove the last shard")
        members = tuple(m for m in ring.members if m != name)
        ray.get(self._state.coordinator_handle().set_members.remote(members))
        self._state.refresh_ring(self._options)
        handle = self._state.handle_of(name)
        try:  # its dirty write-behind entries go to L2 first
            ray.get(handle.flush_l2.remote(), timeout=self._options.retry_deadline_s)
        except Exception as exc:
            _log.warning("remove_shard: %s could not flush its L2: %s", name, exc)
        ray.kill(handle, no_restart=True)
        self._state.forget(name)

    def scale(
        self,
        num_shards: int,
        *,
        options: MigrationOptions | None = None,
        timeout_s: float = 3600.0,
    ) -> dict[str, Any]:
        """Add or remove shards while traffic runs, moving live entries.

        The coordinator creates (or stops) shards and moves every slot whose owner
        changes from its old owner to its new one, streamed in batches; reads that
        miss at the new owner meanwhile ask the old owner (then L2). No acknowledged
        write is lost and no client reads a value older than one it already read,
        with or without L2 (`omnicache_cluster.actors._migration`).

        Args:
            num_shards: the shard count to reach.
            options: batch sizes and pacing of the stream (`MigrationOptions`).
            timeout_s: how long to wait for the step.

        Returns:
            The step's report: ``epoch``, ``added``, ``removed``, ``slots_moved``,
            ``entries_moved``, ``moved_share`` against ``ideal_share``, ``seconds``,
            ``complete``...

        Raises:
            PermissionError: called on a tenant-scoped client.
            ShardUnavailable: a shard could not be prepared (nothing changed).
            Timeout: the step did not finish within ``timeout_s`` (it goes on).
        """
        _no_running_loop("scale")
        from omnicache_cluster._scale import scale

        return scale(self, num_shards, options=options, timeout_s=timeout_s)

    async def ascale(
        self,
        num_shards: int,
        *,
        options: MigrationOptions | None = None,
        timeout_s: float = 3600.0,
    ) -> dict[str, Any]:
        """Async `scale`."""
        from omnicache_cluster._scale import ascale

        return await ascale(self, num_shards, options=options, timeout_s=timeout_s)

    def _flush_l2(self, timeout_s: float = 10.0) -> None:
        """Have every shard write its dirty L2 entries (write-behind) before it stops."""
        import ray

        ring = self._state.ring
        if ring is None:
            return
        try:
            refs = [self._state.handle_of(n).flush_l2.remote(timeout_s) for n in ring.members]
            left = sum(ray.get(refs, timeout=timeout_s + 5))
        except Exception as exc:  # a dead shard has nothing to flush
            _log.warning("shutdown: could not flush every shard's L2: %s", exc)
            return
        if left:
            _log.warning("shutdown: %d dirty entries did not reach L2", left)

    @property
    def ring_epoch(self) -> int:
        """The ring epoch this process routes with (0 before the first call)."""
        ring = self._state.ring
        return ring.epoch if ring is not None else 0

    def _require_admin(self, what: str) -> None:
        if not self._admin:
            raise PermissionError(f"{what} needs an admin client, not a tenant-scoped one")

    def shutdown(self, *, stop_ray: bool | None = None) -> None:
        """Kill the cluster's actors (all entries are lost without L2).

        Shards first write their dirty write-behind entries to L2 (graceful shutdown).

        Args:
            stop_ray: also shut Ray down; by default only if `start` started it.
        """
        import ray

        from omnicache_cluster.actors.remote import (
            COORDINATOR_NAME,
            SEMANTIC_INDEX_NAME,
            SHARD_PREFIX,
        )

        self._flush_l2()
        names = [COORDINATOR_NAME, SEMANTIC_INDEX_NAME]
        try:
            names += [
                entry["name"]
                for entry in ray.util.list_named_actors(all_namespaces=True)
                if entry["namespace"] == self._namespace and entry["name"].startswith(SHARD_PREFIX)
            ]
        except Exception:  # listing is best effort; the ring members are known anyway
            _log.debug("could not list named actors", exc_info=True)
        ring = self._state.ring
        names += list(ring.members) if ring else []
        for name in dict.fromkeys(names):
            try:
                ray.kill(ray.get_actor(name, namespace=self._namespace), no_restart=True)
            except ValueError:
                continue
        from omnicache_cluster.placement import remove_groups

        remove_groups(self._namespace)
        drop_state(self._namespace)
        if stop_ray or (stop_ray is None and self._owns_ray):
            ray.shutdown()

    # -- scoping ----------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        """The Ray namespace of the cluster's actors."""
        return self._namespace

    @property
    def key_namespace(self) -> str:
        """The namespace part of this client's keys."""
        return self._key_ns

    @property
    def tenant(self) -> str:
        """The tenant of this client's keys."""
        return self._tenant

    @property
    def options(self) -> ClientOptions:
        """This client's options."""
        return self._options

    def for_tenant(self, tenant: str) -> CacheCluster:
        """Return a client scoped to ``tenant`` (it can see nothing of other tenants)."""
        return CacheCluster(
            self._namespace,
            tenant=tenant,
            key_namespace=self._key_ns,
            options=self._options,
            _admin=False,
        )

    def with_key_namespace(self, key_namespace: str) -> CacheCluster:
        """Return a client of the same cluster and tenant under another key namespace."""
        return CacheCluster(
            self._namespace,
            tenant=self._tenant,
            key_namespace=key_namespace,
            options=self._options,
            _admin=self._admin,
        )

    def with_options(self, **changes: Any) -> CacheCluster:
        """Return a client with some `ClientOptions` fields changed."""
        return CacheCluster(
            self._namespace,
            tenant=self._tenant,
            key_namespace=self._key_ns,
            options=replace(self._options, **changes),
            _admin=self._admin,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # By name: the receiving process resolves handles and the ring itself.
        return (_rebuild, (self._namespace, self._tenant, self._key_ns, self._options, self._admin))

    def __repr__(self) -> str:
        return (
            f"CacheCluster(namespace={self._namespace!r}, key_namespace={self._key_ns!r}, "
            f"tenant={self._tenant!r})"
        )

    # -- keys and values --------------------------------------------------------------

    def key(self, key: Any, layer: str = DEFAULT_LAYER) -> str:
        """Return the stored key string of ``key`` in ``layer`` for this client."""
        return self._scope.key(key, layer)

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` for storage.

        Raises:
            TypeError: the value cannot be encoded (names the type).
            ValueTooLarge: the encoded value is over ``max_value_bytes``.
        """
        data = self._ser.dumps(value)
        if len(data) > self._options.max_value_bytes:
            raise ValueTooLarge(len(data), self._options.max_value_bytes)
        return data

    def _near_value(self, entry: Any, default: Any) -> Any:
        """The value of a near hit; an immutable one is kept decoded in the entry.

        Only envelopes of the built-in msgpack / JSON codecs are kept decoded: every
        reader decodes those the same way (a pickle envelope is this reader's call).
        """
        if not self._ser.builtin_codecs:  # its own codec under a built-in id
            return self._decode(entry.data, default)
        value = entry.value
        if value is not NO_VALUE:
            return value
        value = self._decode(entry.data, default)
        if type(value) in _IMMUTABLE and entry.data[3] in (CODEC_MSGPACK, CODEC_JSON):
            entry.value = value
        return value

    def _decode(self, data: bytes | None, default: Any) -> Any:
        if data is None:
            return default
        try:
            return self._ser.loads(data)
        except CodecError as exc:  # corrupt, foreign or unsigned bytes (from L2): a miss
            from omnicache_cluster._flight import record_fault

            record_fault("decode", exc)
            return default

    def _set_items(
        self,
        pairs: Iterable[tuple[Any, Any]],
        ttl: float | None,
        tags: Iterable[str] | None,
        layer: str,
    ) -> tuple[list[str], list[tuple[str, bytes, float | None, tuple[str, ...]]]]:
        ttl = check_ttl(ttl)
        scoped_tags = self._scope.tags(tags)
        keys, items = [], []
        for k, v in pairs:
            skey = self.key(k, layer)
            keys.append(skey)
            items.append((skey, self.encode(v), ttl, scoped_tags))
        return keys, items

    @staticmethod
    def _pairs(items: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        if isinstance(items, Mapping):
            return list(items.items())
        return [(k, v) for k, v in items]

    @staticmethod
    def _set_errors(batch: _Batch) -> None:
        if batch.errors:
            _pos, size, limit = batch.errors[0]
            raise ValueTooLarge(size, limit)

    # -- sync API ---------------------------------------------------------------------

    def get(self, key: Any, default: Any = MISS, *, layer: str = DEFAULT_LAYER) -> Any:
        """Return the value of ``key``, or ``default`` (`MISS`) if absent or expired."""
        _no_running_loop("get")
        skey = self.key(key, layer)
        if self._options.near_cache is not None:
            near = near_for(self, layer)
            if near is not None:
                entry = near.lookup(skey)
                if entry is not None:
                    return self._near_value(entry, default)
                return self._decode(near_fetch(self, near, skey), default)
        return self._decode(self._raw_get(skey), default)

    def _lookup_raw(self, skey: str, layer: str) -> bytes | None:
        """The stored envelope of ``skey``: near-cache first when ``layer`` has one."""
        if self._options.near_cache is not None:
            near = near_for(self, layer)
            if near is not None:
                entry = near.lookup(skey)
                return entry.data if entry is not None else near_fetch(self, near, skey)
        return self._raw_get(skey)

    async def _alookup_raw(self, skey: str, layer: str) -> bytes | None:
        """Async `_lookup_raw`."""
        if self._options.near_cache is not None:
            near = near_for(self, layer)
            if near is not None:
                entry = near.lookup(skey)
                return entry.data if entry is not None else await anear_fetch(self, near, skey)
        return await self._araw_get(skey)

    def _thread_batcher(self) -> ThreadBatcher:
        state = self._state
        if state.thread_batcher is None:
            with state.lock:
                if state.thread_batcher is None:
                    state.thread_batcher = ThreadBatcher(state)
        return state.thread_batcher  # type: ignore[no-any-return]

    def _raw_get(self, skey: str) -> bytes | None:
        """Return the stored envelope of ``skey``, or ``None`` (batched across threads)."""
        if not self._options.batching:
            return self._direct_get(skey)
        return self._thread_batcher().call(  # type: ignore[no-any-return]
            "get_many", skey, None, self._options, lambda: self._direct_get(skey)
        )

    def _direct_get(self, skey: str) -> bytes | None:
        """One call to the owner of ``skey`` (the slow path handles moved and retries)."""
        ring = self._state.current_ring(self._options)
        name = ring.members[ring.owner_index(skey)]
        handle = self._state.handles.get(name)
        if handle is not None:
            import ray
            from ray.exceptions import GetTimeoutError, RayActorError

            timeout = self._options.call_timeout_s
            endpoint = self._state.endpoint_of(name, handle, self._options)
            if endpoint is not None:
                try:
                    reply = endpoint.call("get", skey, timeout)
                except (wire.WireError, TimeoutError) as exc:  # Ray calls from now on
                    self._state.wire_failed(name, exc)
                else:
                    if type(reply) is not int:  # an int is the shard's epoch: moved
                        return reply  # type: ignore[no-any-return]
                    return self._do("get_many", [skey]).results[0]  # type: ignore[no-any-return]
            try:
                reply = ray.get(handle.get.remote(skey), timeout=timeout)
            except GetTimeoutError:  # (a dead node's shard): the slow path retries
                reply = 0
            except RayActorError:  # restarting or gone: the slow path retries and reroutes
                self._state.forget(name)
                reply = 0
            if type(reply) is not int:  # an int is the shard's epoch: moved
                return reply  # type: ignore[no-any-return]
        return self._do("get_many", [skey]).results[0]  # type: ignore[no-any-return]

    def _raw_set(self, skey: str, data: bytes, ttl: float | None, tags: tuple[str, ...]) -> int:
        """Store an envelope already encoded (and checked) by `encode`; return the
        shard's change number after the write."""
        item = (skey, data, ttl, tags)
        if not self._options.batching:
            return self._set_one_direct(item)
        result = self._thread_batcher().call(
            "set_many", skey, item, self._options, lambda: self._set_one_direct(item)
        )
        if isinstance(result, tuple):  # (size, limit): the shard refused it
            raise ValueTooLarge(*result)
        return result  # type: ignore[no-any-return]

    def _set_one_direct(self, item: tuple[str, bytes, float | None, tuple[str, ...]]) -> int:
        batch = self._do("set_many", [item[0]], [item])
        self._set_errors(batch)
        return batch.results[0]  # type: ignore[no-any-return]

    def get_or_compute(
        self,
        key: Any,
        fn: Callable[[], T],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
        wait_timeout: float = 600.0,
        lease_ttl: float = 10.0,
    ) -> T:
        """Return the cached value of ``key``, computing it with ``fn()`` on a miss.

        On a miss exactly one caller in the whole cluster runs ``fn``; concurrent
        callers of the same key wait for its value (or get its exception, with its
        type). The leader holds a lease of ``lease_ttl`` seconds, renewed while ``fn``
        runs; if its process dies, a waiter takes over once the lease runs out.

        A cache fault (shard or coordinator unreachable, undecodable bytes) never
        reaches the caller: ``fn`` runs, and the fault is counted and logged.

        Args:
            key: the key (see `get`).
            fn: computes the value; called with no arguments.
            ttl: seconds the computed value lives.
            tags: tags of the computed value.
            layer: the key's layer.
            wait_timeout: how long a waiter waits for the leader.
            lease_ttl: the leader's lease, renewed every third of it.

        Raises:
            Timeout: waited ``wait_timeout`` seconds for the leader.
            QuotaExceeded: the tenant is over a compute limit with policy ``raise``.
            Exception: whatever ``fn`` (this caller's or the leader's) raised.
        """
        _no_running_loop("get_or_compute")
        from omnicache_cluster._flight import get_or_compute

        ttl, stags, wait_timeout, lease_ttl = self._flight_args(ttl, tags, wait_timeout, lease_ttl)
        return get_or_compute(
            self,
            key,
            fn,
            ttl=ttl,
            tags=stags,
            layer=layer,
            wait_timeout=wait_timeout,
            lease_ttl=lease_ttl,
        )

    def get_or_compute_many(
        self,
        keys: Iterable[Any],
        fn_many: Callable[[list[Any]], Sequence[Any]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
        wait_timeout: float = 600.0,
        lease_ttl: float = 10.0,
    ) -> list[Any]:
        """Return the values of ``keys`` in order, computing the missing ones with
        ``fn_many(missing keys) -> their values`` (a batch embedding call, say), each key
        once cluster-wide.

        One batch lookup; the keys it misses are leased without waiting, and the ones
        this caller leads (plus any another caller gave up) are computed in one call of
        ``fn_many`` each round (at most two); keys other callers are computing are
        waited for after that. Faults fail open as in `get_or_compute`.

        Raises:
            ValueError: ``fn_many`` returned another number of values than keys.
            Timeout: waited ``wait_timeout`` seconds for another caller's key.
            Exception: whatever ``fn_many`` (this caller's or another's) raised.
        """
        _no_running_loop("get_or_compute_many")
        from omnicache_cluster._flight import _cache_faults, record_fault
        from omnicache_cluster._flight_many import get_or_compute_many

        keys = list(keys)
        ttl, stags, wait_timeout, lease_ttl = self._flight_args(ttl, tags, wait_timeout, lease_ttl)
        try:
            found = self.get_many(keys, MISS, layer=layer)
        except _cache_faults() as exc:
            record_fault("get", exc)
            found = [MISS] * len(keys)
        missing = [i for i, v in enumerate(found) if v is MISS]
        if missing:
            values = get_or_compute_many(
                self, [keys[i] for i in missing], fn_many, ttl=ttl, tags=stags, layer=layer,
                wait_timeout=wait_timeout, lease_ttl=lease_ttl,
            )  # fmt: skip
            for i, value in zip(missing, values, strict=True):
                found[i] = value
        return found

    def _flight_args(
        self, ttl: float | None, tags: Iterable[str] | None, wait_timeout: float, lease_ttl: float
    ) -> tuple[float | None, tuple[str, ...], float, float]:
        for name, value in (("wait_timeout", wait_timeout), ("lease_ttl", lease_ttl)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        return check_ttl(ttl), self._scope.tags(tags), float(wait_timeout), float(lease_ttl)

    def get_many(
        self, keys: Iterable[Any], default: Any = MISS, *, layer: str = DEFAULT_LAYER
    ) -> list[Any]:
        """Return the values of ``keys`` in order, ``default`` for each miss."""
        _no_running_loop("get_many")
        skeys = [self.key(k, layer) for k in keys]
        if not skeys:
            return []
        batch = self._do("get_many", skeys)
        return [self._decode(v, default) for v in batch.results]

    def set(
        self,
        key: Any,
        value: Any,
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Store ``value`` under ``key`` (acknowledged when the shard has it).

        Args:
            key: the key.
            value: any value the serializer encodes (``None`` and falsy values too).
            ttl: seconds to live; ``None`` keeps it until evicted.
            tags: tags for `invalidate`.
            layer: the key's layer.

        Raises:
            TypeError: the value or key cannot be encoded (names the type).
            ValueTooLarge: the encoded value is over ``max_value_bytes``.
            ValueError: a bad ttl or tag.
        """
        _no_running_loop("set")
        _, (item,) = self._set_items([(key, value)], ttl, tags, layer)
        seq = self._raw_set(*item)
        self._near_written(layer, [item], [seq])

    def set_many(
        self,
        items: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Store several values: one call per shard. Every value is validated first."""
        _no_running_loop("set_many")
        keys, setitems = self._set_items(self._pairs(items), ttl, tags, layer)
        if keys:
            batch = self._do("set_many", keys, setitems)
            self._set_errors(batch)
            self._near_written(layer, setitems, batch.results)

    def delete(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Remove ``key``; return whether it was present."""
        _no_running_loop("delete")
        return self.delete_many([key], layer=layer) == 1

    def delete_many(self, keys: Iterable[Any], *, layer: str = DEFAULT_LAYER) -> int:
        """Remove ``keys``; return how many were present."""
        _no_running_loop("delete_many")
        skeys = [self.key(k, layer) for k in keys]
        self._near_deleted(skeys)
        return sum(self._do("delete_many", skeys).results) if skeys else 0

    def exists(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Return whether ``key`` is present, without changing its recency."""
        _no_running_loop("exists")
        return bool(self._do("exists_many", [self.key(key, layer)]).results[0])

    def invalidate(self, tag: str) -> int:
        """Remove every entry of this tenant tagged ``tag``; return how many."""
        _no_running_loop("invalidate")
        scoped = list(self._scope.tags([tag]))
        removed = sum(self._state.broadcast("invalidate_tags", scoped, self._options))
        self._near_changed()
        return removed

    def clear(self, *, all_tenants: bool = False) -> int:
        """Remove this tenant's entries in this key namespace; return how many.

        Args:
            all_tenants: remove every entry of the cluster (admin clients only).

        Raises:
            PermissionError: ``all_tenants`` on a tenant-scoped client.
        """
        _no_running_loop("clear")
        prefix = self._clear_prefix(all_tenants)
        removed = sum(self._state.broadcast("clear", prefix, self._options))
        self._near_changed()
        return removed

    def set_tenant_quota(self, tenant: str, quota: TenantQuota | None) -> None:
        """Set (``None``: remove) ``tenant``'s quota, cluster-wide, effective at once.

        Raises:
            PermissionError: called on a tenant-scoped client.
        """
        _no_running_loop("set_tenant_quota")
        self._require_admin("set_tenant_quota")
        validate_part("tenant", tenant)
        if quota is not None and not isinstance(quota, TenantQuota):
            raise TypeError(f"quota must be a TenantQuota or None, got {quota!r}")
        self._state.coordinator_call("set_tenant_quota", tenant, quota, opts=self._options)

    def tenant_quota(self, tenant: str | None = None) -> TenantQuota | None:
        """Return the quota of ``tenant`` (this client's tenant by default)."""
        _no_running_loop("tenant_quota")
        name = self._tenant if tenant is None else tenant
        if name != self._tenant:
            self._require_admin("tenant_quota of another tenant")
        quotas = self._state.coordinator_call("tenant_quotas", opts=self._options)
        return quotas.get(name)  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        """Return cluster stats (admin) or this tenant's stats (tenant-scoped client).

        Tenant stats: entries, bytes, hits, misses, sets and evictions from the shards,
        plus computes, throttled and lease waits from the coordinator.
        """
        _no_running_loop("stats")
        import ray

        coord = self._state.coordinator_handle()
        usage_ref = coord.tenant_usage.remote(None if self._admin else self._tenant)
        per_shard = self._state.broadcast("stats", self._stats_arg(), self._options)
        try:
            usage = ray.get(usage_ref, timeout=self._options.call_timeout_s)
        except Exception as exc:  # stats without the coordinator's part are still useful
            _log.warning("stats: coordinator did not answer: %s", exc)
            usage = {}
        return self._merge_stats(per_shard, usage)

    # -- async API --------------------------------------------------------------------

    async def aget(self, key: Any, default: Any = MISS, *, layer: str = DEFAULT_LAYER) -> Any:
        """Async `get`."""
        skey = self.key(key, layer)
        if self._options.near_cache is not None:
            near = near_for(self, layer)
            if near is not None:
                entry = near.lookup(skey)
                if entry is not None:
                    return self._near_value(entry, default)
                return self._decode(await anear_fetch(self, near, skey), default)
        return self._decode(await self._araw_get(skey), default)

    async def _araw_get(self, skey: str) -> bytes | None:
        """Async `_raw_get`: concurrent calls of one event loop go out as batches."""
        if self._options.batching:
            fut = async_batcher(self._state).submit("get_many", skey, None, self._options)
            return await fut  # type: ignore[no-any-return]
        return await self._adirect_get(skey)

    async def _adirect_get(self, skey: str) -> bytes | None:
        """Async `_direct_get`."""
        ring = await self._state.acurrent_ring(self._options)
        name = ring.members[ring.owner_index(skey)]
        handle = self._state.handles.get(name)
        if handle is not None:
            from ray.exceptions import RayActorError

            timeout = self._options.call_timeout_s
            endpoint = await self._state.aendpoint_of(name, handle, self._options)
            if endpoint is not None:
                try:
                    reply = await endpoint.acall("get", skey, timeout)
                except (wire.WireError, TimeoutError) as exc:  # Ray calls from now on
                    self._state.wire_failed(name, exc)
                else:
                    if type(reply) is not int:
                        return reply  # type: ignore[no-any-return]
                    return (await self._ado("get_many", [skey])).results[0]  # type: ignore[no-any-return]
            try:
                reply = await asyncio.wait_for(handle.get.remote(skey), timeout)
            except TimeoutError:  # (a dead node's shard): the slow path retries
                reply = 0
            except RayActorError:  # restarting or gone: the slow path retries and reroutes
                self._state.forget(name)
                reply = 0
            if type(reply) is not int:
                return reply  # type: ignore[no-any-return]
        return (await self._ado("get_many", [skey])).results[0]  # type: ignore[no-any-return]

    async def _araw_set(
        self, skey: str, data: bytes, ttl: float | None, tags: tuple[str, ...]
    ) -> int:
        """Async `_raw_set`: concurrent calls of one event loop go out as batches."""
        item = (skey, data, ttl, tags)
        if not self._options.batching:
            batch = await self._ado("set_many", [skey], [item])
            self._set_errors(batch)
            return batch.results[0]  # type: ignore[no-any-return]
        result = await async_batcher(self._state).submit("set_many", skey, item, self._options)
        if isinstance(result, tuple):  # (size, limit): the shard refused it
            raise ValueTooLarge(*result)
        return result  # type: ignore[no-any-return]

    async def aget_or_compute(
        self,
        key: Any,
        fn: Callable[[], T | Awaitable[T]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
        wait_timeout: float = 600.0,
        lease_ttl: float = 10.0,
    ) -> T:
        """Async `get_or_compute`; ``fn`` may return a value or an awaitable."""
        from omnicache_cluster._flight import aget_or_compute

        ttl, stags, wait_timeout, lease_ttl = self._flight_args(ttl, tags, wait_timeout, lease_ttl)
        return await aget_or_compute(
            self,
            key,
            fn,
            ttl=ttl,
            tags=stags,
            layer=layer,
            wait_timeout=wait_timeout,
            lease_ttl=lease_ttl,
        )

    async def aget_or_compute_many(
        self,
        keys: Iterable[Any],
        fn_many: Callable[[list[Any]], Sequence[Any] | Awaitable[Sequence[Any]]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
        wait_timeout: float = 600.0,
        lease_ttl: float = 10.0,
    ) -> list[Any]:
        """Async `get_or_compute_many`; ``fn_many`` may return an awaitable."""
        from omnicache_cluster._flight import _cache_faults, record_fault
        from omnicache_cluster._flight_many import aget_or_compute_many

        keys = list(keys)
        ttl, stags, wait_timeout, lease_ttl = self._flight_args(ttl, tags, wait_timeout, lease_ttl)
        try:
            found = await self.aget_many(keys, MISS, layer=layer)
        except _cache_faults() as exc:
            record_fault("get", exc)
            found = [MISS] * len(keys)
        missing = [i for i, v in enumerate(found) if v is MISS]
        if missing:
            values = await aget_or_compute_many(
                self, [keys[i] for i in missing], fn_many, ttl=ttl, tags=stags, layer=layer,
                wait_timeout=wait_timeout, lease_ttl=lease_ttl,
            )  # fmt: skip
            for i, value in zip(missing, values, strict=True):
                found[i] = value
        return found

    async def aget_many(
        self, keys: Iterable[Any], default: Any = MISS, *, layer: str = DEFAULT_LAYER
    ) -> list[Any]:
        """Async `get_many`."""
        skeys = [self.key(k, layer) for k in keys]
        if not skeys:
            return []
        batch = await self._ado("get_many", skeys)
        return [self._decode(v, default) for v in batch.results]

    async def aset(
        self,
        key: Any,
        value: Any,
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Async `set`."""
        _, (item,) = self._set_items([(key, value)], ttl, tags, layer)
        seq = await self._araw_set(*item)
        self._near_written(layer, [item], [seq])

    async def aset_many(
        self,
        items: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Async `set_many`."""
        keys, setitems = self._set_items(self._pairs(items), ttl, tags, layer)
        if keys:
            batch = await self._ado("set_many", keys, setitems)
            self._set_errors(batch)
            self._near_written(layer, setitems, batch.results)

    async def adelete(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Async `delete`."""
        return await self.adelete_many([key], layer=layer) == 1

    async def adelete_many(self, keys: Iterable[Any], *, layer: str = DEFAULT_LAYER) -> int:
        """Async `delete_many`."""
        skeys = [self.key(k, layer) for k in keys]
        self._near_deleted(skeys)
        return sum((await self._ado("delete_many", skeys)).results) if skeys else 0

    async def aexists(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Async `exists`."""
        batch = await self._ado("exists_many", [self.key(key, layer)])
        return bool(batch.results[0])

    async def ainvalidate(self, tag: str) -> int:
        """Async `invalidate`."""
        scoped = list(self._scope.tags([tag]))
        removed = sum(await self._state.abroadcast("invalidate_tags", scoped, self._options))
        await self._anear_changed()
        return removed

    async def aclear(self, *, all_tenants: bool = False) -> int:
        """Async `clear`."""
        prefix = self._clear_prefix(all_tenants)
        removed = sum(await self._state.abroadcast("clear", prefix, self._options))
        await self._anear_changed()
        return removed

    async def astats(self) -> dict[str, Any]:
        """Async `stats`."""
        coord = self._state.coordinator or await asyncio.to_thread(self._state.coordinator_handle)
        usage_ref = coord.tenant_usage.remote(None if self._admin else self._tenant)
        per_shard = await self._state.abroadcast("stats", self._stats_arg(), self._options)
        try:
            usage = await asyncio.wait_for(usage_ref, self._options.call_timeout_s)
        except Exception as exc:  # stats without the coordinator's part are still useful
            _log.warning("stats: coordinator did not answer: %s", exc)
            usage = {}
        return self._merge_stats(per_shard, usage)

    # -- shared helpers ---------------------------------------------------------------

    def _do(self, method: str, keys: Sequence[str], args: Sequence[Any] | None = None) -> _Batch:
        return self._state.run(_Batch(method, keys, args), self._options)

    async def _ado(
        self, method: str, keys: Sequence[str], args: Sequence[Any] | None = None
    ) -> _Batch:
        return await self._state.arun(_Batch(method, keys, args), self._options)

    def _near_written(self, layer: str, items: list[Any], seqs: list[Any]) -> None:
        near = near_for(self, layer) if self._options.near_cache is not None else None
        if near is not None:
            near_put_many(self, near, items, seqs)
        elif self._state.nears:  # other clients of this process: read-your-writes
            near_drop(self, [item[0] for item in items])

    def _near_deleted(self, skeys: list[str]) -> None:
        if self._state.nears:
            near_drop(self, skeys)

    def _near_changed(self) -> None:
        """After an invalidation or flush: poll the change logs now (read-your-writes)."""
        if self._state.nears:
            near_sync(self)

    async def _anear_changed(self) -> None:
        if self._state.nears:
            await asyncio.to_thread(near_sync, self)

    def _stats_arg(self) -> str | None:
        return None if self._admin else self._tenant

    def _clear_prefix(self, all_tenants: bool) -> str | None:
        if not all_tenants:
            return self._scope.prefix
        self._require_admin("clear(all_tenants=True)")
        return None

    def _merge_stats(
        self, per_shard: Sequence[dict[str, Any]], usage: dict[str, dict[str, int]]
    ) -> dict[str, Any]:
        totals: dict[str, Any] = {}
        for key in ("entries", "bytes", "hits", "misses", "sets"):
            totals[key] = sum(int(s.get(key, 0)) for s in per_shard)
        lookups = totals["hits"] + totals["misses"]
        totals["hit_rate"] = totals["hits"] / lookups if lookups else 0.0
        if self._admin:
            ev: dict[str, int] = {}
            for s in per_shard:
                for reason, n in s["evictions"].items():
                    ev[reason] = ev.get(reason, 0) + n
            totals["evictions"] = ev
            totals["deletes"] = sum(s["deletes"] for s in per_shard)
            totals["epoch"] = max(s["epoch"] for s in per_shard)
            totals["tenants"] = usage
            for key in ("l2_errors", "l2_corrupt", "l2_dirty", "l2_degraded", "l2_dropped"):
                if any(key in s for s in per_shard):
                    totals[key] = sum(int(s.get(key, 0)) for s in per_shard)
        else:
            totals["tenant"] = self._tenant
            totals["evictions"] = sum(int(s.get("evictions", 0)) for s in per_shard)
            mine = usage.get(self._tenant, {})
            for name in ("computes", "throttled", "lease_waits"):
                totals[name] = mine.get(name, 0)
        totals["shards"] = list(per_shard)
        return totals


def _rebuild(
    namespace: str, tenant: str, key_namespace: str, options: ClientOptions, admin: bool
) -> CacheCluster:
    return CacheCluster(
        namespace, tenant=tenant, key_namespace=key_namespace, options=options, _admin=admin
    )
